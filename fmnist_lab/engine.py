"""The course's one training loop, `fit`: lesson 04's original run, lesson 07's recipes, the CLI, the
benchmarks and `original_run` are each a `Plan` handed to it.

`Plan()` is the original notebook's run (`fmnist_lab.original.ORIGINAL`: SGD, lr 0.1, batch 100,
5 epochs, shuffled, cross-entropy). Its optional strategies add what lesson 07 needs: another optimizer
or loss, a learning-rate schedule, augmentation, a weight average (EMA) and flip test-time augmentation.
Every run records the same `EpochRecord` per epoch.

Launched as several processes (`torchrun`, see `fmnist_lab.distributed`), `fit` trains one model with
DistributedDataParallel and SyncBatchNorm: every rank takes its slice of each global batch of
`plan.batch_size`, so the steps are those of one process on the same global batches.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypedDict

import torch
from torch import nn
from torch.nn import functional as F

from fmnist_lab import distributed
from fmnist_lab.data import InMemoryBatches
from fmnist_lab.evaluate import accuracy, check_input_size, fraction_right, predicted_classes
from fmnist_lab.original import ORIGINAL

Split = tuple[torch.Tensor, torch.Tensor]


class EpochRecord(TypedDict):
    """One epoch of every history (`fit`, `train`, `train_recipe`, `metrics.json`), in this key order.

    - `epoch`: 1, 2, …
    - `cost`: the sum of the epoch's batch losses (the original notebook's "cost")
    - `mean_loss`: `cost` ÷ the number of batches, the mean batch loss (lesson 04)
    - `val_accuracy`: after the epoch, the accuracy on the validation data of the model the run hands back
      (its weight average, with flip TTA, when the plan has them); None without validation data
    - `seconds`: the epoch's training time, validation excluded
    """

    epoch: int
    cost: float
    mean_loss: float
    val_accuracy: float | None
    seconds: float


class DetailedEpochRecord(EpochRecord):
    """An `EpochRecord` and, after its keys, what lesson 07 follows (`Plan(details=True)`, every `train_recipe`).

    - `lr`: the learning rate of the epoch's last step
    - `train_accuracy`: the accuracy on the epoch's training batches as they were trained (augmented, training mode)
    - `val_accuracy_raw`: the trained weights' validation accuracy, without weight average or TTA; None without
      validation data
    """

    lr: float
    train_accuracy: float
    val_accuracy_raw: float | None


class WeightAverage(Protocol):
    """What `Plan.average` builds (`recipes.EMA`): a copy of the model that `update` averages the weights into."""

    model: nn.Module

    def update(self, model: nn.Module) -> None:
        """Average the model's current weights in."""


@dataclass(frozen=True)
class Plan:
    """What `fit` does in one run. The defaults are the original's, so `Plan()` is the original run.

    Strategies, each optional: `optimizer` builds the optimizer for the placed model (default: SGD at `lr`);
    `loss(logits, labels)` is the batch loss; `lr_at(step, total_steps)` sets the learning rate before every
    step (a schedule); `augment` transforms every training batch; `average` builds a weight average of the
    placed model (an EMA), updated after every step and validated instead of it; `tta` validates with flip
    test-time augmentation. `channels_last` trains in that layout; `bf16` runs each training step's forward pass in
    bfloat16 (`torch.autocast`; the loss, the weights, the optimizer and validation stay float32); `details` records
    `DetailedEpochRecord`s.
    `sync_batchnorm` (several ranks only): batch norm over the global batch; False keeps each rank's slice.
    """

    epochs: int = ORIGINAL.epochs
    batch_size: int = ORIGINAL.batch_size
    lr: float = ORIGINAL.lr
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    lr_at: Callable[[int, int], float] | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    average: Callable[[nn.Module], WeightAverage] | None = None
    tta: bool = False
    channels_last: bool = True
    bf16: bool = False
    details: bool = False
    sync_batchnorm: bool = True


@dataclass
class Fit:
    """What `fit` returns: the trained model (eval mode), its weight average (or None), the history and times.

    `val_predicted`: the class ids that the last epoch's validation predicted (the model handed back, as
    planned), so a report of the final model needs no second pass over the data; None without validation data.
    """

    model: nn.Module
    average: nn.Module | None
    history: list[EpochRecord]
    train_seconds: float
    wall_seconds: float
    val_predicted: torch.Tensor | None = None


def get_device() -> torch.device:
    """CUDA if there is a GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _progress_bar(iterable: Iterable, description: str):
    """A tqdm bar (a widget in Jupyter, text elsewhere), imported only when a bar is wanted."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm.auto's "IProgress not found" notice without ipywidgets
        from tqdm.auto import tqdm
    return tqdm(iterable, desc=description, leave=False)


def fit(
    model: nn.Module,
    train_data: Split,
    val_data: Split | None = None,
    plan: Plan = Plan(),
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> Fit:
    """Train `model` as `plan` says and validate after every epoch: the loop every run of the course shares.

    `seed` fixes the batch order; seed the initial weights yourself (`seed_everything`) before building the
    model. `progress` shows a bar per epoch; `on_epoch`, if given, gets each record as soon as its epoch ends.
    In a process group of several ranks, every rank must call `fit` with the same arguments.
    """
    wall = time.perf_counter()
    device = torch.device(device) if device is not None else get_device()
    check_input_size(model, train_data[0][:1])
    # channels_last: the convolutions' fastest layout on CPU (about 1.3× per step here) and on GPUs.
    model.to(device=device, memory_format=torch.channels_last if plan.channels_last else torch.contiguous_format)
    world = distributed.current()
    if world is not None:
        distributed.require_divisible(plan.batch_size, world.size)
    # Several ranks: a SyncBatchNorm copy in DDP learns, and its weights come back into `model` (plain BN).
    learner = distributed.data_parallel(copy.deepcopy(model), device, plan.sync_batchnorm) if world else model
    trained = learner.module if world else model
    batches = InMemoryBatches(*train_data, batch_size=plan.batch_size, shuffle=True, seed=seed, device=device)
    optimizer = plan.optimizer(learner) if plan.optimizer else torch.optim.SGD(learner.parameters(), lr=plan.lr)
    average = plan.average(trained) if plan.average else None
    history, predicted = [], None
    for epoch in range(1, plan.epochs + 1):
        start = time.perf_counter()
        title = f"epoch {epoch}/{plan.epochs}" if progress else None
        step = (epoch - 1) * len(batches)
        cost, correct = _train_epoch(learner, batches, optimizer, plan, average, step, title, world)
        record = {
            "epoch": epoch,
            "cost": cost,
            "mean_loss": cost / len(batches),
            "val_accuracy": None,
            "seconds": time.perf_counter() - start,
        }
        if plan.details:
            record.update(
                lr=optimizer.param_groups[0]["lr"], train_accuracy=correct / len(batches.labels), val_accuracy_raw=None
            )
        if val_data is not None:
            scores, predicted = _validate(trained, average, val_data, plan)
            record.update(scores)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    if world is not None:
        model.load_state_dict(trained.state_dict())
    model.eval()
    return Fit(
        model,
        average.model if average else None,
        history,
        sum(r["seconds"] for r in history),
        time.perf_counter() - wall,
        predicted,
    )


def _train_epoch(
    model: nn.Module,
    batches: InMemoryBatches,
    optimizer: torch.optim.Optimizer,
    plan: Plan,
    average: WeightAverage | None,
    first_step: int,
    title: str | None,
    world: distributed.World | None = None,
) -> tuple[float, int]:
    """One pass over the batches, with the plan's strategies around the step; the summed loss and the count right.

    With several ranks, each trains on its slice of every (augmented) global batch, and the loss and the count
    are those of the global batches.
    """
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format
    total_steps = plan.epochs * len(batches)
    cost = torch.zeros((), device=batches.labels.device)
    correct = torch.zeros((), dtype=torch.long, device=batches.labels.device)
    bar = _progress_bar(batches, title) if title else batches
    # Built only for bf16: torch.autocast raises on a device without autocast support, even when disabled.
    precision = partial(torch.autocast, batches.labels.device.type, torch.bfloat16) if plan.bf16 else nullcontext
    model.train()
    for step, (x, y) in enumerate(bar, first_step):
        if plan.lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = plan.lr_at(step, total_steps)
        if plan.augment is not None:
            x = plan.augment(x)
        if world is not None:
            x, y = world.shard(x), world.shard(y)
        with precision():
            logits = model(x.contiguous(memory_format=layout))
        loss = plan.loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update(model.module if world else model)
        cost += loss.detach()
        if plan.details:
            correct += (logits.detach().argmax(1) == y).sum()
        if title and (step - first_step + 1) % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    if world is not None:  # each rank's loss is its slice's mean: the global batch's is their mean
        return world.mean(cost.item()), round(world.mean(correct.item()) * world.size)
    return cost.item(), int(correct.item())


def _validate(
    model: nn.Module, average: WeightAverage | None, val_data: Split, plan: Plan
) -> tuple[dict, torch.Tensor]:
    """The record's validation accuracies (the model handed back, average and TTA as planned; the raw weights),
    and the classes that the model handed back predicted."""
    final = average.model if average is not None else model
    predicted = predicted_classes(final, val_data[0], tta=plan.tta)
    scores = {"val_accuracy": fraction_right(predicted, val_data[1])}
    if plan.details:
        scores["val_accuracy_raw"] = accuracy(model, *val_data)
    return scores, predicted
