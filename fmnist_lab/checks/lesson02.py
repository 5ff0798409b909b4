"""Checks of lesson 02 (convolutions and the plain CNN): output sizes, a convolution by hand,
parameter counts, and the original's `CNN` without batch norm."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks.toolkit import (
    as_number,
    as_scalar,
    call_unmodified,
    diagnose,
    expect_callable,
    expect_int,
    expect_tensor,
    is_close,
    max_difference,
    own_rng,
    seeded,
    state_shapes,
)
from fmnist_lab.models import CNN as ReferenceCNN  # noqa: N811 - the reference, beside the learner's CNN
from fmnist_lab.models import count_parameters

CNN_PARAMETERS = 18_378


# ---------------------------------------------------------------- 2.1 conv_output_size

SIZE_CASES = [  # (n, kernel, padding, stride)
    (28, 3, 0, 1),
    (16, 5, 0, 1),
    (16, 5, 2, 1),
    (8, 5, 2, 1),
    (5, 5, 0, 1),
    (16, 2, 0, 2),
    (28, 3, 1, 2),
    (7, 3, 0, 2),
    (10, 4, 1, 3),
]


def _torch_size(n: int, kernel: int, padding: int, stride: int) -> int:
    """The output width F.conv2d gives: the behaviour the learner's formula must reproduce."""
    x = torch.zeros(1, 1, n, n)
    return F.conv2d(x, torch.zeros(1, 1, kernel, kernel), padding=padding, stride=stride).shape[-1]


@exercise(
    "2.1", "conv_output_size", "floor((n + 2·padding − kernel) / stride) + 1; use // for the floor and return an int"
)
def check_conv_output_size(conv_output_size) -> str:
    expect_callable(conv_output_size, "a function conv_output_size(n, kernel, padding, stride)")
    for n, kernel, padding, stride in SIZE_CASES:
        call = f"conv_output_size({n}, {kernel}, {padding}, {stride})"
        expect_int(conv_output_size(n, kernel, padding, stride), _torch_size(n, kernel, padding, stride), call)
    return (
        f"{len(SIZE_CASES)} cases match the sizes F.conv2d gives, e.g. 16 with 5×5 and padding 2 → 16, "
        "28 with 3×3, padding 1, stride 2 → 14"
    )


# ---------------------------------------------------------------- 2.2 convolve2d


def _conv_cases() -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Seeded (image, kernel, padding) cases: non-square images, asymmetric kernels."""
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(7, 9, generator=g), torch.randn(3, 3, generator=g), 0),
        (torch.randn(7, 9, generator=g), torch.randn(3, 3, generator=g), 1),
        (torch.randn(6, 6, generator=g), torch.randn(5, 5, generator=g), 2),
        (torch.randn(5, 8, generator=g), torch.randn(2, 2, generator=g), 0),
    ]


def _reference_conv(image: torch.Tensor, kernel: torch.Tensor, padding: int) -> torch.Tensor:
    return F.conv2d(image[None, None], kernel[None, None], padding=padding)[0, 0]


@exercise(
    "2.2",
    "convolve2d",
    "pad with zeros, then out[i, j] = (window (i, j) of the padded image × kernel).sum(); "
    "do not flip the kernel (PyTorch's conv2d is a cross-correlation)",
)
def check_convolve2d(convolve2d) -> str:
    expect_callable(convolve2d, "a function convolve2d(image, kernel, padding)")
    tolerance = 1e-4
    for image, kernel, padding in _conv_cases():
        what = (
            f"convolve2d(image {image.shape[0]}×{image.shape[1]}, kernel "
            f"{kernel.shape[0]}×{kernel.shape[1]}, padding={padding})"
        )
        got = call_unmodified(convolve2d, image, kernel, padding, names=("image", "kernel"))
        got = torch.from_numpy(got) if isinstance(got, np.ndarray) else got
        expected = _reference_conv(image, kernel, padding)
        if is_close(expect_tensor(got, what, tuple(expected.shape)), expected, tolerance):
            continue
        flip = "equals the convolution with the kernel flipped; PyTorch's conv2d slides the kernel as it is (no flip)"
        reason = diagnose(got, [(flip, _reference_conv(image, kernel.flip(0, 1), padding))], tolerance)
        raise Mismatch(
            f"{what} {reason}"
            if reason
            else f"{what} differs from F.conv2d by up to {max_difference(got, expected):.3g} (tolerance {tolerance:g})"
        )
    return f"4 cases (paddings 0, 1, 2; kernels 2×2, 3×3, 5×5; non-square images) match F.conv2d within {tolerance:g}"


# ---------------------------------------------------------------- 2.3 parameter counts


@exercise(
    "2.3",
    "count_*_parameters",
    "a convolution has out·in·k·k weights plus one bias per output channel; "
    "a linear layer out·in weights plus out biases",
)
def check_count_parameters(count_conv_parameters, count_linear_parameters=None) -> str:
    expect_callable(count_conv_parameters, "a function count_conv_parameters(in_channels, out_channels, kernel_size)")
    if count_linear_parameters is None:
        raise Mismatch('expected two functions: check("2.3", count_conv_parameters, count_linear_parameters)')
    expect_callable(count_linear_parameters, "a function count_linear_parameters(in_features, out_features)")
    cases = [
        (
            "count_conv_parameters",
            count_conv_parameters,
            (cin, cout, k),
            nn.Conv2d(cin, cout, k),
            cout * cin * k * k,
            "one bias per output channel",
        )
        for cin, cout, k in [(1, 16, 5), (16, 32, 5), (3, 8, 3), (2, 4, 1)]
    ]
    cases += [
        (
            "count_linear_parameters",
            count_linear_parameters,
            (fin, fout),
            nn.Linear(fin, fout),
            fin * fout,
            "one bias per output",
        )
        for fin, fout in [(512, 10), (7, 3)]
    ]
    for name, count, args, layer, weights, bias in cases:
        call, expected = f"{name}({', '.join(map(str, args))})", sum(p.numel() for p in layer.parameters())
        got = as_scalar(count(*args), call)
        if as_number(got, call) == weights:
            raise Mismatch(f"expected {call} = {expected:,}, got {got!r}: the weights alone; add {bias}")
        expect_int(got, expected, call)
    return "6 layers match PyTorch's counts: cnn1 416, cnn2 12,832, fc1 5,130 (and three other shapes)"


# ---------------------------------------------------------------- 2.4 CNN


def _variant(state: dict, x: torch.Tensor, relu: bool = True, pool: str = "max") -> torch.Tensor:
    """The plain CNN with the reference's weights and one thing changed (to name a mistake)."""
    pooling = F.max_pool2d if pool == "max" else F.avg_pool2d
    act = torch.relu if relu else (lambda t: t)
    x = pooling(act(F.conv2d(x, state["cnn1.weight"], state["cnn1.bias"], padding=2)), 2)
    x = pooling(act(F.conv2d(x, state["cnn2.weight"], state["cnn2.bias"], padding=2)), 2)
    return F.linear(torch.flatten(x, 1), state["fc1.weight"], state["fc1.bias"])


def _names(keys: list[str], limit: int = 3) -> str:
    """The first few names, then how many more."""
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@exercise(
    "2.4",
    "CNN",
    "cnn1 = Conv2d(1, 16, 5, padding=2), cnn2 = Conv2d(16, 32, 5, padding=2), "
    "fc1 = Linear(32·4·4, 10); forward: conv → ReLU → max-pool 2, twice, then flatten and fc1",
)
@own_rng
def check_cnn(CNN) -> str:  # noqa: N803 - the learner's class keeps its name
    expect_callable(CNN, "a class CNN(nn.Module)")
    try:
        model = CNN()
    except TypeError as exc:
        raise Mismatch(
            f"CNN() must build the original with no arguments (give every argument a "
            f"default, e.g. out_1=16, out_2=32); it raised TypeError: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise Mismatch(f"expected CNN() to be a torch.nn.Module, got {type(model).__name__}")
    reference = seeded(0, ReferenceCNN)
    wanted, found, count = state_shapes(reference), state_shapes(model), count_parameters(model)

    problems = [
        f"{k} is {found[k]}, the reference's is {wanted[k]}" for k in wanted if k in found and found[k] != wanted[k]
    ]
    missing, extra = [k for k in wanted if k not in found], [k for k in found if k not in wanted]
    if missing:
        problems.append(
            f"no parameter named {_names(missing)} (yours: {_names(list(found)) or 'none'}); "
            f"name the layers cnn1, cnn2 and fc1 like the original"
        )
    if extra:
        problems.append(f"unexpected {_names(extra)}: the plain CNN has only cnn1, cnn2 and fc1 (no batch norm)")
    if count != CNN_PARAMETERS:
        raise Mismatch(
            f"expected {CNN_PARAMETERS:,} trainable parameters, found {count:,}"
            + (f": {'; '.join(problems)}" if problems else "")
        )
    if problems:
        raise Mismatch(f"{CNN_PARAMETERS:,} parameters, but {'; '.join(problems)}")

    x, atol = torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 1e-5
    with torch.no_grad():
        expect_tensor(model(x), "CNN()(x) for x of shape (100, 1, 16, 16)", (100, 10))
        model.load_state_dict(state := reference.state_dict())
        for batch in (x, x[:7]):
            got = expect_tensor(model(batch), f"the output for a batch of {len(batch)}", (len(batch), 10))
            if is_close(got, expected := reference(batch), atol):
                continue
            softmax = (
                "are the (log-)softmax of the reference's: return the raw scores (logits), "
                "CrossEntropyLoss applies the softmax itself"
            )
            reason = diagnose(
                got,
                [
                    ("equal a network without the ReLUs", _variant(state, batch, relu=False)),
                    ("equal average pooling instead of max pooling", _variant(state, batch, pool="avg")),
                    (softmax, expected.softmax(dim=1)),
                    (softmax, expected.log_softmax(1)),
                ],
                atol,
            )
            raise Mismatch(
                f"with the reference's weights loaded, your outputs {reason}"
                if reason
                else f"with the reference's weights loaded, your outputs for a batch of {len(batch)} differ "
                f"by up to {max_difference(got, expected):.3g} (tolerance {atol:g})"
            )
    return (
        f"{CNN_PARAMETERS:,} parameters, output (100, 10), matches the reference with its weights loaded (within 1e-5)"
    )
