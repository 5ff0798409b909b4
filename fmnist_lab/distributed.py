"""Training one model on several processes (DistributedDataParallel), as `torchrun` launches them.

Data parallelism: every process (a *rank*) holds a copy of the model and the whole dataset, draws the same
shuffled order (same seed), and trains on its slice of each global batch: rank r of w takes items r, r + w,
r + 2w, … of the batch, which is exactly what `torch.utils.data.DistributedSampler` hands each rank. DDP
averages the gradients over the ranks after `backward`, so every copy takes the same step. Batch norm is
the catch (lesson 03): plain BN normalises with the statistics of its own slice, so the result depends on
the number of processes; `nn.SyncBatchNorm` computes them over the whole global batch instead.

The backend is picked from the device: NCCL for CUDA GPUs, gloo for the CPU. PyTorch's `nn.SyncBatchNorm`
runs on GPUs only, so on the CPU `CPUSyncBatchNorm` does the same sums with gloo.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fmnist_lab.errors import FmnistLabError

TIMEOUT_SECONDS = 120
"""How long a rank waits for the others in one collective before it gives up (a crashed rank, a hang)."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: its rank, how many there are, and the backend between them."""

    rank: int
    size: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 prints and writes; the others only train."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch: items rank, rank + size, … (DistributedSampler's split)."""
        return batch[self.rank :: self.size]

    def mean(self, value: float) -> float:
        """The mean of `value` over all ranks (every rank must call it)."""
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.size


def launched_world_size() -> int:
    """How many ranks torchrun (or another launcher) started: its WORLD_SIZE, 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as the launcher set it (RANK), 0 without a launcher."""
    return int(os.environ.get("RANK", "0"))


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) started this process as one rank of several."""
    return launched_world_size() > 1


def backend_for(device: torch.device) -> str:
    """NCCL between CUDA GPUs, gloo otherwise (the CPU, or a CUDA build without NCCL)."""
    if device.type == "cuda" and torch.distributed.is_nccl_available():
        return "nccl"
    return "gloo"


def device_for_rank(device: torch.device) -> torch.device:
    """On CUDA, one GPU per local rank; on the CPU, the CPU."""
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return device


def require_divisible(batch_size: int, world_size: int) -> None:
    """Refuse a global batch that does not split evenly over the ranks (their slices would differ in size)."""
    if batch_size % world_size:
        raise FmnistLabError(
            f"--batch-size {batch_size} does not split over {world_size} processes: use a batch size that is a "
            f"multiple of {world_size}, or a number of processes (--nproc-per-node) that divides {batch_size}"
        )


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the ranks torchrun started (its RANK/WORLD_SIZE/MASTER_* variables), and leave cleanly at the end."""
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        torch.distributed.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS),
            device_id=device if backend == "nccl" else None,
        )
    except (RuntimeError, ValueError) as exc:
        raise FmnistLabError(
            f"could not join the other processes ({backend}: {str(exc).splitlines()[0]}); launch with torchrun, "
            "e.g. `torchrun --nproc-per-node 2 -m fmnist_lab train`"
        ) from None
    try:
        yield World(torch.distributed.get_rank(), torch.distributed.get_world_size(), backend)
    finally:
        torch.distributed.destroy_process_group()


def current() -> World | None:
    """The running process group as a `World`, or None in a single process."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    size = torch.distributed.get_world_size()
    return World(torch.distributed.get_rank(), size, torch.distributed.get_backend()) if size > 1 else None


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over all ranks; its gradient is the sum of the ranks' gradients (what the sum needs)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        torch.distributed.all_reduce(total)
        return total


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over every rank, differentiably."""
    return _SumOverRanks.apply(tensor)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch on the CPU (gloo), where `nn.SyncBatchNorm` refuses to run.

    In training mode, the mean and the biased variance are sums over every rank's slice (two passes, through
    the differentiable `sum_over_ranks`, so gradients flow across ranks as in SyncBatchNorm);
    the running statistics are updated with the unbiased variance, as `nn.BatchNorm` does. In eval mode it is
    plain batch norm with the running statistics. Its state dict is a BatchNorm's.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = sum_over_ranks(torch.tensor(float(x.numel() // x.size(1)), dtype=x.dtype))
        mean = sum_over_ranks(x.sum(dims)) / count
        centred = x - mean.reshape(shape)
        var = sum_over_ranks((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape) if self.affine else y


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm layer replaced by a `CPUSyncBatchNorm` holding the same weights and statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        like = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
        synced = CPUSyncBatchNorm(  # on the layer's own device and in its dtype (float64 runs stay float64)
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=None if like is None else like.device,
            dtype=None if like is None else like.dtype,
        )
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        setattr(module, name, convert_cpu_sync_batchnorm(child))
    return module


def data_parallel(model: nn.Module, device: torch.device, sync_batchnorm: bool = True) -> nn.Module:
    """`model` in DDP (gradients averaged), with batch norm over the global batch unless `sync_batchnorm=False`."""
    ids = [device.index] if device.type == "cuda" else None
    if sync_batchnorm:
        cuda = device.type == "cuda"
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if cuda else convert_cpu_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def agree(ok: bool) -> bool:
    """Whether every rank is ready to go on: one rank's refusal (bad `--out`, say) stops them all at once."""
    flag = torch.tensor([1 if ok else 0])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


# --- Starting the ranks from Python (a notebook, a test) instead of torchrun ------------------------------


def _free_port() -> int:
    """A TCP port on localhost that nothing listens on now, for the ranks to meet at."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_rank(rank: int, size: int, port: int, worker: Callable, args: tuple, results) -> None:
    """One spawned rank: join the group on localhost (gloo), run `worker(world, *args)`, send back its result."""
    torch.set_num_threads(1)  # the ranks share the cores: one thread each avoids oversubscription
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS),
    )
    try:
        result = io.BytesIO()  # as bytes: tensors shared by file descriptor would die with this process
        torch.save(worker(World(rank, size, "gloo"), *args), result)
        results.put((rank, result.getvalue()))
    finally:
        torch.distributed.destroy_process_group()


def spawn(worker: Callable, size: int, *args: Any) -> list:
    """Run `worker(world, *args)` on `size` new CPU processes (gloo over localhost); each rank's result, by rank.

    `worker` must be importable (defined in a module, not in a notebook cell), because each process starts
    afresh and imports it, as `torch.multiprocessing.spawn` does.
    """
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    ranks = mp.spawn(_run_rank, args=(size, _free_port(), worker, args, results), nprocs=size, join=False)
    found = {}
    while len(found) < size:  # read as they come: a rank blocks on a full pipe until its result is read
        if not results.empty():
            rank, data = results.get()
            found[rank] = data
        elif ranks.join(timeout=0.1):
            break  # every rank has exited; join raised if one failed
    while not ranks.join():
        pass
    return [torch.load(io.BytesIO(found[rank]), weights_only=False) for rank in range(size)]


def fit_replica(world: World, model: nn.Module, train_data, plan, seed: int = 0) -> dict[str, torch.Tensor]:
    """A `spawn` worker: `fit` `model` on this rank (its slice of every global batch); the trained state dict."""
    from fmnist_lab.engine import fit

    return fit(copy.deepcopy(model), train_data, None, plan, seed=seed, device="cpu").model.state_dict()


# --- Workers for lesson 09: each runs on every spawned rank and returns what the lesson compares ---------
# Each copies the model first: `spawn` hands the ranks the caller's tensors in shared memory, so a change in place
# (an optimizer step, batch norm's running statistics) would reach the caller's model and the other rank's.


def gradients_replica(world: World, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """A `spawn` worker: this rank's gradients on its slice, then averaged by hand (all_reduce SUM ÷ size) and by DDP."""
    from torch.nn import functional as F

    x, y = world.shard(images), world.shard(labels)
    by_hand = copy.deepcopy(model)
    F.cross_entropy(by_hand(x), y).backward()
    own = [p.grad.clone() for p in by_hand.parameters()]
    for parameter in by_hand.parameters():
        torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
        parameter.grad /= world.size
    ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(model))
    F.cross_entropy(ddp(x), y).backward()
    return {
        "own": own,
        "by_hand": [p.grad for p in by_hand.parameters()],
        "ddp": [p.grad for p in ddp.module.parameters()],
    }


def forward_replica(world: World, model: nn.Module, images: torch.Tensor, sync_batchnorm: bool = True) -> dict:
    """A `spawn` worker: one training-mode forward on this rank's slice, batch norm over the global batch or the slice.

    It returns the outputs for the slice and the state dict after the forward (its running statistics).
    """
    model = convert_cpu_sync_batchnorm(copy.deepcopy(model)) if sync_batchnorm else copy.deepcopy(model)
    with torch.no_grad():
        output = model.train()(world.shard(images))
    return {"output": output, "state": model.state_dict()}


def timed_fit_replica(world: World, model: nn.Module, train_data, plan, seed: int = 0) -> dict:
    """A `spawn` worker: `fit_replica`'s trained state dict and this rank's training seconds (validation excluded)."""
    from fmnist_lab.engine import fit

    trained = fit(copy.deepcopy(model), train_data, None, plan, seed=seed, device="cpu")
    return {"state": trained.model.state_dict(), "train_seconds": trained.train_seconds}


class _RecordingSGD(torch.optim.SGD):
    """Plain SGD that also keeps a copy of every parameter after each step, to compare runs step by step."""

    def __init__(self, params, lr: float, record: list) -> None:
        super().__init__(params, lr=lr)
        self.record = record

    def step(self, closure=None):
        loss = super().step(closure)
        self.record.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
        return loss


def fit_replica_by_step(world: World | None, model: nn.Module, train_data, plan, seed: int = 0) -> list[dict]:
    """A `spawn` worker (or a plain call with `world=None`: one process): `fit`, and the weights after every step.

    `plan` trains with SGD at `plan.lr` (its `optimizer` is replaced by one that records).
    """
    import dataclasses

    from fmnist_lab.engine import fit

    model, record = copy.deepcopy(model), []
    names = [name for name, _ in model.named_parameters()]
    recording = dataclasses.replace(
        plan, optimizer=lambda learner: _RecordingSGD(learner.parameters(), plan.lr, record)
    )
    fit(model, train_data, None, recording, seed=seed, device="cpu")
    return [dict(zip(names, weights)) for weights in record]


def in_turn(world: World, jobs: list[tuple[Callable, tuple]]) -> list:
    """A `spawn` worker that runs several workers one after the other, `worker(world, *args)` each: one start-up."""
    return [worker(world, *args) for worker, args in jobs]
