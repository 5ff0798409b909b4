"""The original `CNN_batch` notebook's settings and numbers, the baseline every lesson compares with."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class OriginalSettings:
    """The original run: its model, parameter count and input size, and how it was trained (shuffled batches)."""

    model: str = "cnn_batch"
    params: int = 18_494
    epochs: int = 5
    batch_size: int = 100
    lr: float = 0.1
    image_size: int = 16
    optimizer: str = "SGD"


ORIGINAL = OriginalSettings()
"""The original settings, defined once: `train()`, `original_run()`, `recipes.Recipe()` and the CLI read them here."""

ORIGINAL_SETTINGS: dict = asdict(ORIGINAL)
"""`ORIGINAL` as a dict (the lessons index it by name)."""

# Training cost is the *sum* of the 600 batch losses of an epoch; accuracy is on the 10,000 test images.
ORIGINAL_HISTORY: list[dict] = [
    {"epoch": 1, "cost": 297.99, "val_accuracy": 0.8491},
    {"epoch": 2, "cost": 208.92, "val_accuracy": 0.8732},
    {"epoch": 3, "cost": 187.65, "val_accuracy": 0.8817},
    {"epoch": 4, "cost": 175.37, "val_accuracy": 0.8942},
    {"epoch": 5, "cost": 167.15, "val_accuracy": 0.8874},
]

ORIGINAL_TRAIN_SECONDS: float = 127.71
ORIGINAL_TEST_ACCURACY: float = ORIGINAL_HISTORY[-1]["val_accuracy"]
