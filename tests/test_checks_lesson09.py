"""Lesson 09's exercise checks: the reference and other correct answers pass, plausible mistakes fail by name."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_check_fails
from torch import nn
from torch.utils.data import DistributedSampler

from fmnist_lab import distributed
from fmnist_lab.checks import run_check
from fmnist_lab.distributed import CPUSyncBatchNorm

# --- reference answers (the solution notebook's) ---------------------------------------------------


def shard(batch, rank, world_size):
    return batch[rank::world_size]


def average_gradients(grads_per_rank):
    world_size = len(grads_per_rank)
    return [sum(grads) / world_size for grads in zip(*grads_per_rank)]


def combine_batch_stats(counts, means, variances):
    weights = counts.to(means.dtype)[:, None]
    total = weights.sum()
    mean = (weights * means).sum(0) / total
    var = (weights * (variances + (means - mean) ** 2)).sum(0) / total
    return mean, var, var * total / (total - 1)


def convert_batchnorm(module):
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        synced = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        synced.load_state_dict(module.state_dict())
        return synced.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


@pytest.mark.parametrize(
    ("exercise_id", "answer", "fragment"),
    [
        ("9.1", shard, "split as DistributedSampler splits them"),
        ("9.2", average_gradients, "the mean over the ranks"),
        ("9.3", combine_batch_stats, "of the whole batch within 1e-05"),
        ("9.4", convert_batchnorm, "every batch-norm layer is a CPUSyncBatchNorm"),
    ],
)
def test_the_reference_passes(exercise_id, answer, fragment):
    result = run_check(exercise_id, answer)
    assert result.status == "passed", result.message
    assert fragment in result.message


# --- correct answers written differently ------------------------------------------------------------


def shard_by_reshape(batch, rank, world_size):
    return batch.reshape(-1, world_size, *batch.shape[1:])[:, rank]


def shard_with_the_sampler(batch, rank, world_size):
    sampler = DistributedSampler(range(len(batch)), num_replicas=world_size, rank=rank, shuffle=False)
    return batch[list(sampler)]


def shard_by_index(batch, rank, world_size):
    return batch.index_select(0, torch.arange(rank, len(batch), world_size, device=batch.device)).clone()


def average_by_stacking(grads_per_rank):
    return [torch.stack(per_rank).mean(dim=0) for per_rank in zip(*grads_per_rank)]


def average_with_accumulators(grads_per_rank):
    totals = [torch.zeros_like(g) for g in grads_per_rank[0]]
    for rank in grads_per_rank:
        for total, g in zip(totals, rank):
            total += g
    return tuple(total / len(grads_per_rank) for total in totals)


def combine_by_second_moment(counts, means, variances):
    m = int(counts.sum())
    share = counts.to(means.dtype).unsqueeze(1) / m
    mean = (share * means).sum(dim=0)
    var = (share * (variances + means**2)).sum(dim=0) - mean**2
    return mean, var, var * (m / (m - 1))


def combine_pairwise(counts, means, variances):
    """Chan et al.'s pairwise update, one device after the other (Python numbers for the counts)."""
    n, mean, m2 = 0, torch.zeros_like(means[0]), torch.zeros_like(means[0])
    for count, device_mean, device_var in zip(counts.tolist(), means, variances):
        delta = device_mean - mean
        total = n + count
        mean = mean + delta * count / total
        m2 = m2 + device_var * count + delta**2 * n * count / total
        n = total
    return mean, m2 / n, m2 / (n - 1)


def convert_sharing_parameters(module):
    """As `nn.SyncBatchNorm.convert_sync_batchnorm` does: the new layer shares the old one's tensors."""
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        converted = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, convert_sharing_parameters(child))
    return converted


def convert_a_copy(model):
    """A new model: the original is left as it was, and each batch-norm layer is swapped through its parent."""
    model = copy.deepcopy(model)
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        return convert_batchnorm(model)
    for name, layer in list(model.named_modules()):
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            new = CPUSyncBatchNorm(
                layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats
            )
            new.load_state_dict(layer.state_dict())
            new.train(layer.training)
            setattr(parent, child, new)
    return model


@pytest.mark.parametrize(
    ("exercise_id", "answer"),
    [
        ("9.1", shard_by_reshape),
        ("9.1", shard_with_the_sampler),
        ("9.1", shard_by_index),
        ("9.2", average_by_stacking),
        ("9.2", average_with_accumulators),
        ("9.3", combine_by_second_moment),
        ("9.3", combine_pairwise),
        ("9.4", convert_sharing_parameters),
        ("9.4", convert_a_copy),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_a_correct_answer_written_differently_passes(exercise_id, answer):
    result = run_check(exercise_id, answer)
    assert result.status == "passed", result.message


# --- 9.1 shard: plausible mistakes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (lambda batch, rank, world_size: batch.chunk(world_size)[rank], "a contiguous block"),
        (lambda batch, rank, world_size: batch[rank * world_size : (rank + 1) * world_size], "to hold items [1, 3, 5"),
        (lambda batch, rank, world_size: batch[::world_size], "you returned rank 0's items for rank 1"),
        (lambda batch, rank, world_size: batch[rank + 1 :: world_size], "ranks count from 0"),
        (lambda batch, rank, world_size: batch[rank::2], "you stepped by 2 with 3 processes"),
        (lambda batch, rank, world_size: batch, "that is the whole global batch"),
        (lambda batch, rank, world_size: torch.arange(rank, len(batch), world_size), "the positions of the items"),
        (lambda batch, rank, world_size: [batch[i] for i in range(rank, len(batch), world_size)], "returned a list"),
        (lambda batch, rank, world_size: batch.reshape(-1)[rank::world_size], "keep the shape of each item"),
        (lambda batch, rank, world_size: batch[rank::world_size].flip(0), "the right items in another order"),
        (lambda batch, rank, world_size: batch[rank::world_size].float(), "dtype torch.int64 like its input"),
        (lambda batch, rank, world_size: distributed.World(rank, world_size, "gloo").shard(batch), "World.shard"),
    ],
)
def test_9_1_a_wrong_shard_is_named(answer, fragment):
    assert_check_fails("9.1", answer, fragment)


def test_9_1_a_shard_that_changes_the_batch_in_place_fails():
    def shard_and_scale(batch, rank, world_size):
        return batch.mul_(1 if batch.dtype == torch.int64 else 0.5)[rank::world_size]

    assert_check_fails("9.1", shard_and_scale, "changed its input batch in place")


# --- 9.2 average_gradients: plausible mistakes -------------------------------------------------------


def _sum_only(grads_per_rank):
    return [sum(grads) for grads in zip(*grads_per_rank)]


def _in_place(grads_per_rank):
    totals = grads_per_rank[0]
    for rank in grads_per_rank[1:]:
        for total, g in zip(totals, rank):
            total += g
    return [t / len(grads_per_rank) for t in totals]


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (_sum_only, "that is the sum over the ranks"),
        (lambda grads: [sum(g) / len(grads[0]) for g in zip(*grads)], "you divided by the number of parameters"),
        (lambda grads: [sum(g) / (len(grads) - 1) for g in zip(*grads)], "not by one less"),
        (lambda grads: list(grads[0]), "rank 0's own gradients"),
        (lambda grads: list(grads[-1]), "the last rank's own gradients"),
        (lambda grads: [[sum(g) / len(grads) for g in zip(*grads)] for _ in grads], "one list per rank"),
        (lambda grads: [g.mean() for g in average_gradients(grads)], "keeping each parameter's shape"),
        (lambda grads: torch.cat([g.reshape(-1) for g in average_gradients(grads)]), "got Tensor"),
        (lambda grads: average_gradients(grads)[::-1], "of parameter 0 of shape (4, 3), got (2, 2, 3)"),
        (lambda grads: average_gradients(grads)[:-1], "to return 3 tensors, one per parameter, got 2"),
        (lambda grads: [g.double() for g in average_gradients(grads)], "of dtype torch.float32 like its input"),
        (_in_place, "changed its input rank 0's gradient 0 in place"),
        (lambda grads: [torch.zeros(g.shape) + g for g in average_gradients(grads)], "on another device"),
    ],
)
def test_9_2_a_wrong_average_is_named(answer, fragment):
    assert_check_fails("9.2", answer, fragment)


# --- 9.3 combine_batch_stats: plausible mistakes -----------------------------------------------------


def _weights(counts, means):
    return counts.to(means.dtype)[:, None]


def _within_only(counts, means, variances):
    w = _weights(counts, means)
    mean, var = (w * means).sum(0) / w.sum(), (w * variances).sum(0) / w.sum()
    return mean, var, var * w.sum() / (w.sum() - 1)


def _unweighted(counts, means, variances):
    mean = means.mean(0)
    var = (variances + (means - mean) ** 2).mean(0)
    total = counts.sum()
    return mean, var, var * total / (total - 1)


def _by_devices(counts, means, variances):
    mean, var, _ = combine_batch_stats(counts, means, variances)
    return (counts.to(means.dtype)[:, None] * means).sum(0) / len(counts), var, _


def _second_moment(counts, means, variances):
    w = _weights(counts, means)
    mean = (w * means).sum(0) / w.sum()
    var = (w * (variances + means**2)).sum(0) / w.sum()  # forgot − mean²
    return mean, var, var * w.sum() / (w.sum() - 1)


def _bessel(fix):
    def combine(counts, means, variances):
        mean, var, _ = combine_batch_stats(counts, means, variances)
        return mean, var, fix(var, counts.sum().to(means.dtype), len(counts))

    return combine


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (_within_only, "leaves out how far their means lie apart"),
        (_unweighted, "weight each device by its count"),
        (_by_devices, "divide by the total count M = Σ n_r, not by the number of devices"),
        (_second_moment, "that is the mean of x², not the variance"),
        (_bessel(lambda var, m, devices: var), "the unbiased variance is the biased one times M / (M − 1)"),
        (_bessel(lambda var, m, devices: var * devices / (devices - 1)), "not the number of devices"),
        (_bessel(lambda var, m, devices: var * (m - 1) / m), "M / (M − 1), not (M − 1) / M"),
        (lambda *stats: tuple(t.sqrt() if i else t for i, t in enumerate(combine_batch_stats(*stats))), "deviations"),
        (lambda *stats: combine_batch_stats(*stats)[::-1], "in that order"),
        (lambda *stats: combine_batch_stats(*stats)[:2], "to return three tensors"),
        (lambda *stats: tuple(t[None] for t in combine_batch_stats(*stats)), "one value per channel"),
        (lambda *stats: tuple(t.double() for t in combine_batch_stats(*stats)), "like its input"),
        (
            lambda *s: tuple(torch.tensor(t.tolist(), dtype=t.dtype) for t in combine_batch_stats(*s)),
            "no gradient flows",
        ),
        (lambda counts, means, variances: combine_batch_stats(counts, means.sub_(0), variances.mul_(2)), "in place"),
        (lambda *stats: tuple(torch.zeros(t.shape) + t for t in combine_batch_stats(*stats)), "on another device"),
    ],
)
def test_9_3_a_wrong_combination_is_named(answer, fragment):
    assert_check_fails("9.3", answer, fragment)


# --- 9.4 convert_batchnorm: plausible mistakes -------------------------------------------------------


def _converter(make, kinds=(nn.modules.batchnorm._BatchNorm,), recurse=True, itself=True):
    """A conversion with one slip: `make(old)` builds the new layer; which kinds, how deep, the module itself."""

    def convert(module, top=True):
        if itself and isinstance(module, kinds):
            return make(module)
        for name, child in module.named_children():
            if isinstance(child, kinds):
                setattr(module, name, make(child))
            elif recurse:
                convert(child, top=False)
        return module

    return convert


def _full(old):
    return convert_batchnorm(old)


def _settings(old):
    return CPUSyncBatchNorm(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)


def _no_weights(old):
    return _settings(old).train(old.training)


def _parameters_only(old):
    new = _settings(old).train(old.training)
    with torch.no_grad():
        for mine, theirs in zip(new.parameters(), old.parameters()):
            mine.copy_(theirs)
    return new


def _without_counter(old):
    new = _settings(old).train(old.training)
    new.load_state_dict({k: v for k, v in old.state_dict().items() if k != "num_batches_tracked"}, strict=False)
    return new


def _default_settings(old):
    new = CPUSyncBatchNorm(old.num_features, affine=old.affine)
    new.load_state_dict(old.state_dict())
    return new.train(old.training)


def _mode_lost(old):
    new = _settings(old)
    new.load_state_dict(old.state_dict())
    return new


def _returns_none(module):
    convert_batchnorm(module)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (lambda module: module, "conv1_bn is still a BatchNorm2d, not a CPUSyncBatchNorm: replace every"),
        (_converter(_full, kinds=(nn.BatchNorm2d,)), "bn_fc1 is still a BatchNorm1d"),
        (_converter(_full, recurse=False), "stem.1 is still a BatchNorm2d, not a CPUSyncBatchNorm: convert at every"),
        (_converter(_full, itself=False), "convert the module itself when it is a batch-norm layer"),
        (_converter(_no_weights), "conv1_bn.weight holds a fresh layer's values, not the old layer's weights"),
        (_converter(_parameters_only), "running_mean holds a fresh layer's values, not the old layer's running"),
        (_converter(_without_counter), "num_batches_tracked holds a fresh layer's values"),
        (_converter(_default_settings), "stem.1 has eps=1e-05, the layer it replaces 0.001"),
        (_converter(_mode_lost), "conv1_bn is in training mode, the layer it replaces was in eval mode"),
        (_returns_none, "returned None"),
        (nn.SyncBatchNorm.convert_sync_batchnorm, "runs on CUDA GPUs only"),
        (distributed.convert_cpu_sync_batchnorm, "distributed.convert_cpu_sync_batchnorm is the answer itself"),
        (_converter(lambda old: _full(old) if isinstance(old, nn.BatchNorm2d) else nn.Identity()), "Identity"),
    ],
)
def test_9_4_a_wrong_conversion_is_named(answer, fragment):
    assert_check_fails("9.4", answer, fragment)
