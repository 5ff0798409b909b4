"""Training with the original's settings (`train`, `original_run`), seeding and checkpoints.

The loop itself is `fmnist_lab.engine.fit`; `train` is its original configuration, `Plan()`.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmnist_lab.engine import EpochRecord, Plan, fit, get_device
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.files import atomic_write_bytes, atomic_write_text, record_ours
from fmnist_lab.models import build_model, count_parameters, model_name
from fmnist_lab.original import ORIGINAL
from fmnist_lab.paths import results_dir


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and PyTorch (CPU and GPU) so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return seed


def train(
    model: nn.Module,
    train_data: tuple[torch.Tensor, torch.Tensor],
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int = ORIGINAL.epochs,
    lr: float = ORIGINAL.lr,
    batch_size: int = ORIGINAL.batch_size,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[EpochRecord]:
    """Train as the original did (`ORIGINAL`: SGD, lr 0.1, batch 100, 5 epochs, shuffled); one `EpochRecord` an epoch.

    `fit` with the original's plan; `optimizer`, if given, replaces the SGD. The model comes back in eval
    mode and in PyTorch's default memory layout, as a loaded checkpoint is.
    """
    plan = Plan(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=(lambda _: optimizer) if optimizer is not None else None
    )
    history = fit(model, train_data, val_data, plan, seed=seed, device=device, progress=progress).history
    model.to(memory_format=torch.contiguous_format)  # hand back the usual layout, as a loaded model has
    return history


def _info_path(weights: Path) -> Path:
    """The JSON file that sits beside a weights file."""
    return weights.with_suffix(".json")


def save_checkpoint(
    model: nn.Module, path: str | Path, config: dict | None = None, history: list[dict] | None = None
) -> Path:
    """Save the state dict (loadable by the original notebook) and a JSON of config and history beside it.

    Both files are written atomically (a temporary file in the same folder, then `os.replace`): an error or
    Ctrl-C leaves the old files as they were, never a half-written one. The folder's manifest records them
    as fmnist-lab's, so a later run may replace them and a user's own files are never taken for ours.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    state = model.state_dict()  # in PyTorch's default layout whatever the model's, so a run saves the same bytes
    torch.save({k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state.items()}, buffer)
    info = {
        "model": model_name(model),
        "image_size": getattr(model, "image_size", 16),
        "params": count_parameters(model),
        **(config or {}),
        "history": history or [],
    }
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(_info_path(path), json.dumps(info, indent=2) + "\n")
    record_ours(path, _info_path(path))
    return path


def _read_info(path: Path, info_file: Path) -> dict:
    """The JSON beside the weights, or one line naming it and how to fix it when it is unreadable."""
    fix = f"delete it (or fix it): {path} alone loads like the original notebook's weights"
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FmnistLabError(f"{info_file}: not UTF-8 text, so not the JSON fmnist-lab writes; {fix}") from None
    except json.JSONDecodeError as exc:
        raise FmnistLabError(f"{info_file}: not valid JSON ({exc.msg}, line {exc.lineno}); {fix}") from None
    except OSError as exc:
        raise FmnistLabError(f"{info_file}: cannot read it ({exc.strerror or exc}); {fix}") from None
    if not isinstance(info, dict):
        raise FmnistLabError(f"{info_file}: expected a JSON object, found a {type(info).__name__}; {fix}")
    model, size = info.get("model", "cnn_batch"), info.get("image_size", 16)
    if not isinstance(model, str) or isinstance(size, bool) or not isinstance(size, int) or size not in (16, 28):
        raise FmnistLabError(
            f'{info_file}: "model" must be a name and "image_size" 16 or 28, found {model!r} and {size!r}; {fix}'
        )
    return info


def _guess_info(state: dict) -> dict:
    """Model name and image size from a state dict alone (weights saved by the original notebook)."""
    name = "cnn_batch" if "bn_fc1.weight" in state else "cnn"
    fc1 = state.get("fc1.weight")
    in_features = fc1.shape[1] if fc1 is not None and fc1.ndim == 2 else 512
    return {"model": name, "image_size": int(round((in_features / 32) ** 0.5)) * 4}


def load_checkpoint(path: str | Path, device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """Load weights saved on any device onto `device` (default: the best available); return model and info."""
    path = Path(path)
    if not path.is_file():
        raise FmnistLabError(f"{path}: no such weights file; train one with `fmnist-lab train --out DIR`")
    device = torch.device(device) if device is not None else get_device()
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise FmnistLabError(f"{path}: not a PyTorch weights file ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FmnistLabError(f"{path}: expected a state dict, found {type(state).__name__}; not model weights")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise FmnistLabError(
                f"{path}: not a state dict of tensors: {key!r} holds {type(value).__name__}, not a tensor"
            )
    info_file = _info_path(path)
    info = _read_info(path, info_file) if info_file.is_file() else _guess_info(state)
    model = build_model(info.get("model", "cnn_batch"), int(info.get("image_size", 16)))
    expected, found = set(model.state_dict()), set(state)
    if expected != found:
        raise FmnistLabError(
            f"{path}: weights of another architecture, not {type(model).__name__}: "
            f"missing {sorted(expected - found)[:4]}, unexpected {sorted(found - expected)[:4]}"
        )
    for key, tensor in model.state_dict().items():
        if state[key].shape != tensor.shape:
            raise FmnistLabError(
                f"{path}: weights of another architecture: {key} is {tuple(state[key].shape)}, "
                f"{type(model).__name__} at {model.image_size}×{model.image_size} needs {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval(), info


ORIGINAL_RUN: dict = {key: getattr(ORIGINAL, key) for key in ("model", "image_size", "epochs", "lr", "batch_size")}
"""The settings a reusable `original_run` checkpoint must record (read from `ORIGINAL`)."""


def original_run(
    seed: int = 0, checkpoint: str | Path | None = None, progress: bool = False
) -> tuple[nn.Module, list[EpochRecord]]:
    """The original run (`ORIGINAL`: CNNBatch, 16×16, 5 epochs, SGD lr 0.1, batch 100): trained once, then reused.

    The checkpoint (default `lessons/seed<N>/model_weights.pth` in `fmnist_lab.paths.results_dir()`) is
    loaded when its JSON records the same settings; training is deterministic, so a reused
    checkpoint holds exactly the weights a fresh run would give on the same machine.
    """
    from fmnist_lab import data

    path = Path(checkpoint) if checkpoint else (results_dir() / "lessons" / f"seed{seed}" / "model_weights.pth")
    wanted = {**ORIGINAL_RUN, "seed": seed}
    info_file = _info_path(path)
    if path.is_file() and info_file.is_file():
        info = _read_info(path, info_file)  # a broken JSON is one line naming it, not a traceback
        if all(info.get(key) == value for key, value in wanted.items()):
            model, info = load_checkpoint(path)
            return model, info["history"]
    seed_everything(seed)
    model = build_model(ORIGINAL.model, ORIGINAL.image_size)
    history = train(
        model,
        data.load("train", ORIGINAL.image_size),
        data.load("test", ORIGINAL.image_size),
        seed=seed,
        progress=progress,
    )
    save_checkpoint(model, path, {k: wanted[k] for k in ("epochs", "lr", "batch_size", "seed")}, history)
    return model.eval(), history
