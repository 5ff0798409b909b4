"""Checks of lesson 03 (batch norm): batch norm by hand in train and eval mode, running statistics, CNNBatch.

Every check compares behaviour with PyTorch's own batch norm (`F.batch_norm`, `nn.BatchNorm2d`) or
with `fmnist_lab.models.CNNBatch` on small seeded inputs. When an answer is wrong, the check tries
the usual mistakes (unbiased variance, one statistic for all channels, eps outside the square root,
momentum the wrong way round, batch statistics in eval mode, …) and names the one that matches.
The global random state is left as it was: the checks draw from their own `torch.Generator`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fmnist_lab.checks import Mismatch, exercise, expect_callable, expect_close, expect_tensor

ATOL, ATOL_TEXT = 1e-5, "1e-5"
MODEL_ATOL, MODEL_ATOL_TEXT = 1e-4, "1e-4"
EXPECTED_PARAMETERS = 18_494
STATE_KEYS_HINT = "cnn1, conv1_bn, cnn2, conv2_bn, fc1, bn_fc1"


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def _channel_batch(shape: tuple[int, ...], means: list[float], stds: list[float], seed: int) -> torch.Tensor:
    """A float32 batch (N, C, H, W) whose channels have clearly different means and spreads."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator)
    means_t = torch.tensor(means).view(1, -1, 1, 1)
    stds_t = torch.tensor(stds).view(1, -1, 1, 1)
    return x * stds_t + means_t


def _per_channel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch mean, biased and unbiased variance of each channel, each shaped (1, C, 1, 1)."""
    dims = (0, 2, 3)
    return (x.mean(dim=dims, keepdim=True), x.var(dim=dims, unbiased=False, keepdim=True),
            x.var(dim=dims, unbiased=True, keepdim=True))


def _c(v: torch.Tensor) -> torch.Tensor:
    """A (C,) vector as (1, C, 1, 1)."""
    return v.view(1, -1, 1, 1)


def _close(value: Any, expected: torch.Tensor, atol: float) -> bool:
    """True when `value` is a tensor of the expected shape, equal within `atol` (never raises)."""
    try:
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(expected.shape):
            return False
        return bool((value.detach().double() - expected.detach().double()).abs().max() <= atol)
    except Exception:  # noqa: BLE001 - a weird value is simply "not close"
        return False


def _diagnose(got: Any, candidates: list[tuple[torch.Tensor, str]], atol: float) -> str | None:
    """The explanation of the first known mistake whose result equals `got`, if any."""
    for value, explanation in candidates:
        if _close(got, value, atol):
            return explanation
    return None


def _expect_unchanged(before: torch.Tensor, after: torch.Tensor, name: str) -> None:
    """The learner's function must not modify an input tensor in place."""
    if not torch.equal(before, after):
        raise Mismatch(f"your function changed its input {name} in place; compute new tensors instead")


def _number(value: float) -> str:
    """A number as a reader writes it: 1e-5, 0.5."""
    return f"{value:g}".replace("e-0", "e-")


# ---------------------------------------------------------------------------------------------
# 3.1 batch_norm_forward (train mode)
# ---------------------------------------------------------------------------------------------

def _bn_train_mistakes(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                       eps: float) -> list[tuple[torch.Tensor, str]]:
    """Train-mode outputs of the usual mistakes, each with what it got wrong."""
    mean, var, var_unbiased = _per_channel(x)
    g, b = _c(gamma), _c(beta)
    all_mean, all_var = x.mean(), x.var(unbiased=False)
    image_mean = x.mean(dim=(2, 3), keepdim=True)
    image_var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    batch_mean = x.mean(dim=0, keepdim=True)
    batch_var = x.var(dim=0, unbiased=False, keepdim=True)
    return [
        (g * (x - mean) / torch.sqrt(var_unbiased + eps) + b,
         "you used the unbiased variance (divide by n − 1); batch norm normalises with the biased "
         "variance (divide by n = N·H·W)"),
        (g * (x - all_mean) / torch.sqrt(all_var + eps) + b,
         "you used one mean and variance for the whole batch; batch norm uses one per channel "
         "(average over N, H and W, not over C)"),
        (g * (x - image_mean) / torch.sqrt(image_var + eps) + b,
         "you averaged over H and W of each image separately; batch norm averages each channel over "
         "the whole batch (N, H and W)"),
        (g * (x - batch_mean) / torch.sqrt(batch_var + eps) + b,
         "you averaged over the batch dimension only; batch norm averages each channel over N, H and W"),
        ((x - mean) / torch.sqrt(var + eps),
         "the normalisation is right but gamma and beta are missing: return gamma·x̂ + beta"),
        (g * (x - mean) / (torch.sqrt(var) + eps) + b,
         "eps belongs inside the square root: divide by sqrt(var + eps), not sqrt(var) + eps"),
        (g * (x - mean) / torch.sqrt(var) + b,
         "you left eps out: divide by sqrt(var + eps)"),
        (g * (x - mean) / torch.sqrt(var + 1e-5) + b,
         "your output ignores the eps argument (it matches eps = 1e-5): use eps"),
        (g * (x - mean) / (var + eps) + b,
         "you divided by the variance; divide by the standard deviation sqrt(var + eps)"),
        (gamma.mean() * (x - mean) / torch.sqrt(var + eps) + beta.mean(),
         "gamma and beta must be applied per channel: reshape them to (1, C, 1, 1)"),
    ]


@exercise("3.1", "batch_norm_forward",
          "per channel, the mean and biased variance over N, H and W; eps inside the square root; "
          "gamma and beta reshaped to (1, C, 1, 1)")
def check_batch_norm_forward(batch_norm_forward: Any) -> str:
    """Compare with `F.batch_norm(training=True)` on two seeded batches with two values of eps."""
    expect_callable(batch_norm_forward, "a function batch_norm_forward(x, gamma, beta, eps)")
    cases = [
        # a channel with a tiny spread makes eps matter; W != C so a wrong broadcast cannot pass
        (_channel_batch((4, 3, 2, 2), [1.0, -2.0, 0.0], [2.0, 0.5, 0.01], seed=0),
         torch.tensor([1.5, -0.7, 2.0]), torch.tensor([0.3, -1.2, 0.5]), 1e-5),
        (_channel_batch((6, 2, 3, 3), [0.5, 3.0], [1.0, 0.2], seed=1),
         torch.tensor([0.8, 1.7]), torch.tensor([-0.4, 0.9]), 0.5),
    ]
    for x, gamma, beta, eps in cases:
        what = f"batch_norm_forward(x, gamma, beta, eps={_number(eps)}) on a {tuple(x.shape)} batch"
        x_before = x.clone()
        got = batch_norm_forward(x, gamma.clone(), beta.clone(), eps)
        _expect_unchanged(x_before, x, "x")
        expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
        expect_tensor(got, what, tuple(expected.shape))
        if not _close(got, expected, ATOL):
            reason = _diagnose(got, _bn_train_mistakes(x, gamma, beta, eps), ATOL)
            if reason:
                raise Mismatch(f"{what} differs from nn.BatchNorm2d in training mode: {reason}")
            expect_close(got, expected, what, atol=ATOL)
    return ("outputs (4, 3, 2, 2) and (6, 2, 3, 3) match nn.BatchNorm2d in training mode "
            f"within {ATOL_TEXT} (eps 1e-5 and 0.5)")


# ---------------------------------------------------------------------------------------------
# 3.2 CNNBatch
# ---------------------------------------------------------------------------------------------

def _reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded state dict for CNNBatch with non-trivial batch-norm scales, shifts and running statistics."""
    from fmnist_lab.models import CNNBatch as Reference

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in Reference().state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
            continue
        noise = torch.randn(tensor.shape, generator=generator)
        layer = key.split(".")[0]
        if "bn" in layer and key.endswith("weight"):
            value = 1 + 0.3 * noise
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(tensor.shape, generator=generator)
        elif key.endswith("running_mean"):
            value = 0.3 * noise
        elif key.endswith("bias"):
            value = 0.1 * noise
        else:  # convolution and linear weights: roughly PyTorch's initial scale
            fan_in = tensor[0].numel()
            value = noise / fan_in ** 0.5
        state[key] = value.float()
    return state


def _missing_layers(difference: int) -> str:
    """What a shortfall of trainable parameters most likely means."""
    known = {116: "no batch-norm layers at all; they hold 32 + 64 + 20",
             96: "no BatchNorm2d layers; they hold 32 + 64",
             84: "BatchNorm2d(32) and BatchNorm1d(10) missing",
             52: "BatchNorm2d(16) and BatchNorm1d(10) missing",
             64: "BatchNorm2d(32) missing",
             32: "BatchNorm2d(16) missing",
             20: "BatchNorm1d(10) after fc1 missing"}
    return f" ({difference:,} fewer: {known[difference]})" if difference in known else ""


def _layers(keys: list[str]) -> list[str]:
    """The layers that state-dict keys belong to, in order, each once (`conv1_bn.running_mean` → `conv1_bn`)."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in keys))


def _named_state(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Each state-dict key with its shape."""
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


@exercise("3.2", "CNNBatch",
          "conv → BatchNorm2d → ReLU → max-pool, twice; then fc1 and BatchNorm1d after fc1")
def check_cnn_batch(CNNBatch: Any) -> str:  # noqa: N803 - the learner's class
    """Parameters, state-dict keys and shapes, then outputs equal to the package's CNNBatch in eval and train mode."""
    from fmnist_lab.models import CNNBatch as Reference

    expect_callable(CNNBatch, "a class CNNBatch (an nn.Module)")
    with torch.random.fork_rng(devices=[]):
        model = CNNBatch()
        if not isinstance(model, nn.Module):
            raise Mismatch(f"expected CNNBatch() to be an nn.Module, got {type(model).__name__}")
        found = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if found != EXPECTED_PARAMETERS:
            shortfall = _missing_layers(EXPECTED_PARAMETERS - found) if found < EXPECTED_PARAMETERS else ""
            raise Mismatch(f"expected {EXPECTED_PARAMETERS:,} trainable parameters, found {found:,}{shortfall}")

        reference = Reference()
        wanted, got = _named_state(reference), _named_state(model)
        if set(wanted) != set(got):
            missing = _layers([k for k in wanted if k not in got])
            unexpected = _layers([k for k in got if k not in wanted])
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected[:6])}{' …' if len(unexpected) > 6 else ''}")
            raise Mismatch("state-dict keys differ from the original's: " + "; ".join(parts)
                           + f" (the original's layers: {STATE_KEYS_HINT})")
        for key, shape in wanted.items():
            if got[key] != shape:
                raise Mismatch(f"expected {key} of shape {shape} (as in the original), got {got[key]}")

        state = _reference_state()
        reference.load_state_dict(state)
        try:
            model.load_state_dict({k: v.clone() for k, v in state.items()})
        except Exception as exc:  # noqa: BLE001 - e.g. a custom load_state_dict
            raise Mismatch(f"the original's weights do not load into your model "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        model.to("cpu")
        x = torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(3))

        with torch.no_grad():
            model.eval()
            reference.eval()
            out = model(x.clone())
            expect_tensor(out, "the output for 100 images of 16×16", (100, 10))
            expected = reference(x)
            if not _close(out, expected, MODEL_ATOL):
                difference = (out.double() - expected.double()).abs().max().item()
                raise Mismatch(
                    f"with the original's weights loaded, your eval-mode output differs from the original's "
                    f"by up to {difference:.3g} (tolerance {MODEL_ATOL_TEXT}): check the order conv → batch norm "
                    "→ ReLU → max-pool, and that forward ends with bn_fc1(fc1(…))")

            model.train()
            reference.train()
            out = model(x.clone())
            expected = reference(x)
            if not _close(out, expected, MODEL_ATOL):
                difference = (out.double() - expected.double()).abs().max().item()
                raise Mismatch(
                    f"eval mode matches, but in training mode your output differs from the original's by up "
                    f"to {difference:.3g} (tolerance {MODEL_ATOL_TEXT}): use nn.BatchNorm2d/nn.BatchNorm1d "
                    "modules so that training mode uses the batch statistics")
            mine, theirs = model.state_dict(), reference.state_dict()
            for key in theirs:
                if key.endswith(("running_mean", "running_var")) and not _close(mine[key], theirs[key], MODEL_ATOL):
                    raise Mismatch(f"after one training-mode batch, your {key} differs from the original's: "
                                   "keep nn.BatchNorm's default momentum 0.1")
    return f"{EXPECTED_PARAMETERS:,} parameters, output (100, 10), matches the reference"


# ---------------------------------------------------------------------------------------------
# 3.3 update_running_stats
# ---------------------------------------------------------------------------------------------

def _running_mistakes(mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor,
                      momentum: float) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """(running_mean, running_var) after the usual mistakes, each with what it got wrong."""
    batch_mean, batch_var, batch_var_unbiased = (s.flatten() for s in _per_channel(x))
    m = momentum
    right_mean = (1 - m) * mean + m * batch_mean
    return [
        (right_mean, (1 - m) * var + m * batch_var,
         "running_var must be updated with the unbiased batch variance (divide by n − 1), "
         "not the biased one used for normalising"),
        (m * mean + (1 - m) * batch_mean, m * var + (1 - m) * batch_var_unbiased,
         "momentum weighs the new batch, not the old value: new = (1 − momentum)·old + momentum·batch"),
        (m * mean + (1 - m) * batch_mean, m * var + (1 - m) * batch_var,
         "momentum weighs the new batch (new = (1 − momentum)·old + momentum·batch), and running_var "
         "uses the unbiased variance"),
        (batch_mean, batch_var_unbiased,
         "you returned the batch statistics; blend them with the old values: "
         "(1 − momentum)·old + momentum·batch"),
        (right_mean, (1 - m) * var + m * batch_var_unbiased.sqrt(),
         "running_var tracks the variance, not the standard deviation"),
        (mean, var, "you returned the old running statistics unchanged"),
        ((1 - 0.1) * mean + 0.1 * batch_mean, (1 - 0.1) * var + 0.1 * batch_var_unbiased,
         "your update ignores the momentum argument (it matches momentum = 0.1): use momentum"),
    ]


@exercise("3.3", "update_running_stats",
          "new = (1 − momentum)·old + momentum·batch statistic, per channel; the unbiased "
          "variance (divide by n − 1) for running_var")
def check_update_running_stats(update_running_stats: Any) -> str:
    """Follow nn.BatchNorm2d's buffers over three training-mode batches (momentum 0.1), then one with 0.3."""
    expect_callable(update_running_stats,
                    "a function update_running_stats(running_mean, running_var, x, momentum)")
    generator = torch.Generator().manual_seed(5)
    bn = nn.BatchNorm2d(3, momentum=0.1)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_var.copy_(torch.tensor([0.25, 4.0, 1.0]))
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    steps = [0.1, 0.1, 0.1, 0.3]
    for step, momentum in enumerate(steps, 1):
        x = torch.randn(4, 3, 2, 2, generator=generator) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1)
        x = x + torch.tensor([2.0, -1.0, 0.0]).view(1, 3, 1, 1)
        bn.momentum = momentum
        bn.train()
        with torch.no_grad():
            bn(x)
        mean_before, var_before, x_before = mean.clone(), var.clone(), x.clone()
        result = update_running_stats(mean, var, x, momentum)
        _expect_unchanged(x_before, x, "x")
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Mismatch("expected update_running_stats to return a pair (new_running_mean, new_running_var), "
                           f"got {type(result).__name__}")
        new_mean, new_var = result
        what = f"after batch {step} (momentum {_number(momentum)})"
        expect_tensor(new_mean, f"the new running_mean {what}", (3,))
        expect_tensor(new_var, f"the new running_var {what}", (3,))
        if not (_close(new_mean, bn.running_mean, ATOL) and _close(new_var, bn.running_var, ATOL)):
            for cand_mean, cand_var, reason in _running_mistakes(mean_before, var_before, x_before, momentum):
                if _close(new_mean, cand_mean, ATOL) and _close(new_var, cand_var, ATOL):
                    raise Mismatch(f"{what}, your running statistics differ from nn.BatchNorm2d's: {reason}")
            expect_close(new_mean, bn.running_mean, f"the new running_mean {what}", atol=ATOL)
            expect_close(new_var, bn.running_var, f"the new running_var {what}", atol=ATOL)
        mean, var = new_mean.detach().clone(), new_var.detach().clone()
    return (f"running_mean and running_var follow nn.BatchNorm2d's buffers over {len(steps)} batches "
            f"(momentum 0.1 and 0.3) within {ATOL_TEXT}")


# ---------------------------------------------------------------------------------------------
# 3.4 batch_norm_eval
# ---------------------------------------------------------------------------------------------

def _bn_eval_mistakes(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                      gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> list[tuple[torch.Tensor, str]]:
    """Eval-mode outputs of the usual mistakes, each with what it got wrong."""
    rm, rv, g, b = _c(running_mean), _c(running_var), _c(gamma), _c(beta)
    mean, var, _ = _per_channel(x)
    return [
        (g * (x - mean) / torch.sqrt(var + eps) + b,
         "your output uses the batch's own mean and variance; in eval mode use running_mean and running_var"),
        ((x - rm) / torch.sqrt(rv + eps),
         "the normalisation is right but gamma and beta are missing: return gamma·x̂ + beta"),
        (g * (x - rm) / (torch.sqrt(rv) + eps) + b,
         "eps belongs inside the square root: divide by sqrt(running_var + eps)"),
        (g * (x - rm) / (rv + eps) + b,
         "you divided by the variance; divide by the standard deviation sqrt(running_var + eps)"),
        (g * (x - rm) / torch.sqrt(rv + 1e-5) + b,
         "your output ignores the eps argument (it matches eps = 1e-5): use eps"),
    ]


@exercise("3.4", "batch_norm_eval",
          "gamma·(x − running_mean)/sqrt(running_var + eps) + beta, the (C,) vectors reshaped to "
          "(1, C, 1, 1)")
def check_batch_norm_eval(batch_norm_eval: Any) -> str:
    """Compare with nn.BatchNorm2d in eval mode, with two values of eps, and on a single image."""
    expect_callable(batch_norm_eval, "a function batch_norm_eval(x, running_mean, running_var, gamma, beta, eps)")
    running_mean = torch.tensor([0.5, -1.0, 2.0])
    running_var = torch.tensor([0.25, 4.0, 1.0])
    gamma = torch.tensor([1.5, -0.7, 2.0])
    beta = torch.tensor([0.3, -1.2, 0.5])
    x = _channel_batch((5, 3, 4, 2), [1.0, 0.0, 2.5], [2.0, 1.0, 0.3], seed=7)
    for batch, eps, what in [(x, 1e-5, "a (5, 3, 4, 2) batch"), (x, 0.5, "a (5, 3, 4, 2) batch with eps 0.5"),
                             (x[:1], 1e-5, "a single image (1, 3, 4, 2)")]:
        bn = nn.BatchNorm2d(3, eps=eps)
        with torch.no_grad():
            bn.running_mean.copy_(running_mean)
            bn.running_var.copy_(running_var)
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
            expected = bn.eval()(batch)
        before = batch.clone()
        got = batch_norm_eval(batch, running_mean.clone(), running_var.clone(), gamma.clone(), beta.clone(), eps)
        _expect_unchanged(before, batch, "x")
        label = f"batch_norm_eval on {what}"
        expect_tensor(got, label, tuple(expected.shape))
        if not _close(got, expected, ATOL):
            reason = _diagnose(got, _bn_eval_mistakes(batch, running_mean, running_var, gamma, beta, eps), ATOL)
            if reason:
                raise Mismatch(f"{label} differs from nn.BatchNorm2d in eval mode: {reason}")
            expect_close(got, expected, label, atol=ATOL)
    return f"matches nn.BatchNorm2d in eval mode within {ATOL_TEXT} on a batch (eps 1e-5 and 0.5) and on one image"
