"""`fmnist_lab.distributed` and `fmnist-lab train` under torchrun: two CPU processes with gloo on localhost."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from fmnist_lab import distributed
from fmnist_lab.engine import Plan, fit
from fmnist_lab.files import is_ours
from fmnist_lab.models import CNNBatch

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images and labels: enough for a few steps, no dataset needed."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _largest_gap(a: dict, b: dict, keep=lambda key: True) -> float:
    """The largest difference between two state dicts' floating-point entries (those whose key `keep` says)."""
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point() and keep(k))


def _running(key: str) -> bool:
    """Batch norm's running statistics, as opposed to the learned weights."""
    return "running_" in key


def _fit_both_ways(world: distributed.World, model: torch.nn.Module, data, plan: Plan) -> list[dict]:
    """A spawned rank: fit with SyncBatchNorm, then with each rank's own batch norm; both state dicts."""
    return [
        distributed.fit_replica(world, copy.deepcopy(model), data, Plan(**{**plan.__dict__, "sync_batchnorm": sync}))
        for sync in (True, False)
    ]


@pytest.mark.slow
def test_two_ranks_with_sync_batchnorm_take_one_processs_steps_and_plain_bn_does_not():
    torch.manual_seed(0)
    model, data, plan = CNNBatch(), _data(), Plan(epochs=1, batch_size=50)
    single = fit(copy.deepcopy(model), data, None, plan, seed=0, device="cpu").model.state_dict()
    (synced_0, plain_0), (synced_1, plain_1) = distributed.spawn(_fit_both_ways, 2, model, data, plan)
    assert _largest_gap(synced_0, synced_1) == 0  # one model, two identical copies
    assert _largest_gap(plain_0, plain_1, lambda key: not _running(key)) == 0  # DDP keeps the weights in step ...
    assert _largest_gap(plain_0, plain_1, _running) > 0  # ... but each rank's running statistics are its slice's
    assert _largest_gap(synced_0, single) < 1e-4  # 4 steps: the single process's weights, up to rounding
    assert _largest_gap(plain_0, single) > 1e-3  # per-rank statistics: another model
    CNNBatch().load_state_dict(synced_0)  # the weights load into the original architecture


def test_a_rank_takes_every_world_size_th_item_of_the_global_batch():
    batch = torch.arange(10)
    shards = [distributed.World(rank, 2, "gloo").shard(batch) for rank in range(2)]
    assert shards[0].tolist() == [0, 2, 4, 6, 8] and shards[1].tolist() == [1, 3, 5, 7, 9]


def test_the_backend_follows_the_device():
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda")) == (
        "nccl" if torch.distributed.is_nccl_available() else "gloo"
    )


def test_converting_to_cpu_sync_batchnorm_keeps_the_dtype_and_the_statistics():
    torch.manual_seed(0)
    model = CNNBatch().double().train()
    model(torch.rand(8, 1, 16, 16, dtype=torch.float64))  # running statistics that are not the defaults
    before = copy.deepcopy(model.state_dict())
    synced = distributed.convert_cpu_sync_batchnorm(model)
    layers = [m for m in synced.modules() if isinstance(m, distributed.CPUSyncBatchNorm)]
    assert len(layers) == 3 and all(t.dtype == torch.float64 for m in layers for t in (m.weight, m.running_var))
    assert _largest_gap(synced.state_dict(), before) == 0


def test_a_replica_trains_a_copy_and_leaves_the_callers_model_as_it_was():
    torch.manual_seed(0)
    model = CNNBatch()
    before = copy.deepcopy(model.state_dict())
    trained = distributed.fit_replica(distributed.World(0, 1, "gloo"), model, _data(100), Plan(epochs=1))
    assert _largest_gap(model.state_dict(), before) == 0
    assert _largest_gap(trained, before, lambda key: not _running(key)) > 0


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched_by_torchrun() and distributed.current() is None


def _torchrun(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m fmnist_lab ARGS`."""
    return subprocess.run(
        [*TORCHRUN, "-m", "fmnist_lab", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def _started_with(tmp_path, code: str) -> dict:
    """Environment that makes every Python of a torchrun run `code` first (a `sitecustomize` on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(code, encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_train_under_torchrun_trains_one_model_and_only_rank_0_reports_and_writes(tmp_path):
    out = tmp_path / "results"
    result = _torchrun("train", "--epochs", "1", "--batch-size", "2000", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Training CNNBatch") == 1 and "2 processes (gloo, SyncBatchNorm)" in result.stdout
    assert result.stdout.count("Wrote ") == 1
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["world_size"], metrics["backend"]) == (2, "gloo")
    state = torch.load(out / "model_weights.pth", weights_only=True)
    CNNBatch().load_state_dict(state)  # plain BatchNorm keys: the original notebook's model loads them
    assert is_ours(out / "model_weights.pth") and not (out / ".fmnist-lab.lock").exists()


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_ranks_is_one_line(tmp_path):
    # rank 0 starts late: the line must not depend on which rank gets there first
    env = _started_with(tmp_path, "import os, time\nif os.environ.get('RANK') == '0':\n    time.sleep(3)\n")
    out = tmp_path / "results"
    result = _torchrun("train", "--batch-size", "101", "--out", str(out), env=env)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("fmnist-lab train: error:")]
    assert len(errors) == 1 and "--batch-size 101 does not split over 2 processes" in errors[0]  # said once
    # torchrun adds its own report of the failed processes; no traceback comes from the course's code
    assert "fmnist_lab/" not in "".join(line for line in result.stderr.splitlines() if line.strip().startswith("File"))
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_a_rank_that_crashes_stops_the_run_and_leaves_nothing_in_out(tmp_path):
    env = _started_with(
        tmp_path,
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import torch.distributed\n"
        "    torch.distributed.all_reduce = lambda *args, **kwargs: os._exit(3)  # rank 1 dies at its first collective\n",
    )
    out = tmp_path / "results"
    result = _torchrun("train", "--epochs", "1", "--no-progress", "--out", str(out), env=env, timeout=600)
    assert result.returncode != 0
    assert "Training" not in result.stdout
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())  # no lock, no partial file
