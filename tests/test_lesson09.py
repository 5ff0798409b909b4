"""The `spawn` workers lesson 09 runs (`fmnist_lab.distributed`): what they return, and that they leave the caller's
model as it was although `spawn` hands the ranks its tensors in shared memory."""

from __future__ import annotations

import copy

import pytest
import torch

from fmnist_lab import distributed
from fmnist_lab.engine import Plan, fit
from fmnist_lab.models import CNNBatch


def _data(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images and labels: a few steps' worth, no dataset needed."""
    generator = torch.Generator().manual_seed(9)
    return torch.rand(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _model() -> CNNBatch:
    torch.manual_seed(9)
    return CNNBatch()


def test_fit_replica_by_step_in_one_process_records_each_step_and_ends_at_fits_weights():
    model, data, plan = _model(), _data(), Plan(epochs=1, channels_last=False)
    before = copy.deepcopy(model.state_dict())
    steps = distributed.fit_replica_by_step(None, model, data, plan)
    trained = fit(copy.deepcopy(model), data, None, plan, seed=0, device="cpu").model.state_dict()
    assert len(steps) == 3 and list(steps[0]) == [name for name, _ in model.named_parameters()]
    assert all(torch.equal(steps[-1][name], trained[name]) for name in steps[-1])
    assert not torch.equal(steps[0]["cnn1.weight"], steps[1]["cnn1.weight"])  # a copy after every step, not one tensor
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())  # the caller's model


def test_in_turn_runs_each_worker_with_the_world_in_order():
    world = distributed.World(1, 2, "gloo")
    jobs = [(distributed.World.shard, (torch.arange(6),)), (lambda w, x: (w.rank, x), ("second",))]
    first, second = distributed.in_turn(world, jobs)
    assert first.tolist() == [1, 3, 5] and second == (1, "second")


@pytest.mark.slow
def test_two_ranks_run_the_lessons_workers_and_leave_the_callers_model_as_it_was():
    model, (images, labels) = _model(), _data(200)
    before = copy.deepcopy(model.state_dict())
    plan = Plan(epochs=1, batch_size=100, channels_last=False)
    jobs = [
        (distributed.forward_replica, (model, images[:100], False)),
        (distributed.forward_replica, (model, images[:100], True)),
        (distributed.fit_replica_by_step, (model, (images, labels), plan)),
        (distributed.fit_replica_by_step, (copy.deepcopy(model).double(), (images.double(), labels), plan)),
        (distributed.timed_fit_replica, (model, (images, labels), plan)),
    ]
    rank0, rank1 = distributed.spawn(distributed.in_turn, 2, jobs)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())  # nothing leaked back
    plain, synced, steps, steps64, timed = rank0
    assert not torch.equal(plain["state"]["conv1_bn.running_mean"], rank1[0]["state"]["conv1_bn.running_mean"])
    assert torch.equal(synced["state"]["conv1_bn.running_mean"], rank1[1]["state"]["conv1_bn.running_mean"])
    single = distributed.fit_replica_by_step(None, copy.deepcopy(model).double(), (images.double(), labels), plan)
    assert len(steps) == len(steps64) == 2 and steps64[-1]["cnn1.weight"].dtype == torch.float64
    assert max((a - b).abs().max().item() for a, b in zip(steps64[-1].values(), single[-1].values())) < 1e-10
    assert timed["train_seconds"] > 0 and all(torch.equal(timed["state"][k], steps[-1][k]) for k in steps[-1])
