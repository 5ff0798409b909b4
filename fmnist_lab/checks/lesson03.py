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

from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks.toolkit import (
    as_pair,
    call_unmodified,
    diagnose,
    expect_callable,
    expect_close,
    expect_tensor,
    first_line,
    is_close,
    max_difference,
    own_rng,
    random_cnn_batch,
    state_shapes,
    watch,
)
from fmnist_lab.models import count_parameters

ATOL, ATOL_TEXT = 1e-5, "1e-5"
MODEL_ATOL, MODEL_ATOL_TEXT = 1e-4, "1e-4"
EXPECTED_PARAMETERS = 18_494
STATE_KEYS_HINT = "cnn1, conv1_bn, cnn2, conv2_bn, fc1, bn_fc1"


def _channel_batch(shape: tuple[int, ...], means: list[float], stds: list[float], seed: int) -> torch.Tensor:
    """A float32 batch (N, C, H, W) whose channels have clearly different means and spreads."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x * torch.tensor(stds).view(1, -1, 1, 1) + torch.tensor(means).view(1, -1, 1, 1)


def _per_channel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch mean, biased and unbiased variance of each channel, each shaped (1, C, 1, 1)."""
    dims = (0, 2, 3)
    return (
        x.mean(dim=dims, keepdim=True),
        x.var(dim=dims, unbiased=False, keepdim=True),
        x.var(dim=dims, unbiased=True, keepdim=True),
    )


def _c(v: torch.Tensor) -> torch.Tensor:
    """A (C,) vector as (1, C, 1, 1)."""
    return v.view(1, -1, 1, 1)


# --- 3.1 batch_norm_forward (train mode) -----------------------------------------------------


def _bn_train_mistakes(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
) -> list[tuple[str, torch.Tensor]]:
    """What each usual mistake got wrong, with its train-mode output."""
    mean, var, var_unbiased = _per_channel(x)
    g, b = _c(gamma), _c(beta)
    image_mean, image_var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), unbiased=False, keepdim=True)
    batch_mean, batch_var = x.mean(dim=0, keepdim=True), x.var(dim=0, unbiased=False, keepdim=True)
    return [
        (
            (
                "you used the unbiased variance (divide by n − 1); batch norm normalises with the biased "
                "variance (divide by n = N·H·W)"
            ),
            g * (x - mean) / torch.sqrt(var_unbiased + eps) + b,
        ),
        (
            (
                "you used one mean and variance for the whole batch; batch norm uses one per channel "
                "(average over N, H and W, not over C)"
            ),
            g * (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) + b,
        ),
        (
            (
                "you averaged over H and W of each image separately; batch norm averages each channel over "
                "the whole batch (N, H and W)"
            ),
            g * (x - image_mean) / torch.sqrt(image_var + eps) + b,
        ),
        (
            "you averaged over the batch dimension only; batch norm averages each channel over N, H and W",
            g * (x - batch_mean) / torch.sqrt(batch_var + eps) + b,
        ),
        (
            "the normalisation is right but gamma and beta are missing: return gamma·x̂ + beta",
            (x - mean) / torch.sqrt(var + eps),
        ),
        (
            "eps belongs inside the square root: divide by sqrt(var + eps), not sqrt(var) + eps",
            g * (x - mean) / (torch.sqrt(var) + eps) + b,
        ),
        ("you left eps out: divide by sqrt(var + eps)", g * (x - mean) / torch.sqrt(var) + b),
        (
            "your output ignores the eps argument (it matches eps = 1e-5): use eps",
            g * (x - mean) / torch.sqrt(var + 1e-5) + b,
        ),
        (
            "you divided by the variance; divide by the standard deviation sqrt(var + eps)",
            g * (x - mean) / (var + eps) + b,
        ),
        (
            "gamma and beta must be applied per channel: reshape them to (1, C, 1, 1)",
            gamma.mean() * (x - mean) / torch.sqrt(var + eps) + beta.mean(),
        ),
    ]


@exercise(
    "3.1",
    "batch_norm_forward",
    "per channel, the mean and biased variance over N, H and W; eps inside the square root; "
    "gamma and beta reshaped to (1, C, 1, 1)",
)
def check_batch_norm_forward(batch_norm_forward: Any) -> str:
    """Compare with `F.batch_norm(training=True)` on two seeded batches with two values of eps."""
    expect_callable(batch_norm_forward, "a function batch_norm_forward(x, gamma, beta, eps)")
    cases = [
        # a channel with a tiny spread makes eps matter; W != C so a wrong broadcast cannot pass
        (
            _channel_batch((4, 3, 2, 2), [1.0, -2.0, 0.0], [2.0, 0.5, 0.01], seed=0),
            torch.tensor([1.5, -0.7, 2.0]),
            torch.tensor([0.3, -1.2, 0.5]),
            1e-5,
            "1e-5",
        ),
        (
            _channel_batch((6, 2, 3, 3), [0.5, 3.0], [1.0, 0.2], seed=1),
            torch.tensor([0.8, 1.7]),
            torch.tensor([-0.4, 0.9]),
            0.5,
            "0.5",
        ),
    ]
    for x, gamma, beta, eps, eps_text in cases:
        what = f"batch_norm_forward(x, gamma, beta, eps={eps_text}) on a {tuple(x.shape)} batch"
        got = call_unmodified(batch_norm_forward, x, gamma, beta, eps, names=("x", "gamma", "beta"))
        expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
        if is_close(expect_tensor(got, what, tuple(expected.shape)), expected, ATOL):
            continue
        if reason := diagnose(got, _bn_train_mistakes(x, gamma, beta, eps), ATOL):
            raise Mismatch(f"{what} differs from nn.BatchNorm2d in training mode: {reason}")
        expect_close(got, expected, what, atol=ATOL)
    return (
        "outputs (4, 3, 2, 2) and (6, 2, 3, 3) match nn.BatchNorm2d in training mode "
        f"within {ATOL_TEXT} (eps 1e-5 and 0.5)"
    )


# --- 3.2 CNNBatch ----------------------------------------------------------------------------


def _missing_layers(difference: int) -> str:
    """What a shortfall of trainable parameters most likely means."""
    known = {
        116: "no batch-norm layers at all; they hold 32 + 64 + 20",
        96: "no BatchNorm2d layers; they hold 32 + 64",
        84: "BatchNorm2d(32) and BatchNorm1d(10) missing",
        52: "BatchNorm2d(16) and BatchNorm1d(10) missing",
        64: "BatchNorm2d(32) missing",
        32: "BatchNorm2d(16) missing",
        20: "BatchNorm1d(10) after fc1 missing",
    }
    return f" ({difference:,} fewer: {known[difference]})" if difference in known else ""


def _layers(keys: list[str]) -> list[str]:
    """The layers that state-dict keys belong to, in order, each once (`conv1_bn.running_mean` → `conv1_bn`)."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in keys))


@exercise("3.2", "CNNBatch", "conv → BatchNorm2d → ReLU → max-pool, twice; then fc1 and BatchNorm1d after fc1")
@own_rng
def check_cnn_batch(CNNBatch: Any) -> str:  # noqa: N803 - the learner's class
    """Parameters, state-dict keys and shapes, then outputs equal to the package's CNNBatch in eval and train mode."""
    expect_callable(CNNBatch, "a class CNNBatch (an nn.Module)")
    model = CNNBatch()
    if not isinstance(model, nn.Module):
        raise Mismatch(f"expected CNNBatch() to be an nn.Module, got {type(model).__name__}")
    found = count_parameters(model)
    if found != EXPECTED_PARAMETERS:
        shortfall = _missing_layers(EXPECTED_PARAMETERS - found) if found < EXPECTED_PARAMETERS else ""
        raise Mismatch(f"expected {EXPECTED_PARAMETERS:,} trainable parameters, found {found:,}{shortfall}")

    reference = random_cnn_batch(0)  # seeded weights and batch-norm statistics far from the defaults
    wanted, got = state_shapes(reference), state_shapes(model)
    if set(wanted) != set(got):
        missing, unexpected = _layers([k for k in wanted if k not in got]), _layers([k for k in got if k not in wanted])
        parts = [f"missing {', '.join(missing)}"] if missing else []
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}{' …' if len(unexpected) > 6 else ''}")
        raise Mismatch(
            "state-dict keys differ from the original's: "
            + "; ".join(parts)
            + f" (the original's layers: {STATE_KEYS_HINT})"
        )
    for key, shape in wanted.items():
        if got[key] != shape:
            raise Mismatch(f"expected {key} of shape {shape} (as in the original), got {got[key]}")

    try:
        model.load_state_dict({k: v.clone() for k, v in reference.state_dict().items()})
    except Exception as exc:  # noqa: BLE001 - e.g. a custom load_state_dict
        raise Mismatch(f"the original's weights do not load into your model ({first_line(exc)})") from None
    model.to("cpu")
    x = torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = expect_tensor(model.eval()(x.clone()), "the output for 100 images of 16×16", (100, 10))
        if not is_close(out, expected := reference.eval()(x), MODEL_ATOL):
            raise Mismatch(
                f"with the original's weights loaded, your eval-mode output differs from the original's "
                f"by up to {max_difference(out, expected):.3g} (tolerance {MODEL_ATOL_TEXT}): check the order "
                "conv → batch norm → ReLU → max-pool, and that forward ends with bn_fc1(fc1(…))"
            )
        out = model.train()(x.clone())
        if not is_close(out, expected := reference.train()(x), MODEL_ATOL):
            raise Mismatch(
                f"eval mode matches, but in training mode your output differs from the original's by up "
                f"to {max_difference(out, expected):.3g} (tolerance {MODEL_ATOL_TEXT}): use nn.BatchNorm2d/"
                "nn.BatchNorm1d modules so that training mode uses the batch statistics"
            )
    mine, theirs = model.state_dict(), reference.state_dict()
    for key in theirs:
        if key.endswith(("running_mean", "running_var")) and not is_close(mine[key], theirs[key], MODEL_ATOL):
            raise Mismatch(
                f"after one training-mode batch, your {key} differs from the original's: "
                "keep nn.BatchNorm's default momentum 0.1"
            )
    return f"{EXPECTED_PARAMETERS:,} parameters, output (100, 10), matches the reference"


# --- 3.3 update_running_stats ----------------------------------------------------------------


def _running_mistakes(
    mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor, m: float
) -> list[tuple[str, tuple[torch.Tensor, torch.Tensor]]]:
    """What each usual mistake got wrong, with the (running_mean, running_var) it gives (m: the momentum)."""
    batch_mean, batch_var, batch_var_unbiased = (s.flatten() for s in _per_channel(x))
    right_mean = (1 - m) * mean + m * batch_mean
    return [
        (
            (
                "running_var must be updated with the unbiased batch variance (divide by n − 1), "
                "not the biased one used for normalising"
            ),
            (right_mean, (1 - m) * var + m * batch_var),
        ),
        (
            "momentum weighs the new batch, not the old value: new = (1 − momentum)·old + momentum·batch",
            (m * mean + (1 - m) * batch_mean, m * var + (1 - m) * batch_var_unbiased),
        ),
        (
            (
                "momentum weighs the new batch (new = (1 − momentum)·old + momentum·batch), and running_var "
                "uses the unbiased variance"
            ),
            (m * mean + (1 - m) * batch_mean, m * var + (1 - m) * batch_var),
        ),
        (
            ("you returned the batch statistics; blend them with the old values: (1 − momentum)·old + momentum·batch"),
            (batch_mean, batch_var_unbiased),
        ),
        (
            "running_var tracks the variance, not the standard deviation",
            (right_mean, (1 - m) * var + m * batch_var_unbiased.sqrt()),
        ),
        ("you returned the old running statistics unchanged", (mean, var)),
        (
            "your update ignores the momentum argument (it matches momentum = 0.1): use momentum",
            ((1 - 0.1) * mean + 0.1 * batch_mean, (1 - 0.1) * var + 0.1 * batch_var_unbiased),
        ),
    ]


def _both_close(got: tuple[Any, Any], want: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Both running statistics within ATOL: one mistake table entry covers the pair."""
    return is_close(got[0], want[0], ATOL) and is_close(got[1], want[1], ATOL)


@exercise(
    "3.3",
    "update_running_stats",
    "new = (1 − momentum)·old + momentum·batch statistic, per channel; the unbiased "
    "variance (divide by n − 1) for running_var",
)
def check_update_running_stats(update_running_stats: Any) -> str:
    """Follow nn.BatchNorm2d's buffers over three training-mode batches (momentum 0.1), then one with 0.3."""
    expect_callable(update_running_stats, "a function update_running_stats(running_mean, running_var, x, momentum)")
    generator = torch.Generator().manual_seed(5)
    bn, mean, var = nn.BatchNorm2d(3, momentum=0.1), torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.25, 4.0, 1.0])
    bn.running_mean, bn.running_var = mean.clone(), var.clone()
    steps = [0.1, 0.1, 0.1, 0.3]
    for step, momentum in enumerate(steps, 1):
        x = torch.randn(4, 3, 2, 2, generator=generator) * _c(torch.tensor([1.0, 3.0, 0.5]))
        x = x + _c(torch.tensor([2.0, -1.0, 0.0]))
        bn.momentum = momentum
        with torch.no_grad():
            bn.train()(x)
        before = (mean.clone(), var.clone())  # updating the running statistics in place is allowed
        with watch(x=x):
            result = update_running_stats(mean, var, x, momentum)
        new = as_pair(result, "update_running_stats", "a pair (new_running_mean, new_running_var)")
        what = f"after batch {step} (momentum {momentum:g})"
        expect_tensor(new[0], f"the new running_mean {what}", (3,))
        expect_tensor(new[1], f"the new running_var {what}", (3,))
        if not _both_close(new, (bn.running_mean, bn.running_var)):
            if reason := diagnose(new, _running_mistakes(*before, x, momentum), _both_close):
                raise Mismatch(f"{what}, your running statistics differ from nn.BatchNorm2d's: {reason}")
            expect_close(new[0], bn.running_mean, f"the new running_mean {what}", atol=ATOL)
            expect_close(new[1], bn.running_var, f"the new running_var {what}", atol=ATOL)
        mean, var = new[0].detach().clone(), new[1].detach().clone()
    return (
        f"running_mean and running_var follow nn.BatchNorm2d's buffers over {len(steps)} batches "
        f"(momentum 0.1 and 0.3) within {ATOL_TEXT}"
    )


# --- 3.4 batch_norm_eval ---------------------------------------------------------------------


def _bn_eval_mistakes(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
) -> list[tuple[str, torch.Tensor]]:
    """What each usual mistake got wrong, with its eval-mode output."""
    rm, rv, g, b = _c(running_mean), _c(running_var), _c(gamma), _c(beta)
    mean, var, _ = _per_channel(x)
    return [
        (
            "your output uses the batch's own mean and variance; in eval mode use running_mean and running_var",
            g * (x - mean) / torch.sqrt(var + eps) + b,
        ),
        (
            "the normalisation is right but gamma and beta are missing: return gamma·x̂ + beta",
            (x - rm) / torch.sqrt(rv + eps),
        ),
        (
            "eps belongs inside the square root: divide by sqrt(running_var + eps)",
            g * (x - rm) / (torch.sqrt(rv) + eps) + b,
        ),
        (
            "you divided by the variance; divide by the standard deviation sqrt(running_var + eps)",
            g * (x - rm) / (rv + eps) + b,
        ),
        (
            "your output ignores the eps argument (it matches eps = 1e-5): use eps",
            g * (x - rm) / torch.sqrt(rv + 1e-5) + b,
        ),
    ]


@exercise(
    "3.4",
    "batch_norm_eval",
    "gamma·(x − running_mean)/sqrt(running_var + eps) + beta, the (C,) vectors reshaped to (1, C, 1, 1)",
)
def check_batch_norm_eval(batch_norm_eval: Any) -> str:
    """Compare with nn.BatchNorm2d in eval mode, with two values of eps, and on a single image."""
    expect_callable(batch_norm_eval, "a function batch_norm_eval(x, running_mean, running_var, gamma, beta, eps)")
    statistics = (
        torch.tensor([0.5, -1.0, 2.0]),
        torch.tensor([0.25, 4.0, 1.0]),  # running mean and var
        torch.tensor([1.5, -0.7, 2.0]),
        torch.tensor([0.3, -1.2, 0.5]),
    )  # gamma and beta
    x = _channel_batch((5, 3, 4, 2), [1.0, 0.0, 2.5], [2.0, 1.0, 0.3], seed=7)
    for batch, eps, what in [
        (x, 1e-5, "a (5, 3, 4, 2) batch"),
        (x, 0.5, "a (5, 3, 4, 2) batch with eps 0.5"),
        (x[:1], 1e-5, "a single image (1, 3, 4, 2)"),
    ]:
        expected, label = F.batch_norm(batch, *statistics, training=False, eps=eps), f"batch_norm_eval on {what}"
        got = call_unmodified(
            batch_norm_eval, batch, *statistics, eps, names=("x", "running_mean", "running_var", "gamma", "beta")
        )
        if is_close(expect_tensor(got, label, tuple(expected.shape)), expected, ATOL):
            continue
        if reason := diagnose(got, _bn_eval_mistakes(batch, *statistics, eps), ATOL):
            raise Mismatch(f"{label} differs from nn.BatchNorm2d in eval mode: {reason}")
        expect_close(got, expected, label, atol=ATOL)
    return f"matches nn.BatchNorm2d in eval mode within {ATOL_TEXT} on a batch (eps 1e-5 and 0.5) and on one image"
