"""Training tricks (lesson 07), each usable alone, and `train_recipe`, which runs the package's one loop
(`fmnist_lab.engine.fit`) with the tricks a `Recipe` turns on.

- a validation split carved out of the training set (`train_val_split`), for model selection;
- input normalisation (`Normalized`), computed on the training split only;
- augmentation done on whole batches of tensors (`random_crop_flip`, `random_erasing`), seeded;
- label smoothing (`label_smoothing_loss`), a one-cycle or cosine learning rate (`one_cycle_lr`,
  `cosine_lr`), SGD with Nesterov momentum and weight decay, dropout (`add_dropout`);
- an exponential moving average of the weights (`ema_update`, `EMA`) and flip test-time
  augmentation (`flip_tta_probs`);
- model selection on the validation split among the `Candidate`s of a run (`select_on_validation`).

A `Recipe` names every setting; its defaults are the original notebook's (`fmnist_lab.original.ORIGINAL`:
SGD, lr 0.1, batch 100, 5 epochs, nothing else), so `Recipe(schedule="onecycle")` is "the original plus
one trick".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from fmnist_lab.engine import DetailedEpochRecord, Plan, fit
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.evaluate import accuracy, flip_tta_probs  # noqa: F401 - flip_tta_probs: lesson 07 uses it from here
from fmnist_lab.original import ORIGINAL

Split = tuple[torch.Tensor, torch.Tensor]
SCHEDULES = ("constant", "onecycle", "cosine")
OPTIMIZERS = ("sgd", "adamw")


# --- data: validation split and normalisation -----------------------------------------------------


def train_val_split(
    images: torch.Tensor, labels: torch.Tensor, val_size: int = 5000, seed: int = 0
) -> tuple[Split, Split]:
    """Hold out `val_size` training images (a seeded random choice) to select models without the test set."""
    if not 0 < val_size < len(labels):
        raise FmnistLabError(f"val_size must be between 1 and {len(labels) - 1}, got {val_size}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size].sort().values, order[val_size:].sort().values
    return (images[train], labels[train]), (images[val], labels[val])


def combine(*splits: Split) -> Split:
    """One split made of several: the training and validation splits together, for the final fit."""
    if not splits:
        raise FmnistLabError("combine needs at least one split")
    return torch.cat([images for images, _ in splits]), torch.cat([labels for _, labels in splits])


def channel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of all pixels (the images have one channel): what normalisation removes."""
    return images.float().mean().item(), images.float().std().item()


class Normalized(nn.Module):
    """Wrap a model so that it sees (x − mean) / std: same parameters, inputs still in [0, 1]."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        if not std > 0:
            raise FmnistLabError(f"std must be positive, got {std}")
        self.model = model
        self.image_size = getattr(model, "image_size", None)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


# --- augmentation on tensors ---------------------------------------------------------------------


def random_crop_flip(
    images: torch.Tensor, padding: int = 2, generator: torch.Generator | None = None, flip: bool = True
) -> torch.Tensor:
    """Shift each image by up to `padding` pixels (zeros fill in) and mirror half of them: new views of the same clothes."""
    if images.ndim != 4:
        raise FmnistLabError(f"expected a batch (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(c, device=images.device)[None, :, None, None]
        out = padded[batch, channel, rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out


def random_erasing(
    images: torch.Tensor,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Blank a random rectangle (area `scale` of the image, aspect `ratio`) in a fraction `p` of the images."""
    n, _, h, w = images.shape
    area = torch.empty(n).uniform_(*scale, generator=generator) * h * w
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
    erase = torch.rand(n, generator=generator) < p
    ys, xs = torch.arange(h), torch.arange(w)
    inside = ((ys[None, :] >= top[:, None]) & (ys[None, :] < (top + eh)[:, None]))[:, :, None] & (
        (xs[None, :] >= left[:, None]) & (xs[None, :] < (left + ew)[:, None])
    )[:, None, :]
    mask = (inside & erase[:, None, None])[:, None].to(images.device)
    return images.masked_fill(mask, value)


# --- loss, schedules, dropout --------------------------------------------------------------------


def label_smoothing_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 − ε)·one-hot + ε/K: the model is never pushed to infinite confidence."""
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def one_cycle_lr(
    step: int,
    total_steps: int,
    max_lr: float,
    warmup: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """The one-cycle learning rate at `step`: a cosine rise from max_lr/25 to max_lr, then a cosine fall to ~0."""
    start = max_lr / div_factor
    end = start / final_div_factor
    peak = warmup * total_steps
    if step < peak:
        return start + (max_lr - start) * (1 - math.cos(math.pi * step / peak)) / 2
    return end + (max_lr - end) * (1 + math.cos(math.pi * (step - peak) / (total_steps - peak))) / 2


def cosine_lr(step: int, total_steps: int, max_lr: float) -> float:
    """Cosine decay from max_lr at step 0 to 0 at `total_steps`: large steps first, small ones at the end."""
    return max_lr * (1 + math.cos(math.pi * step / total_steps)) / 2


def add_dropout(model: nn.Module, p: float) -> nn.Module:
    """Drop a fraction `p` of the inputs of the model's last Linear layer while training (no new parameters)."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise FmnistLabError(f"{type(model).__name__} has no Linear layer to put dropout before")

    def drop(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (F.dropout(inputs[0], p, training=module.training),)

    linear[-1].register_forward_pre_hook(drop)
    return model


# --- weight averaging and test-time augmentation ------------------------------------------------


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·current, for every float weight and buffer: a smoother copy of the model."""
    current = model.state_dict()
    for name, average in ema_model.state_dict().items():
        if average.dtype.is_floating_point:
            average.mul_(decay).add_(current[name].to(average.dtype), alpha=1 - decay)
        else:
            average.copy_(current[name])


class EMA:
    """An averaged copy of a model, updated after every step; the decay warms up as (1 + t) / (10 + t)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        """Average the model's current weights in."""
        self.updates += 1
        ema_update(self.model, model, min(self.decay, (1 + self.updates) / (10 + self.updates)))


def recipe_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: bool = False) -> float:
    """`evaluate.accuracy`, with flip TTA if `tta` (the name lesson 07 first used)."""
    return accuracy(model, images, labels, tta=tta)


# --- the recipe and its training loop -------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Every setting of a training run; its defaults are the original's (`ORIGINAL`: SGD, lr 0.1, batch 100, 5 epochs)."""

    epochs: int = ORIGINAL.epochs
    batch_size: int = ORIGINAL.batch_size
    optimizer: str = ORIGINAL.optimizer.lower()
    lr: float = ORIGINAL.lr
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.3
    label_smoothing: float = 0.0
    normalize: bool = False
    crop_padding: int = 0
    flip: bool = False
    erasing: float = 0.0
    dropout: float = 0.0
    ema_decay: float = 0.0
    tta: bool = False
    bf16: bool = False

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise FmnistLabError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise FmnistLabError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise FmnistLabError(f"epochs and batch_size must be at least 1, got {self.epochs}, {self.batch_size}")
        if self.nesterov and self.momentum <= 0:
            raise FmnistLabError("Nesterov momentum needs momentum > 0")

    def but(self, **changes) -> "Recipe":
        """A copy with some settings changed."""
        return replace(self, **changes)

    def lr_at(self, step: int, total_steps: int) -> float:
        """The learning rate of optimisation step `step` (0-based) of `total_steps`."""
        if self.schedule == "onecycle":
            return one_cycle_lr(step, total_steps, self.lr, self.warmup)
        if self.schedule == "cosine":
            return cosine_lr(step, total_steps, self.lr)
        return self.lr

    def augments(self) -> bool:
        """Whether training batches are augmented."""
        return self.crop_padding > 0 or self.flip or self.erasing > 0

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch loss: cross-entropy, label-smoothed by `label_smoothing_loss` when the recipe says so."""
        if self.label_smoothing == 0:
            return F.cross_entropy(logits, targets)
        # Not F.cross_entropy(label_smoothing=ε): its gradients differ in the last bits for batches whose size
        # is not a power of two, and lesson 07's stored results were trained with this one.
        return label_smoothing_loss(logits, targets, self.label_smoothing)

    def plan(self, seed: int = 0, channels_last: bool = True) -> Plan:
        """The recipe as the engine's `Plan`: its optimizer, loss, schedule, augmentations (seeded), EMA and TTA."""
        generator = torch.Generator().manual_seed(seed + 1)
        return Plan(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=partial(_optimizer, recipe=self),
            loss=self.loss,
            lr_at=self.lr_at,
            augment=partial(augment, recipe=self, generator=generator) if self.augments() else None,
            average=partial(EMA, decay=self.ema_decay) if self.ema_decay > 0 else None,
            tta=self.tta,
            channels_last=channels_last,
            bf16=self.bf16,
            details=True,
        )

    def to_dict(self) -> dict:
        """The settings as a plain dict (for JSON)."""
        return asdict(self)


@dataclass
class TrainResult:
    """What `train_recipe` returns: the trained model, its EMA copy, the history and the time it took."""

    model: nn.Module
    ema_model: nn.Module | None
    recipe: Recipe
    history: list[DetailedEpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def final(self) -> nn.Module:
        """The model the recipe evaluates: the EMA copy when there is one."""
        return self.ema_model if self.ema_model is not None else self.model

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of the final model, with flip TTA when the recipe says so."""
        return accuracy(self.final, images, labels, tta=self.recipe.tta)


@dataclass(frozen=True)
class Candidate:
    """One way to use a run: its trained weights or their moving average (EMA), with or without flip TTA."""

    weights: Literal["trained", "ema"] = "trained"
    tta: bool = False

    def __post_init__(self):
        if self.weights not in ("trained", "ema"):
            raise FmnistLabError(f"unknown weights {self.weights!r}; use 'trained' or 'ema'")

    @property
    def label(self) -> str:
        """How the lesson names it: "trained weights", "EMA weights + flip TTA", …"""
        return f"{'EMA' if self.weights == 'ema' else 'trained'} weights{' + flip TTA' if self.tta else ''}"

    def __str__(self) -> str:
        return self.label

    def model(self, result: TrainResult) -> nn.Module:
        """This candidate's weights in `result` (e.g. the final fit of the recipe that chose it)."""
        if self.weights == "trained":
            return result.model
        if result.ema_model is None:
            raise FmnistLabError(f"{self.label!r} needs EMA weights, but this run's recipe has ema_decay 0")
        return result.ema_model

    def accuracy(self, result: TrainResult, images: torch.Tensor, labels: torch.Tensor) -> float:
        """This candidate's accuracy in `result`."""
        return accuracy(self.model(result), images, labels, tta=self.tta)


CANDIDATES = (Candidate("trained"), Candidate("trained", tta=True), Candidate("ema"), Candidate("ema", tta=True))
"""Every candidate, simplest first (a tie goes to the earlier one)."""


def select_on_validation(
    result: TrainResult, images: torch.Tensor, labels: torch.Tensor
) -> tuple[Candidate, dict[Candidate, float]]:
    """Pick the best of trained/EMA weights × with/without flip TTA by validation accuracy (ties: the simpler).

    Returns the chosen `Candidate` and every candidate's validation accuracy (EMA ones only if the run has EMA).
    """
    scores = {
        c: c.accuracy(result, images, labels)
        for c in CANDIDATES
        if c.weights == "trained" or result.ema_model is not None
    }
    return max(scores, key=scores.__getitem__), scores  # max keeps the first (simplest) of equal scores


def candidate(result: TrainResult, chosen: Candidate) -> tuple[nn.Module, bool]:
    """The model and TTA flag of `chosen` in `result` (e.g. the final fit)."""
    return chosen.model(result), chosen.tta


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (or AdamW); weight decay only on weights of convolutions and linear layers (not biases or batch norm)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr_at(0, 1))
    return torch.optim.SGD(groups, lr=recipe.lr_at(0, 1), momentum=recipe.momentum, nesterov=recipe.nesterov)


def augment(images: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """A training batch with the recipe's augmentations applied."""
    if recipe.crop_padding > 0 or recipe.flip:
        images = random_crop_flip(images, recipe.crop_padding, generator, flip=recipe.flip)
    if recipe.erasing > 0:
        images = random_erasing(images, recipe.erasing, generator=generator)
    return images


def train_recipe(
    model: nn.Module,
    train_data: Split,
    val_data: Split | None = None,
    recipe: Recipe = Recipe(),
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    channels_last: bool = True,
    on_epoch: Callable[[DetailedEpochRecord], None] | None = None,
) -> TrainResult:
    """Train `model` with every trick the recipe turns on (`fmnist_lab.engine.fit`); validate after each epoch.

    The history holds one `fmnist_lab.engine.DetailedEpochRecord` an epoch; `val_accuracy` is the final
    model's (EMA, with TTA if the recipe says so). `seed` fixes the batch order and the augmentations;
    seed the model's initial weights yourself (`seed_everything`) before building it. `on_epoch`, if
    given, is called with each record as soon as the epoch ends (to print progress).
    """
    if recipe.normalize:
        model = Normalized(model, *channel_stats(train_data[0]))
    if recipe.dropout > 0:
        add_dropout(model, recipe.dropout)
    run = fit(
        model,
        train_data,
        val_data,
        recipe.plan(seed, channels_last),
        seed=seed,
        device=device,
        progress=progress,
        on_epoch=on_epoch,
    )
    return TrainResult(run.model, run.average, recipe, run.history, run.train_seconds, run.wall_seconds)


# --- the lesson's recipes ---------------------------------------------------------------------------

BASELINE = Recipe()
"""The original settings (`ORIGINAL`): SGD lr 0.1, batch 100, 5 epochs, constant rate, no tricks."""

TRICKS: dict[str, dict] = {
    "normalisation": {"normalize": True},
    "Nesterov momentum 0.9 (lr 0.01)": {"momentum": 0.9, "nesterov": True, "lr": 0.01},
    "one-cycle schedule (max lr 0.1)": {"schedule": "onecycle"},
    "cosine schedule (from lr 0.1)": {"schedule": "cosine"},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "weight decay 5e-4": {"weight_decay": 5e-4},
    "crop (padding 1) + flip": {"crop_padding": 1, "flip": True},
    "flip only": {"flip": True},
    "random erasing 0.3": {"erasing": 0.3},
    "dropout 0.2": {"dropout": 0.2},
    "EMA of weights (0.998)": {"ema_decay": 0.998},
    "flip TTA": {"tta": True},
}
"""Each trick alone, as the changes it makes to `BASELINE`."""

SHARED_TRICKS: dict = {"momentum": 0.9, "nesterov": True, "schedule": "onecycle", "normalize": True, "ema_decay": 0.998}
"""What both trained-better recipes share: Nesterov momentum 0.9, the one-cycle schedule, normalised inputs, an EMA."""

CNN_BATCH_RECIPE = Recipe(epochs=5, batch_size=100, lr=0.2, warmup=0.2, **SHARED_TRICKS)
"""The original CNNBatch, 16×16, 5 epochs, trained better: the tricks that helped, chosen on the validation split."""

RESNET_ARCHITECTURE: dict = {"channels": (32, 64, 128), "blocks": (1, 1, 1), "stem_stride": 2}
"""The small ResNet of lesson 07 (arguments of `fmnist_lab.resnet.ResNet`): a stride-2 stem, then stages at
14×14, 7×7 and 4×4 with 32, 64 and 128 channels."""

RESNET_RECIPE = Recipe(epochs=16, batch_size=128, lr=0.1, **SHARED_TRICKS).but(
    weight_decay=5e-4, label_smoothing=0.1, crop_padding=2, flip=True, tta=True
)
"""The ResNet's recipe: every trick, including the augmentations a bigger model trained longer can use."""

CNN_TARGET_ACCURACY, RESNET_TARGET_ACCURACY, RESNET_BUDGET_SECONDS = 0.900, 0.930, 600.0
"""Lesson 07's targets on a 2-core CPU: test accuracy of each final fit, and the ResNet's training time.
`benchmarks/going_further.py` measures them over three seeds; the lesson reports its one run against them."""

SPEED_RUN_RECIPES: dict[float, tuple[Recipe, ...]] = {
    300.0: (RESNET_RECIPE.but(epochs=13), RESNET_RECIPE.but(epochs=16, bf16=True)),
    600.0: (RESNET_RECIPE.but(epochs=26), RESNET_RECIPE.but(epochs=32, bf16=True)),
}
"""The ResNet's speed runs: for each training budget, in seconds, on a 2-core CPU, its recipe for as many epochs as
fit, in float32 and with bfloat16 autocast (faster per epoch on a CPU with bfloat16 instructions, so more epochs fit;
slower on one without). A validation run chooses between them. The epochs come from the time per epoch measured on
the benchmarks' AMD EPYC, with a margin for a shared machine, whose speed changes from hour to hour;
`benchmarks/going_further.py --speed-runs` measures them (benchmarks/results/speed_runs.json)."""

SPEED_RUN_TARGET_ACCURACY = 0.940
"""The speed runs' target: this test accuracy for every seed within the largest budget."""
