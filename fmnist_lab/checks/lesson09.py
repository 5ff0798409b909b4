"""Lesson 09 · More than one device: the checks of sharding, gradient averaging, combined batch-norm statistics
and the conversion to synchronised batch norm.

Every check runs in this process, on any OS, in well under a second: it hands the learner's function what
one rank, or every rank, would hold (a global batch, each rank's gradients, each device's statistics, a
model) and compares the result with the reference computed directly (a slice, a mean over the ranks, the
statistics of the whole batch, the original layers). No process is started. Plausible mistakes get a
message that names them; the global random state is left as it was.

Beyond the values: no argument may change in place (each rank's gradients and the statistics included);
9.1 tries a rank other than 0, a world of one, labels, images and float64; 9.2 and 9.3 keep the dtype,
run on another device (PyTorch's `meta` device stands in for a GPU) and 9.3 lets gradients flow. Decided
(the contested cases):

- dtype: every result keeps its inputs' dtype (float32 and float64 are both tried; labels stay int64);
- 9.1 may return a view or a copy; the global batch always splits evenly (the course refuses a batch
  size that does not divide by the number of processes), so DistributedSampler's padding is not tried;
- 9.2 returns one list, the same on every rank (what each rank holds after all_reduce and the division),
  as new tensors: the inputs stand for each rank's own gradients and are not overwritten;
- 9.3 takes the counts as a tensor of integers (values per channel, N·H·W, on each device), means and
  biased variances of shape (devices, channels); it must stay differentiable (synchronised batch norm
  trains through it), so `.item()` or NumPy on the means fails;
- 9.4 may convert the model in place and return it, or return a new one; the new layers may share the old
  parameters (as `nn.SyncBatchNorm.convert_sync_batchnorm` does) or hold copies. Only float32 models are
  tried (the course trains in float32). `nn.SyncBatchNorm` fails: it runs on GPUs only;
- the package's own answers (`World.shard`, `convert_cpu_sync_batchnorm`) are ruled out where they are the
  exercise. A name bound to them before the check runs is not seen (the limit of `forbid_call`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fmnist_lab import distributed
from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk
from fmnist_lab.distributed import CPUSyncBatchNorm

_DEVICE_ERRORS = ("same device", "expected device")  # not `.item()` or `.tolist()`, which meta cannot answer


def _items(selection: torch.Tensor, batch: torch.Tensor) -> list[int] | None:
    """Which items of `batch` a selection holds, in its order (None when one of them is not an item of the batch)."""
    found = []
    for item in selection:
        matches = [i for i in range(len(batch)) if torch.equal(batch[i], item)]
        if not matches:
            return None
        found.append(matches[0])
    return found


def _shown(items: list[int]) -> str:
    """A list of item numbers, shortened: `[1, 3, 5, …]`."""
    return "[" + ", ".join(map(str, items[:4])) + (", …]" if len(items) > 4 else "]")


def _on_meta(fn: Any, *args: Any, what: str) -> None:
    """Run `fn` on copies of its arguments (tensors, and lists of them) on the `meta` device; results must stay there."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().to("meta")
        if isinstance(value, (list, tuple)):
            return type(value)(move(v) for v in value)
        return value

    advice = "create new tensors on the inputs' device (torch.zeros_like(g), or device=g.device)"
    try:
        result = fn(*(move(a) for a in args))
    except Exception as exc:  # noqa: BLE001 - only a device error is a mistake here
        if any(text in str(exc).lower() for text in _DEVICE_ERRORS):
            raise Mismatch(
                f"{what} fails for tensors on another device ({tk.first_line(exc, 100)}): {advice}"
            ) from None
        return
    for item in result if isinstance(result, (list, tuple)) else (result,):
        if isinstance(item, torch.Tensor) and item.device.type != "meta":
            raise Mismatch(f"{what} returns a tensor on the {item.device.type} for tensors on another device: {advice}")


# --- 9.1 shard ---------------------------------------------------------------------------------------

SHARD_CASES = [  # (shape of the global batch, dtype, rank, world size)
    ((8, 1, 4, 4), torch.float32, 1, 2),
    ((12,), torch.int64, 2, 3),
    ((8, 3), torch.float64, 0, 4),
    ((100, 1, 16, 16), torch.float32, 3, 4),
    ((6, 2), torch.float32, 0, 1),
]


def _global_batch(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A global batch whose items all differ, so that a wrong selection can be named item by item."""
    if dtype == torch.int64:
        return torch.randperm(100, generator=torch.Generator().manual_seed(seed))[: shape[0]]
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _shard_mistakes(batch: torch.Tensor, rank: int, world_size: int) -> list[tuple[str, Any]]:
    """What each usual slip returns for rank `rank` of `world_size`."""
    n = len(batch)
    return [
        (
            f"you gave rank {rank} a contiguous block; DistributedSampler and the course interleave the items: "
            "rank r takes items r, r + world_size, r + 2·world_size, …",
            lambda: batch.chunk(world_size)[rank],
        ),
        (
            f"you returned rank 0's items for rank {rank}: start at item rank (batch[rank::world_size])",
            lambda: batch[::world_size],
        ),
        ("ranks count from 0: rank r starts at item r, not r + 1", lambda: batch[rank + 1 :: world_size]),
        (f"you stepped by 2 with {world_size} processes: step by world_size", lambda: batch[rank::2]),
        (
            f"that is the whole global batch: each of the {world_size} ranks takes only its {n // world_size} items",
            lambda: batch,
        ),
    ]


@exercise("9.1", "shard", "rank r of w takes items r, r + w, r + 2w, … of the global batch: batch[rank::world_size]")
def check_shard(shard: Any) -> str:
    """The learner's slice equals `batch[rank::world_size]` for five batches, ranks and world sizes."""
    tk.expect_plain_function(shard, "a function shard(batch, rank, world_size)")
    first = None
    for seed, (shape, dtype, rank, world_size) in enumerate(SHARD_CASES):
        batch = _global_batch(shape, dtype, seed)
        what = f"shard(a batch of {shape[0]}, rank={rank}, world_size={world_size})"
        first, expected = first or what, batch[rank::world_size]
        with tk.without_package(distributed.World, "shard"), tk.other_input(first, what):
            got = tk.call_unmodified(shard, batch, rank, world_size, names=("batch",))
        if isinstance(got, (list, tuple)):
            raise Mismatch(
                f"{what} returned a {type(got).__name__} of items: return one tensor, a slice of the batch "
                "(batch[rank::world_size]) or the items stacked (torch.stack)"
            )
        if isinstance(got, torch.Tensor) and got.dtype == torch.int64 and dtype != torch.int64:
            if torch.equal(got, torch.arange(rank, shape[0], world_size)):
                raise Mismatch(f"{what} returned the positions of the items, not the items: index the batch with them")
        tk.expect_tensor(got, what)
        if tuple(got.shape) != tuple(expected.shape):
            if got.ndim != batch.ndim:
                raise Mismatch(
                    f"expected {what} of shape {tuple(expected.shape)}, got {tuple(got.shape)}: slice the first "
                    "dimension only and keep the shape of each item"
                )
        tk.expect_dtype_kept(got, batch, what)
        if got.shape == expected.shape and torch.equal(got, expected):
            continue
        if reason := tk.diagnose(got, _shard_mistakes(batch, rank, world_size), close=0.0):
            raise Mismatch(f"{what}: {reason}")
        items, wanted = _items(got, batch), list(range(rank, shape[0], world_size))
        if items is not None and sorted(items) == wanted:
            raise Mismatch(
                f"{what} holds the right items in another order ({_shown(items)}): keep the batch's order, "
                "every rank already shares one shuffled order"
            )
        chosen = f"items {_shown(items)}" if items is not None else "values that are not items of the batch"
        raise Mismatch(f"expected {what} to hold items {_shown(wanted)} of the global batch, got {chosen}")
    return (
        "5 global batches (images, labels, float64; ranks 0 to 3 of 1 to 4 processes) split as "
        "DistributedSampler splits them"
    )


# --- 9.2 average_gradients ---------------------------------------------------------------------------

GRADIENT_CASES = [  # (shapes of the parameters, number of ranks, dtype)
    (((4, 3), (4,), (2, 2, 3)), 5, torch.float32),
    (((5,), (3, 2)), 3, torch.float32),
    (((2, 3), (3,), (1,)), 2, torch.float64),
    (((3, 3), (2,)), 1, torch.float32),
]


def _gradients(shapes: tuple, ranks: int, dtype: torch.dtype, seed: int) -> list[list[torch.Tensor]]:
    """Each rank's gradients of the same parameters: different values per rank, as their slices differ."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes] for _ in range(ranks)]


def _gradient_mistakes(grads: list[list[torch.Tensor]]) -> list[tuple[str, Any]]:
    """What each usual slip returns: the sum, another divisor, one rank's own gradients."""
    ranks, count = len(grads), len(grads[0])
    total = [sum(g[i] for g in grads) for i in range(count)]
    mistakes = [
        (
            "that is the sum over the ranks, which all_reduce(SUM) leaves on every rank: divide it by the world "
            "size, the number of ranks",
            total,
        ),
        (
            "you divided by the number of parameters; divide the sum by the number of ranks, len(grads_per_rank)",
            [t / count for t in total],
        ),
        ("rank 0's own gradients: after the all-reduce every rank holds the average over all ranks", grads[0]),
        ("the last rank's own gradients: every rank holds the average over all ranks", grads[-1]),
    ]
    if ranks > 1:
        mistakes.insert(2, ("divide the sum by the number of ranks, not by one less", [t / (ranks - 1) for t in total]))
    return mistakes


def _same_list(got: list, expected: list, atol: float = 1e-6) -> bool:
    """Lists of tensors equal element by element (same length, shapes and values within `atol`)."""
    return len(got) == len(expected) and all(tk.is_close(a, b, atol=atol) for a, b in zip(got, expected))


def _as_gradient_list(got: Any, what: str, shapes: tuple, ranks: int) -> list:
    """The answer as a list of one tensor per parameter; one list per rank, a tensor or a wrong shape are named."""
    if isinstance(got, torch.Tensor) or not isinstance(got, (list, tuple)):
        raise Mismatch(
            f"expected {what} to return a list with one tensor per parameter ({len(shapes)}), got {type(got).__name__}"
        )
    if len(got) == ranks != len(shapes) and all(isinstance(g, (list, tuple)) for g in got):
        raise Mismatch(
            f"{what} returned one list per rank ({ranks}); return the one list every rank holds after the "
            f"all-reduce: {len(shapes)} tensors, one per parameter"
        )
    if len(got) != len(shapes):
        raise Mismatch(f"expected {what} to return {len(shapes)} tensors, one per parameter, got {len(got)}")
    for index, (value, shape) in enumerate(zip(got, shapes)):
        tk.expect_tensor(
            value,
            f"the average gradient of parameter {index}",
            shape,
            why="average over the ranks element by element, keeping each parameter's shape",
        )
    return list(got)


@exercise(
    "9.2", "average_gradients", "for each parameter i: sum(rank[i] for rank in grads_per_rank) / len(grads_per_rank)"
)
def check_average_gradients(average_gradients: Any) -> str:
    """What every rank holds after all_reduce(SUM) and the division, for 1 to 4 ranks, float32 and float64."""
    tk.expect_plain_function(average_gradients, "a function average_gradients(grads_per_rank)")
    first = None
    for seed, (shapes, ranks, dtype) in enumerate(GRADIENT_CASES):
        grads = _gradients(shapes, ranks, dtype, seed)
        given = [[g.clone() for g in rank] for rank in grads]
        what = f"average_gradients(the gradients of {ranks} rank{'s' if ranks > 1 else ''}, {len(shapes)} parameters)"
        first = first or what
        watched = {f"rank {r}'s gradient {i}": g for r, rank in enumerate(given) for i, g in enumerate(rank)}
        with (
            tk.other_input(first, what),
            tk.watch(
                advice="return new tensors (torch.stack(...).mean(0), or sum(...) / n): each rank's own gradients stay"
                " as they are",
                **watched,
            ),
        ):
            got = average_gradients(given)
        got = _as_gradient_list(got, what, shapes, ranks)
        for index, value in enumerate(got):
            tk.expect_finite(value, f"the average gradient of parameter {index}")
            tk.expect_dtype_kept(value, grads[0][index], f"the average gradient of parameter {index}")
        expected = [sum(rank[i] for rank in grads) / ranks for i in range(len(shapes))]
        if _same_list(got, expected):
            continue
        if reason := tk.diagnose(got, _gradient_mistakes(grads), close=_same_list):
            raise Mismatch(f"{what}: {reason}")
        worst = max(range(len(shapes)), key=lambda i: tk.max_difference(got[i], expected[i]))
        raise Mismatch(
            f"{what}: the average gradient of parameter {worst} differs from the mean over the ranks by up to "
            f"{tk.max_difference(got[worst], expected[worst]):.3g}"
        )
    _on_meta(average_gradients, _gradients(*GRADIENT_CASES[0][:3], seed=0), what="average_gradients")
    return "1 to 5 ranks, float32 and float64: every parameter's gradient is the mean over the ranks"


# --- 9.3 combine_batch_stats -------------------------------------------------------------------------

STATS_CASES = [  # (images on each device, channels, height, width, dtype)
    ((5, 5), 3, 2, 2, torch.float32),
    ((2, 6, 4), 2, 3, 1, torch.float32),
    ((3, 1, 2, 4), 4, 1, 1, torch.float64),
    ((7,), 2, 2, 3, torch.float32),
]
STATS_ATOL = 1e-5
STATS_NAMES = ("the global mean", "the global biased variance", "the unbiased variance")


def _devices(sizes: tuple, channels: int, h: int, w: int, dtype: torch.dtype, seed: int) -> tuple:
    """A global batch split over devices (`sizes` images each) with its per-device statistics and the truth."""
    generator = torch.Generator().manual_seed(seed)
    spread = torch.linspace(0.5, 2.0, channels, dtype=dtype).view(1, -1, 1, 1)
    x = torch.randn(sum(sizes), channels, h, w, generator=generator, dtype=dtype) * spread
    slices = x.split(list(sizes))
    x = x + torch.cat([torch.full_like(s, 1.5 * d) for d, s in enumerate(slices)])  # devices' means differ
    slices, dims = x.split(list(sizes)), (0, 2, 3)
    counts = torch.tensor([s.numel() // channels for s in slices])
    means = torch.stack([s.mean(dims) for s in slices])
    variances = torch.stack([s.var(dims, unbiased=False) for s in slices])
    truth = (x.mean(dims), x.var(dims, unbiased=False), x.var(dims, unbiased=True))
    return counts, means, variances, truth


def _reference_stats(counts: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> tuple:
    """The combination, written once: weighted mean, law of total variance, Bessel's correction on the total count."""
    weights = counts.to(means.dtype)[:, None]
    total = weights.sum()
    mean = (weights * means).sum(0) / total
    var = (weights * (variances + (means - mean) ** 2)).sum(0) / total
    return mean, var, var * total / (total - 1)


def _stats_mistakes(counts: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> list[tuple[str, Any]]:
    """What each usual slip returns, as (mean, var, unbiased var); None where the slip says nothing."""
    mean, var, unbiased = _reference_stats(counts, means, variances)
    weights, devices = counts.to(means.dtype)[:, None], len(counts)
    total = weights.sum()
    within = (weights * variances).sum(0) / total
    mistakes = [
        (
            "return (mean, biased variance, unbiased variance), in that order",
            lambda: [(var, mean, unbiased), (mean, unbiased, var), (unbiased, var, mean)],
        ),
        (
            "the mean of the devices' variances leaves out how far their means lie apart: add "
            "Σ n_r (μ_r − μ)² / M (the law of total variance)",
            (mean, within, within * total / (total - 1)),
        ),
        (
            "divide by the total count M = Σ n_r, not by the number of devices",
            ((weights * means).sum(0) / devices, None, None),
        ),
        (
            "that is the mean of x², not the variance: subtract μ² (σ² = Σ n_r (σ_r² + μ_r²) / M − μ²)",
            (mean, var + mean**2, None),
        ),
        (
            "the unbiased variance is the biased one times M / (M − 1), M = Σ n_r: the running statistics "
            "use it (lesson 3)",
            (mean, var, var),
        ),
        (
            "M / (M − 1), not (M − 1) / M: the unbiased variance is the larger one",
            (mean, var, var * (total - 1) / total),
        ),
        ("you returned standard deviations: return variances", (mean, var.sqrt(), unbiased.sqrt())),
    ]
    if not bool((counts == counts[0]).all()):  # with equal counts the plain average is right
        plain = (
            "weight each device by its count: μ = Σ n_r μ_r / Σ n_r (a plain average of the means is right only "
            "when every device holds as many values)"
        )
        mistakes.insert(2, (plain, (means.mean(0), None, None)))
    if devices > 1:
        wrong_m = "the M in M / (M − 1) is the total count Σ n_r, not the number of devices"
        mistakes.insert(-2, (wrong_m, (mean, var, var * devices / (devices - 1))))
    return mistakes


def _stats_match(got: tuple, variant: Any) -> bool:
    """A variant matches when each of its given parts (None: any) is close; a list of variants matches if any does."""
    if isinstance(variant, list):
        return any(_stats_match(got, v) for v in variant)
    return all(part is None or tk.is_close(value, part, atol=STATS_ATOL) for value, part in zip(got, variant))


@exercise(
    "9.3",
    "combine_batch_stats",
    "M = Σ n_r; μ = Σ n_r μ_r / M; σ² = Σ n_r (σ_r² + (μ_r − μ)²) / M; unbiased = σ² · M / (M − 1)",
)
def check_combine_batch_stats(combine_batch_stats: Any) -> str:
    """The global statistics of four batches split over 1 to 4 devices (equal and unequal shares), and their gradients."""
    tk.expect_plain_function(combine_batch_stats, "a function combine_batch_stats(counts, means, variances)")
    names, first = ("counts", "means", "variances"), None
    for seed, case in enumerate(STATS_CASES):
        counts, means, variances, truth = _devices(*case, seed=seed)
        what = f"combine_batch_stats on {len(counts)} device{'s' if len(counts) > 1 else ''} (counts {counts.tolist()})"
        first = first or what
        with tk.other_input(first, what):
            got = tk.call_unmodified(combine_batch_stats, counts, means, variances, names=names)
        got = tk.as_tuple(got, what, 3, "three tensors (mean, variance, unbiased variance)")
        for value, name, expected in zip(got, STATS_NAMES, truth):
            tk.expect_tensor(value, f"{name} of {what}", tuple(expected.shape), why="one value per channel")
            tk.expect_finite(value, f"{name} of {what}")
            tk.expect_dtype_kept(value, means, f"{name} of {what}")
        if _stats_match(got, truth):
            continue
        if reason := tk.diagnose(got, _stats_mistakes(counts, means, variances), close=_stats_match):
            raise Mismatch(f"{what}: {reason}")
        name, value, expected = max(zip(STATS_NAMES, got, truth), key=lambda t: tk.max_difference(t[1], t[2]))
        raise Mismatch(
            f"{what}: {name} differs from the statistics of the whole batch by up to "
            f"{tk.max_difference(value, expected):.3g} (tolerance {STATS_ATOL:g})"
        )
    counts, means, variances, _ = _devices(*STATS_CASES[1], seed=1)
    tk.expect_gradients(
        lambda m, v: torch.cat([t.reshape(-1) for t in combine_batch_stats(counts, m, v)]),
        lambda m, v: torch.cat([t.reshape(-1) for t in _reference_stats(counts, m, v)]),
        {"means": means, "variances": variances},
        what="combine_batch_stats",
    )
    _on_meta(combine_batch_stats, counts, means, variances, what="combine_batch_stats")
    return (
        "1 to 4 devices with equal and unequal shares: the mean, biased and unbiased variance of the whole batch "
        f"within {STATS_ATOL:g}"
    )


# --- 9.4 convert_batchnorm ---------------------------------------------------------------------------


class _Nested(nn.Module):
    """Batch norm at several depths, with non-default eps, momentum, affine and statistics (9.4)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, eps=1e-3, momentum=0.3), nn.ReLU())
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.ReLU())]
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5, momentum=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _nested() -> nn.Module:
    """A `_Nested` in training mode with seeded weights, and batch-norm statistics far from a fresh layer's."""
    model = tk.seeded(9, _Nested)
    generator = torch.Generator().manual_seed(94)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.running_mean.copy_(0.3 * torch.randn(layer.num_features, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(layer.num_features, generator=generator))
                layer.num_batches_tracked.fill_(7)
                if layer.affine:
                    layer.weight.copy_(1 + 0.3 * torch.randn(layer.num_features, generator=generator))
                    layer.bias.copy_(0.3 * torch.randn(layer.num_features, generator=generator))
    return model.train()


def _bare() -> nn.Module:
    """A bare BatchNorm1d in eval mode with trained-looking statistics: the model is itself a batch-norm layer."""
    layer = nn.BatchNorm1d(5, eps=1e-4)
    with torch.no_grad():
        layer.running_mean.copy_(torch.linspace(-1, 1, 5))
        layer.running_var.copy_(torch.linspace(0.5, 2, 5))
        layer.weight.copy_(torch.linspace(0.8, 1.2, 5))
        layer.num_batches_tracked.fill_(3)
    return layer.eval()


CONVERT_CASES = [  # (description, build, an input for the eval-mode comparison)
    ("a CNNBatch in eval mode", lambda: tk.random_cnn_batch(9), (6, 1, 16, 16)),
    ("a model with batch norm at several depths, in training mode", _nested, (6, 1, 6, 6)),
    ("a bare BatchNorm1d", _bare, (6, 5)),
]
SETTINGS = ("num_features", "eps", "momentum", "affine", "track_running_stats")
CONVERT_ADVICE = (
    "CPUSyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), then "
    "load_state_dict(m.state_dict()) and train(m.training)"
)


def _level(name: str) -> int:
    """How deep a layer sits: 0 for the model itself, 1 for its children, 2 for theirs, …"""
    return name.count(".") + 1 if name else 0


def _depth(name: str) -> str:
    """Where a layer sits, for a message: `the model itself`, `stem.1`."""
    return name or "the model itself"


def _expect_converted(original: nn.Module, converted: nn.Module, case: str) -> None:
    """Every batch-norm layer replaced by a CPUSyncBatchNorm with the same settings, tensors and mode; nothing else."""
    before, after = dict(original.named_modules()), dict(converted.named_modules())
    batch_norms = [n for n, m in before.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name in batch_norms:
        layer, old = after.get(name), before[name]
        if isinstance(layer, nn.SyncBatchNorm):
            raise Mismatch(
                f"in {case}, {_depth(name)} became an nn.SyncBatchNorm, which runs on CUDA GPUs only: build "
                "fmnist_lab.distributed.CPUSyncBatchNorm instead"
            )
        if not isinstance(layer, CPUSyncBatchNorm):
            found = type(layer).__name__ if layer is not None else "missing"
            others = [n for n in batch_norms if isinstance(after.get(n), CPUSyncBatchNorm)]
            if name == "" and layer is not None:
                why = "convert the module itself when it is a batch-norm layer, not only its children"
            elif _level(name) > max(map(_level, others), default=1):
                why = "convert at every depth: recurse into the children of the children"
            elif others and type(old) is not type(before[others[0]]):
                why = "convert every kind of batch norm (nn.modules.batchnorm._BatchNorm covers 1d, 2d and 3d)"
            else:
                why = "replace every batch-norm layer"
            raise Mismatch(f"in {case}, {_depth(name)} is still a {found}, not a CPUSyncBatchNorm: {why}")
        for setting in SETTINGS:
            if getattr(layer, setting) != getattr(old, setting):
                raise Mismatch(
                    f"in {case}, {_depth(name)} has {setting}={getattr(layer, setting)!r}, the layer it replaces "
                    f"{getattr(old, setting)!r}: build it from the old layer's settings ({CONVERT_ADVICE})"
                )
        _expect_copied(old.state_dict(), layer.state_dict(), f"in {case}, {_depth(name)}")
        if layer.training != old.training:
            modes = ("training", "eval") if layer.training else ("eval", "training")
            raise Mismatch(
                f"in {case}, {_depth(name)} is in {modes[0]} mode, the layer it replaces was in {modes[1]} mode: "
                "keep the mode (new.train(old.training))"
            )
    for name, module in before.items():
        if name not in batch_norms and type(after.get(name)) is not type(module):
            found = type(after[name]).__name__ if name in after else "missing"
            raise Mismatch(
                f"in {case}, {_depth(name)} was a {type(module).__name__}, got {found}: convert the batch-norm "
                "layers only and keep every other layer"
            )


def _expect_copied(old: dict, new: dict, where: str) -> None:
    """The new layer holds the old one's weights and buffers, each missing or fresh one named."""
    for key, value in old.items():
        if key not in new:
            raise Mismatch(f"{where} has no {key}: build it with the old layer's affine and track_running_stats")
        if torch.equal(new[key], value):
            continue
        kind = "weights" if key in ("weight", "bias") else "running statistics" if "running" in key else "counter"
        fresh = {"weight": 1, "bias": 0, "running_mean": 0, "running_var": 1, "num_batches_tracked": 0}
        state = "a fresh layer's" if torch.all(new[key] == fresh[key]) else "other"
        copy_them = (
            "copy the weights"
            if kind == "weights"
            else "copy the buffers too: they are not parameters, and load_state_dict(old.state_dict()) copies both"
        )
        raise Mismatch(f"{where}.{key} holds {state} values, not the old layer's {kind}: {copy_them}")


@exercise(
    "9.4",
    "convert_batchnorm",
    "if the module is a _BatchNorm, return a CPUSyncBatchNorm with its settings, state dict and mode; otherwise "
    "setattr(module, name, convert_batchnorm(child)) for every named child, then return module",
)
@tk.own_rng
def check_convert_batchnorm(convert_batchnorm: Any) -> str:
    """Three models: structure, settings, copied weights and statistics, the mode, and eval-mode outputs."""
    tk.expect_plain_function(convert_batchnorm, "a function convert_batchnorm(module)")
    for case, build, shape in CONVERT_CASES:
        original = build()
        with tk.without_package(distributed, "convert_cpu_sync_batchnorm"):
            converted = convert_batchnorm(copy.deepcopy(original))
        if converted is None:
            raise Mismatch(
                f"convert_batchnorm({case}) returned None: return the converted module (after converting the "
                "children in place, `return module`)"
            )
        if not isinstance(converted, nn.Module):
            raise Mismatch(f"expected convert_batchnorm({case}) to return an nn.Module, got {type(converted).__name__}")
        _expect_converted(original, converted, case)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            expected, got = copy.deepcopy(original).eval()(x), copy.deepcopy(converted).eval()(x)
        if not tk.is_close(got, expected, atol=1e-6):
            raise Mismatch(
                f"in {case}, the converted model's eval-mode output differs from the original's by up to "
                f"{tk.max_difference(got, expected):.3g}: keep every other layer as it was"
            )
    return (
        f"{len(CONVERT_CASES)} models (CNNBatch, batch norm at several depths, a bare layer): every batch-norm "
        "layer is a CPUSyncBatchNorm with the same settings, weights, statistics and mode"
    )
