"""Speed target: training steps per second of the original pipeline, fmnist_lab's, and the compute ceiling.

All three train the same `CNNBatch` with SGD at batch 100 for the same number of steps, in one process:
- original: torchvision `FashionMNIST` + `Resize((16, 16))` + `ToTensor()` + `DataLoader(batch_size=100,
  shuffle=True)`, as the original notebook did;
- fmnist_lab: `fmnist_lab.train.train` on tensors from `fmnist_lab.data.load` (the in-memory batcher);
- ceiling: the same steps on one random batch already in memory (nothing but the model's compute).
Each is measured in several interleaved rounds and the best round is kept (the machine is shared).
Targets: fmnist_lab at least 2.5× the original, and within 15% of the ceiling.
Prints the table and writes benchmarks/results/train_speed.json.  Usage: python benchmarks/train_speed.py
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from machine import save
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from fmnist_lab import data
from fmnist_lab.models import CNNBatch
from fmnist_lab.train import seed_everything, train

MIN_SPEEDUP, MIN_OF_CEILING = 2.5, 0.85


def original_pipeline(steps: int) -> float:
    """Seconds for `steps` SGD steps fed by the original DataLoader + PIL Resize pipeline."""
    transform = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    loader = DataLoader(data.torchvision_dataset("train", transform=transform), batch_size=100, shuffle=True)
    model = CNNBatch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        if step == steps:
            break
    return time.perf_counter() - start


def fmnist_lab_pipeline(steps: int, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Seconds for `steps` steps of `fmnist_lab.train.train` (one epoch over steps × 100 images)."""
    subset = (images[: steps * 100], labels[: steps * 100])
    start = time.perf_counter()
    train(CNNBatch(), subset, None, epochs=1, progress=False, device="cpu")
    return time.perf_counter() - start


def ceiling(steps: int) -> float:
    """Seconds for `steps` steps on one random batch already in memory, in the fastest layout."""
    model = CNNBatch().to(memory_format=torch.channels_last)
    x = torch.rand(100, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (100,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best kept (default 3)")
    args = parser.parse_args()
    seed_everything(0)
    images, labels = data.load("train", 16)
    ceiling(20), fmnist_lab_pipeline(20, images, labels)  # warm-up: first-call allocations
    best = {"original": 0.0, "fmnist_lab": 0.0, "ceiling": 0.0}
    for _ in range(args.rounds):
        for name, seconds in (
            ("original", original_pipeline(args.steps)),
            ("fmnist_lab", fmnist_lab_pipeline(args.steps, images, labels)),
            ("ceiling", ceiling(args.steps)),
        ):
            best[name] = max(best[name], args.steps / seconds)
    speedup = best["fmnist_lab"] / best["original"]
    of_ceiling = best["fmnist_lab"] / best["ceiling"]
    print(f"{'pipeline':<12}{'steps/s':>10}{'ms/step':>10}")
    for name, rate in best.items():
        print(f"{name:<12}{rate:>10.1f}{1000 / rate:>10.2f}")
    checks = {
        f"fmnist_lab >= {MIN_SPEEDUP}x original ({speedup:.2f}x)": speedup >= MIN_SPEEDUP,
        f"fmnist_lab within 15% of the ceiling ({of_ceiling:.0%})": of_ceiling >= MIN_OF_CEILING,
    }
    for name, passed in checks.items():
        print(f"[{'OK' if passed else 'FAIL'}] {name}")
    path = save(
        "train_speed",
        {
            "steps": args.steps,
            "rounds": args.rounds,
            "steps_per_second": best,
            "speedup_vs_original": speedup,
            "fraction_of_ceiling": of_ceiling,
            "checks": {"speedup": speedup >= MIN_SPEEDUP, "ceiling": of_ceiling >= MIN_OF_CEILING},
        },
    )
    print(f"wrote {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
