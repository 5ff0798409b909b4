"""Checks of lesson 03 (batch norm): batch norm by hand in train and eval mode, running statistics, CNNBatch.

Every check compares behaviour with PyTorch's own batch norm (`F.batch_norm`, `nn.BatchNorm2d`) or
with `fmnist_lab.models.CNNBatch` on small seeded inputs. When an answer is wrong, the check tries
the usual mistakes (unbiased variance, one statistic for all channels, eps outside the square root,
momentum the wrong way round, batch statistics in eval mode, …) and names the one that matches.
The global random state is left as it was: the checks draw from their own `torch.Generator`.

Beyond the values, every check tries one image and odd sizes, float64, another device (PyTorch's
`meta` device stands in for a GPU), the gradients where the step is differentiable, and that no
argument changes in place; 3.2 also tries non-default constructor arguments and the mode. Limits:
a call to PyTorch's batch norm through a private alias (not `torch.batch_norm`) is not seen, and a
function that reads values (`.item()`, NumPy) cannot run on `meta`, so its device is not checked.

Decided for 3.1, 3.3 and 3.4: results keep the inputs' dtype (a float64 result for a float32 x fails: it
would not fit the next float32 layer; computing in float64 inside is fine); calling `F.batch_norm` or an
`nn.BatchNorm` layer fails, since the lesson asks for the equations (the check sees calls through
`torch.batch_norm` only); no argument may be changed in place (3.3 returns new tensors, although
nn.BatchNorm2d updates its own buffers in place); gradients must reach x, gamma and beta in 3.1 and 3.4,
not in 3.3 (running statistics are not trained).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmnist_lab import models
from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk
from fmnist_lab.models import count_parameters

ATOL, ATOL_TEXT = 1e-5, "1e-5"
MODEL_ATOL, MODEL_ATOL_TEXT = 1e-4, "1e-4"
EXPECTED_PARAMETERS = 18_494
STATE_KEYS_HINT = "cnn1, conv1_bn, cnn2, conv2_bn, fc1, bn_fc1"
RUNNING = ([0.5, -1.0, 2.0], [0.25, 4.0, 1.0])  # the running mean and variance of 3.3 and 3.4
FORBIDDEN = (
    "your function calls F.batch_norm (or an nn.BatchNorm layer, which calls it): the exercise is to write "
    "the equations yourself with tensor operations (mean, var, sqrt)"
)


def _c(v: Tensor) -> Tensor:
    """A (C,) vector as (1, C, 1, 1)."""
    return v.view(1, -1, 1, 1)


def _channel_batch(shape: tuple[int, ...], means: list[float], stds: list[float], seed: int) -> Tensor:
    """A float32 batch (N, C, H, W) whose channels have clearly different means and spreads."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x * _c(torch.tensor(stds)) + _c(torch.tensor(means))


def _per_channel(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch mean, biased and unbiased variance of each channel, each shaped (1, C, 1, 1)."""
    dims = (0, 2, 3)
    return (
        x.mean(dim=dims, keepdim=True),
        x.var(dim=dims, unbiased=False, keepdim=True),
        x.var(dim=dims, unbiased=True, keepdim=True),
    )


def _expect_batch_norm(
    function: Any, name: str, cases: list, reference: Any, mistakes: Any, names: tuple[str, ...], mode: str
) -> None:
    """Each case `(arguments, eps, what)`, named `name + what`: no library batch norm, no argument changed, a finite
    tensor in x's dtype equal to the reference's, else the mistake it matches (`mistakes(*arguments, eps)`); then, on
    the first case, the gradients for x, gamma and beta (the statistics between them held fixed) and the device."""
    for arguments, eps, case in cases:
        what = name + case
        with tk.forbid_call(torch, "batch_norm", FORBIDDEN):
            got = tk.call_unmodified(function, *arguments, eps, names=names)
        expected = reference(*arguments, eps)
        tk.expect_tensor(got, what, tuple(expected.shape))
        tk.expect_finite(got, what)
        tk.expect_dtype_kept(got, arguments[0], what)
        found = f"{what} differs from nn.BatchNorm2d in {mode}: "
        tk.expect_same(got, expected, what, mistakes(*arguments, eps), atol=ATOL, found=found)
    (x, *statistics, gamma, beta), eps, _ = cases[0]
    tk.expect_gradients(
        lambda x, g, b: function(x, *(s.to(x.dtype) for s in statistics), g, b, eps),
        lambda x, g, b: reference(x, *(s.to(x.dtype) for s in statistics), g, b, eps),
        {"x": x, "gamma": gamma, "beta": beta},
        what=name,
    )
    tk.expect_device_kept(function, *cases[0][0], eps, what=name)


# --- 3.1 batch_norm_forward (train mode) -----------------------------------------------------


def _bn_train_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> list[tuple[str, Tensor]]:
    """What each usual mistake got wrong, with its train-mode output."""
    mean, var, var_unbiased = _per_channel(x)
    g, b = _c(gamma), _c(beta)
    image_mean, image_var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), unbiased=False, keepdim=True)
    batch_mean, batch_var = x.mean(dim=0, keepdim=True), x.var(dim=0, unbiased=False, keepdim=True)
    return [
        (
            "you used the unbiased variance (divide by M − 1); batch norm normalises with the biased "
            "variance (divide by M = N·H·W)",
            g * (x - mean) / torch.sqrt(var_unbiased + eps) + b,
        ),
        (
            "you used one mean and variance for the whole batch; batch norm uses one per channel "
            "(average over N, H and W, not over C)",
            g * (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) + b,
        ),
        (
            "you averaged over H and W of each image separately; batch norm averages each channel over "
            "the whole batch (N, H and W)",
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


def _bn_train_reference(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """PyTorch's training-mode batch norm, the reference of 3.1."""
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


@exercise(
    "3.1",
    "batch_norm_forward",
    "per channel, the mean and biased variance over N, H and W; eps inside the square root; "
    "gamma and beta reshaped to (1, C, 1, 1)",
)
def check_batch_norm_forward(batch_norm_forward: Any) -> str:
    """Compare with `F.batch_norm(training=True)` on three seeded batches, then its gradients and its device."""
    tk.expect_function(batch_norm_forward, "a function batch_norm_forward(x, gamma, beta, eps)")
    # a channel with a tiny spread makes eps matter; W != C so a wrong broadcast cannot pass
    four = _channel_batch((4, 3, 2, 2), [1.0, -2.0, 0.0], [2.0, 0.5, 0.01], seed=0)
    six = _channel_batch((6, 2, 3, 3), [0.5, 3.0], [1.0, 0.2], seed=1)
    # one image (N = 1 is fine in training mode when H·W > 1), odd sizes, float64
    one = _channel_batch((1, 2, 3, 5), [-1.0, 2.0], [0.7, 1.5], seed=2).double()
    cases = [  # x, gamma, beta (in x's dtype), eps, what
        (four, [1.5, -0.7, 2.0], [0.3, -1.2, 0.5], 1e-5, "(x, gamma, beta, eps=1e-5) on a (4, 3, 2, 2) batch"),
        (six, [0.8, 1.7], [-0.4, 0.9], 0.5, "(x, gamma, beta, eps=0.5) on a (6, 2, 3, 3) batch"),
        (one, [0.6, -1.1], [0.2, 0.4], 1e-5, "(x, gamma, beta, eps=1e-5) on one float64 image (1, 2, 3, 5)"),
    ]
    cases = [((x, torch.tensor(g, dtype=x.dtype), torch.tensor(b, dtype=x.dtype)), eps, w) for x, g, b, eps, w in cases]
    names = ("x", "gamma", "beta")
    _expect_batch_norm(
        batch_norm_forward, "batch_norm_forward", cases, _bn_train_reference, _bn_train_mistakes, names, "training mode"
    )
    return (
        "outputs (4, 3, 2, 2) and (6, 2, 3, 3) match nn.BatchNorm2d in training mode "
        f"within {ATOL_TEXT} (eps 1e-5 and 0.5)"
    )


# --- 3.2 CNNBatch ----------------------------------------------------------------------------


MISSING_LAYERS = {  # what a shortfall of trainable parameters most likely means
    116: "no batch-norm layers at all; they hold 32 + 64 + 20",
    96: "no BatchNorm2d layers; they hold 32 + 64",
    84: "BatchNorm2d(32) and BatchNorm1d(10) missing",
    52: "BatchNorm2d(16) and BatchNorm1d(10) missing",
    64: "BatchNorm2d(32) missing",
    32: "BatchNorm2d(16) missing",
    20: "BatchNorm1d(10) after fc1 missing",
}


def _layers(keys: list[str]) -> list[str]:
    """The layers that state-dict keys belong to, in order, each once (`conv1_bn.running_mean` → `conv1_bn`)."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in keys))


def _norm_layer_problem(found: dict[str, tuple[int, ...]]) -> str | None:
    """A batch-norm layer built without its scale and shift or without running statistics, named as such."""
    for layer, kind in (("conv1_bn", "BatchNorm2d"), ("conv2_bn", "BatchNorm2d"), ("bn_fc1", "BatchNorm1d")):
        has_affine, has_running = f"{layer}.weight" in found, f"{layer}.running_mean" in found
        if has_running and not has_affine:
            return (
                f"{layer} has no γ and β ({kind}(…, affine=False)): keep the default affine=True, the original "
                "learns a scale and a shift for every channel"
            )
        if has_affine and not has_running:
            return (
                f"{layer} keeps no running statistics ({kind}(…, track_running_stats=False)): keep the default "
                "True, eval mode needs them"
            )
    return None


def _expect_architecture(model: nn.Module, reference: nn.Module) -> None:
    """The original's parameter count, state-dict keys and shapes, each difference named."""
    wanted, got = tk.state_shapes(reference), tk.state_shapes(model)
    if problem := _norm_layer_problem(got):
        raise Mismatch(problem)
    found = count_parameters(model)
    if found != EXPECTED_PARAMETERS:
        fewer = EXPECTED_PARAMETERS - found  # every known shortfall is positive: nothing is named for a surplus
        shortfall = f" ({fewer:,} fewer: {MISSING_LAYERS[fewer]})" if fewer in MISSING_LAYERS else ""
        raise Mismatch(f"expected {EXPECTED_PARAMETERS:,} trainable parameters, found {found:,}{shortfall}")
    if set(wanted) != set(got):
        missing, unexpected = _layers([k for k in wanted if k not in got]), _layers([k for k in got if k not in wanted])
        parts = [f"missing {', '.join(missing)}"] if missing else []
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}{' …' if len(unexpected) > 6 else ''}")
        raise Mismatch(
            f"state-dict keys differ from the original's: {'; '.join(parts)} (the original's layers: {STATE_KEYS_HINT})"
        )
    for key, shape in wanted.items():
        if got[key] != shape:
            raise Mismatch(f"expected {key} of shape {shape} (as in the original), got {got[key]}")


def _pool_before_norm(reference: nn.Module, x: Tensor) -> Tensor:
    """The reference with each max-pool moved before its batch norm: equal in eval mode, not in training mode."""
    x = torch.relu(reference.conv1_bn(reference.maxpool1(reference.cnn1(x))))
    x = torch.relu(reference.conv2_bn(reference.maxpool2(reference.cnn2(x))))
    return reference.bn_fc1(reference.fc1(torch.flatten(x, 1)))


def _training_mode_reason(fresh: nn.Module, x: Tensor, got: Tensor) -> str:
    """Why eval mode matches and training mode does not: dropout, a forced eval mode, or pooling before batch norm."""
    first, second = (deepcopy(fresh).train()(x.clone()) for _ in range(2))
    if not tk.is_close(first, second, MODEL_ATOL):
        return (
            "your training-mode output changes from one call to the next on the same images: remove the "
            "dropout (or other randomness), the original has none"
        )
    if tk.is_close(got, tk.random_cnn_batch(0).eval()(x), MODEL_ATOL):
        return (
            "in training mode your model still uses the running statistics: call the nn.BatchNorm layers "
            "themselves (F.batch_norm(..., training=False) or a forced mode ignores model.train())"
        )
    if tk.is_close(got, _pool_before_norm(tk.random_cnn_batch(0).train(), x), MODEL_ATOL):
        return (
            "in training mode your output matches max-pooling before batch norm: batch norm comes right after "
            "each convolution (conv → batch norm → ReLU → max-pool); in eval mode the two orders happen to agree"
        )
    return (
        "check that each batch-norm layer receives the convolution's output directly "
        "(conv → batch norm → ReLU → max-pool) and that nothing else in forward depends on the mode"
    )


@exercise("3.2", "CNNBatch", "conv → BatchNorm2d → ReLU → max-pool, twice; then fc1 and BatchNorm1d after fc1")
def check_cnn_batch(CNNBatch: Any) -> str:  # noqa: N803 - the learner's class
    """Architecture, constructor arguments, then outputs equal to the package's CNNBatch with the same weights.

    Eval mode on batches of 100, 7 and 1; training mode on 100 and 7 (a batch of one cannot be normalised
    by BatchNorm1d in training mode); then the mode, the running statistics, the gradients, float64 on
    another device (the `meta` device stands in for a GPU), and the constructor arguments.
    """
    tk.expect_class(CNNBatch, "a class CNNBatch (an nn.Module)", 'check("3.2", CNNBatch)')
    model = tk.build_module(CNNBatch, "CNNBatch()", "give every constructor argument its default (16, 32 and 10)")
    reference = tk.random_cnn_batch(0)  # seeded weights and batch-norm statistics far from the defaults
    _expect_architecture(model, reference)
    try:
        model.load_state_dict({k: v.clone() for k, v in reference.state_dict().items()})
    except Exception as exc:  # noqa: BLE001 - e.g. a custom load_state_dict
        raise Mismatch(f"the original's weights do not load into your model ({tk.first_line(exc)})") from None
    fresh = deepcopy(model)
    x = torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for out in tk.forward_batches(model.eval(), x, (100, 7, 1), 10):
            if not tk.is_close(out, expected := reference.eval()(x[: len(out)]), MODEL_ATOL):
                raise Mismatch(
                    f"with the original's weights loaded, your eval-mode output for {len(out)} images differs from "
                    f"the original's by up to {tk.max_difference(out, expected):.3g} (tolerance {MODEL_ATOL_TEXT}): "
                    "check the order conv → batch norm → ReLU → max-pool, and that forward ends with bn_fc1(fc1(…))"
                )
        for out in tk.forward_batches(model.train(), x, (100, 7), 10):
            if not tk.is_close(out, expected := reference.train()(x[: len(out)]), MODEL_ATOL):
                raise Mismatch(
                    f"eval mode matches, but in training mode your output for {len(out)} images differs from the "
                    f"original's by up to {tk.max_difference(out, expected):.3g} (tolerance {MODEL_ATOL_TEXT}): "
                    + _training_mode_reason(fresh, x[: len(out)], out)
                )
    mine, theirs = model.state_dict(), reference.state_dict()
    for key in theirs:
        if key.endswith(("running_mean", "running_var")) and not tk.is_close(mine[key], theirs[key], MODEL_ATOL):
            raise Mismatch(
                f"after two training-mode batches, your {key} differs from the original's: "
                "keep nn.BatchNorm's default momentum 0.1"
            )
    tk.expect_model_gradients(fresh, tk.random_cnn_batch(0), x[:7], "your training-mode output")
    tk.expect_model_device_and_dtype(fresh.eval(), x[:7], "your model")
    tk.expect_constructor_arguments(CNNBatch, "CNNBatch", models.CNNBatch, images=5)
    return f"{EXPECTED_PARAMETERS:,} parameters, output (100, 10), matches the reference"


# --- 3.3 update_running_stats ----------------------------------------------------------------


def _running_mistakes(mean: Tensor, var: Tensor, x: Tensor, m: float) -> list[tuple[str, tuple[Tensor, Tensor]]]:
    """What each usual mistake got wrong, with the (running_mean, running_var) it gives (m: the momentum)."""
    batch_mean, batch_var, batch_var_unbiased = (s.flatten() for s in _per_channel(x))
    right_mean = (1 - m) * mean + m * batch_mean
    return [
        (
            "running_var must be updated with the unbiased batch variance (divide by M − 1), "
            "not the biased one used for normalising",
            (right_mean, (1 - m) * var + m * batch_var),
        ),
        (
            "momentum weighs the new batch, not the old value: new = (1 − momentum)·old + momentum·batch",
            (m * mean + (1 - m) * batch_mean, m * var + (1 - m) * batch_var_unbiased),
        ),
        (
            "momentum weighs the new batch (new = (1 − momentum)·old + momentum·batch), and running_var "
            "uses the unbiased variance",
            (m * mean + (1 - m) * batch_mean, m * var + (1 - m) * batch_var),
        ),
        (
            "you returned the batch statistics; blend them with the old values: (1 − momentum)·old + momentum·batch",
            (batch_mean, batch_var_unbiased),
        ),
        (
            "running_var tracks the variance, not the standard deviation",
            (right_mean, (1 - m) * var + m * batch_var_unbiased.sqrt()),
        ),
        (
            "the M in M/(M − 1) is the number of values per channel, N·H·W, not the number of images N",
            (right_mean, (1 - m) * var + m * batch_var * len(x) / (len(x) - 1)),
        ),
        ("you returned the old running statistics unchanged", (mean, var)),
        (
            "your update ignores the momentum argument (it matches momentum = 0.1): use momentum",
            ((1 - 0.1) * mean + 0.1 * batch_mean, (1 - 0.1) * var + 0.1 * batch_var_unbiased),
        ),
    ]


def _both_close(got: tuple[Any, Any], want: tuple[Tensor, Tensor]) -> bool:
    """Both running statistics within ATOL: one mistake table entry covers the pair."""
    return tk.is_close(got[0], want[0], ATOL) and tk.is_close(got[1], want[1], ATOL)


def _running_batches() -> list[tuple[Tensor, float]]:
    """Seeded training batches whose three channels have different means and spreads, with their momentum."""
    generator = torch.Generator().manual_seed(5)
    spread, centre = _c(torch.tensor([1.0, 3.0, 0.5])), _c(torch.tensor([2.0, -1.0, 0.0]))
    # (shape of the batch, momentum): one image and odd sizes among them
    steps = [((4, 3, 2, 2), 0.1), ((1, 3, 3, 3), 0.1), ((5, 3, 2, 1), 0.1), ((4, 3, 2, 2), 0.3)]
    return [(torch.randn(*shape, generator=generator) * spread + centre, m) for shape, m in steps]


def _update_reference(mean: Tensor, var: Tensor, x: Tensor, momentum: float) -> tuple:
    """nn.BatchNorm2d's buffers after one training-mode batch from (mean, var)."""
    bn = nn.BatchNorm2d(x.shape[1], momentum=momentum).to(x.dtype)
    bn.running_mean, bn.running_var = mean.clone(), var.clone()
    with torch.no_grad():
        bn.train()(x)
    return bn.running_mean, bn.running_var


@exercise(
    "3.3",
    "update_running_stats",
    "new = (1 − momentum)·old + momentum·batch statistic, per channel; the unbiased "
    "variance (divide by M − 1) for running_var",
)
def check_update_running_stats(update_running_stats: Any) -> str:
    """Follow nn.BatchNorm2d's buffers over four training-mode batches (one of them a single image), momentum 0.1 then 0.3."""
    tk.expect_function(update_running_stats, "a function update_running_stats(running_mean, running_var, x, momentum)")
    mean, var = (torch.tensor(values) for values in RUNNING)
    batches = _running_batches()
    for step, (x, momentum) in enumerate(batches, 1):
        what = f"after batch {step} of shape {tuple(x.shape)} (momentum {momentum:g})"
        with tk.forbid_call(torch, "batch_norm", FORBIDDEN):
            result = tk.call_unmodified(
                update_running_stats, mean, var, x, momentum, names=("running_mean", "running_var", "x")
            )
        new = tk.as_pair(result, "update_running_stats", "a pair (new_running_mean, new_running_var)")
        expected = _update_reference(mean, var, x, momentum)
        for value, name in zip(new, ("running_mean", "running_var")):
            tk.expect_tensor(value, f"the new {name} {what}", (3,))
            tk.expect_finite(value, f"the new {name} {what}")
            tk.expect_dtype_kept(value, x, f"the new {name} {what}")
        if not _both_close(new, expected):
            if reason := tk.diagnose(new, _running_mistakes(mean, var, x, momentum), _both_close):
                raise Mismatch(f"{what}, your running statistics differ from nn.BatchNorm2d's: {reason}")
            tk.expect_close(new[0], expected[0], f"the new running_mean {what}", atol=ATOL)
            tk.expect_close(new[1], expected[1], f"the new running_var {what}", atol=ATOL)
        mean, var = new[0].detach().clone(), new[1].detach().clone()
    x = batches[0][0].double()
    got = tk.as_pair(
        update_running_stats(mean.double(), var.double(), x, 0.1), "update_running_stats", "a pair of tensors"
    )
    for value, name in zip(got, ("running_mean", "running_var")):
        tk.expect_tensor(value, f"the new {name} for float64 inputs")
        tk.expect_dtype_kept(value, x, f"the new {name} for float64 inputs")
    if not _both_close(got, _update_reference(mean.double(), var.double(), x, 0.1)):
        raise Mismatch("your running statistics are right for float32 inputs but differ for float64 ones")
    tk.expect_device_kept(update_running_stats, mean, var, x, 0.1, what="update_running_stats")
    return (
        f"running_mean and running_var follow nn.BatchNorm2d's buffers over {len(batches)} batches "
        f"(momentum 0.1 and 0.3) within {ATOL_TEXT}"
    )


# --- 3.4 batch_norm_eval ---------------------------------------------------------------------


def _bn_eval_mistakes(
    x: Tensor, running_mean: Tensor, running_var: Tensor, gamma: Tensor, beta: Tensor, eps: float
) -> list[tuple[str, Tensor]]:
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


def _bn_eval_reference(
    x: Tensor, running_mean: Tensor, running_var: Tensor, gamma: Any, beta: Any, eps: float
) -> Tensor:
    """PyTorch's eval-mode batch norm, the reference of 3.4."""
    return F.batch_norm(x, running_mean, running_var, gamma, beta, training=False, eps=eps)


@exercise(
    "3.4",
    "batch_norm_eval",
    "gamma·(x − running_mean)/sqrt(running_var + eps) + beta, the (C,) vectors reshaped to (1, C, 1, 1)",
)
def check_batch_norm_eval(batch_norm_eval: Any) -> str:
    """Compare with nn.BatchNorm2d in eval mode, with two values of eps, on one image and in float64."""
    tk.expect_function(batch_norm_eval, "a function batch_norm_eval(x, running_mean, running_var, gamma, beta, eps)")
    mean, var = (torch.tensor(values) for values in RUNNING)
    gamma, beta = torch.tensor([1.5, -0.7, 2.0]), torch.tensor([0.3, -1.2, 0.5])
    x = _channel_batch((5, 3, 4, 2), [1.0, 0.0, 2.5], [2.0, 1.0, 0.3], seed=7)
    statistics, wide = (mean, var, gamma, beta), x[:3].double()
    cases = [
        ((x, *statistics), 1e-5, " on a (5, 3, 4, 2) batch"),
        ((x, *statistics), 0.5, " on a (5, 3, 4, 2) batch with eps 0.5"),
        ((x[:1], *statistics), 1e-5, " on a single image (1, 3, 4, 2)"),
        ((wide, *(s.double() for s in statistics)), 1e-5, " on a float64 batch (3, 3, 4, 2)"),
    ]
    names = ("x", "running_mean", "running_var", "gamma", "beta")
    _expect_batch_norm(
        batch_norm_eval, "batch_norm_eval", cases, _bn_eval_reference, _bn_eval_mistakes, names, "eval mode"
    )
    return f"matches nn.BatchNorm2d in eval mode within {ATOL_TEXT} on a batch (eps 1e-5 and 0.5) and on one image"
