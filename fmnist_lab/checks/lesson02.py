"""Checks of lesson 02 (convolutions and the plain CNN): output sizes, a convolution by hand,
parameter counts, and the original's `CNN` without batch norm.

Decided: 2.1 and 2.3 return whole numbers (a float such as 26.0 fails: a size or a count is an int) and
must not let PyTorch do the work (no F.conv2d in 2.1, no layer built in 2.3: the exercises are the
formulas). 2.2 is a by-hand convolution: F.conv2d and nn.Conv2d are ruled out, a NumPy or float64 result
is accepted, and gradients, dtype and device are not required (the lesson's loop writes into a new CPU
tensor). 2.4 is a layer of a network: other batch sizes, the constructor arguments, the mode, the
gradients, float64 and another device are all checked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk
from fmnist_lab.models import CNN as ReferenceCNN  # noqa: N811 - the reference, beside the learner's CNN
from fmnist_lab.models import count_parameters

CNN_PARAMETERS = 18_378


# ---------------------------------------------------------------- 2.1 conv_output_size

SIZE_CASES = [(28, 3, 0, 1), (16, 5, 0, 1), (16, 5, 2, 1), (8, 5, 2, 1), (5, 5, 0, 1)]  # (n, kernel, padding, stride)
SIZE_CASES += [(16, 2, 0, 2), (28, 3, 1, 2), (7, 3, 0, 2), (10, 4, 1, 3)]  # strided: the floor division shows


def _torch_size(n: int, kernel: int, padding: int, stride: int) -> int:
    """The output width F.conv2d gives: the behaviour the learner's formula must reproduce."""
    x = torch.zeros(1, 1, n, n)
    return F.conv2d(x, torch.zeros(1, 1, kernel, kernel), padding=padding, stride=stride).shape[-1]


SIZE_MISTAKES = [  # (explanation, the wrong formula)
    ("you ignored the padding: it adds p zeros on each side, so n + 2·padding", lambda n, k, p, s: (n - k) // s + 1),
    ("you added the padding once; it goes on both sides: n + 2·padding", lambda n, k, p, s: (n + p - k) // s + 1),
    ("you ignored the stride: divide (n + 2·padding − kernel) by it", lambda n, k, p, s: n + 2 * p - k + 1),
    (
        "you rounded up; a last step that does not fit is not taken, so round down (//)",
        lambda n, k, p, s: -(-(n + 2 * p - k) // s) + 1,
    ),
    ("divide (n + 2·padding − kernel) by the stride, then add 1", lambda n, k, p, s: (n + 2 * p - k + 1) // s),
    ("the + 1 is missing: a kernel as wide as the input still fits once", lambda n, k, p, s: (n + 2 * p - k) // s),
]


@exercise(
    "2.1", "conv_output_size", "floor((n + 2·padding − kernel) / stride) + 1; use // for the floor and return an int"
)
def check_conv_output_size(conv_output_size) -> str:
    """Nine (n, kernel, padding, stride) cases against the sizes F.conv2d gives; the usual slips named."""
    tk.expect_function(conv_output_size, "a function conv_output_size(n, kernel, padding, stride)")
    why = "your function runs a convolution (F.conv2d or nn.Conv2d) to measure the size: use the formula instead"
    for n, kernel, padding, stride in SIZE_CASES:
        call = f"conv_output_size({n}, {kernel}, {padding}, {stride})"
        expected = _torch_size(n, kernel, padding, stride)
        with tk.forbid_call(F, "conv2d", why):
            got = conv_output_size(n, kernel, padding, stride)
        slips = [(explanation, formula(n, kernel, padding, stride)) for explanation, formula in SIZE_MISTAKES]
        _expect_count(got, expected, call, slips)
    return (
        f"{len(SIZE_CASES)} cases match the sizes F.conv2d gives, e.g. 16 with 5×5 and padding 2 → 16, "
        "28 with 3×3, padding 1, stride 2 → 14"
    )


def _expect_count(got, expected: int, call: str, mistakes: list[tuple[str, int]]) -> None:
    """A whole number equal to `expected`; a value that one of the usual slips gives is named (2.1 and 2.3)."""
    if tk.as_number(got, call) != expected and (reason := tk.diagnose(tk.as_number(got, call), mistakes, 0)):
        raise Mismatch(f"expected {call} = {expected:,}, got {tk.as_scalar(got, call)!r}: {reason}")
    tk.expect_int(got, expected, call)


# ---------------------------------------------------------------- 2.2 convolve2d


def _conv_cases() -> list[tuple[Tensor, Tensor, int]]:
    """Seeded (image, kernel, padding) cases: non-square images, asymmetric kernels."""
    g = torch.Generator().manual_seed(2)
    shapes = [((7, 9), 3, 0), ((7, 9), 3, 1), ((6, 6), 5, 2), ((5, 8), 2, 0)]  # (image, kernel side, padding)
    return [(torch.randn(image, generator=g), torch.randn(k, k, generator=g), padding) for image, k, padding in shapes]


def _reference_conv(image: Tensor, kernel: Tensor, padding: int) -> Tensor:
    return F.conv2d(image[None, None], kernel[None, None], padding=padding)[0, 0]


FLIPPED = "equals the convolution with the kernel flipped; PyTorch's conv2d slides the kernel as it is (no flip)"
TRANSPOSED = "equals the convolution with the kernel transposed: use kernel as it is"
NOT_SQUARE = "images need not be square; take the output's height and width from the padded image's two sides"


@exercise(
    "2.2",
    "convolve2d",
    "pad with zeros, then out[i, j] = (window (i, j) of the padded image × kernel).sum(); "
    "do not flip the kernel (PyTorch's conv2d is a cross-correlation)",
)
def check_convolve2d(convolve2d) -> str:
    """Four seeded cases (non-square images, paddings 0–2, kernels 2×2–5×5) against F.conv2d."""
    tk.expect_function(convolve2d, "a function convolve2d(image, kernel, padding)")
    tolerance = 1e-4
    why = "your function calls F.conv2d (or an nn.Conv2d layer): write the sliding window yourself"
    cases = _conv_cases()
    first = "the first image (7×9, kernel 3×3)"
    for image, kernel, padding in cases:
        sizes = "image {}×{}, kernel {}×{}, padding={}".format(*image.shape, *kernel.shape, padding)
        what, where = f"convolve2d({sizes})", first if image is cases[0][0] else sizes
        with tk.forbid_call(F, "conv2d", why), tk.other_input(first, where):
            got = tk.call_unmodified(convolve2d, image, kernel, padding, names=("image", "kernel"))
        got = torch.from_numpy(got) if isinstance(got, np.ndarray) else got
        expected = _reference_conv(image, kernel, padding)
        square = isinstance(got, Tensor) and got.ndim == 2 and got.shape[0] == got.shape[1]
        tk.expect_tensor(got, what, tuple(expected.shape), why=NOT_SQUARE if square else "")
        tk.expect_finite(got, what)
        mistakes = [
            (FLIPPED, _reference_conv(image, kernel.flip(0, 1), padding)),
            (TRANSPOSED, _reference_conv(image, kernel.T, padding)),
            ("is the mean of each window × kernel, not the sum: use .sum()", expected / kernel.numel()),
        ]
        gap = f"{what} differs from F.conv2d by up to {tk.max_difference(got, expected):.3g} (tolerance {tolerance:g})"
        tk.expect_same(got, expected, what, mistakes, atol=tolerance, otherwise=gap)
    return f"4 cases (paddings 0, 1, 2; kernels 2×2, 3×3, 5×5; non-square images) match F.conv2d within {tolerance:g}"


# ---------------------------------------------------------------- 2.3 parameter counts


CONV_LAYERS = [(1, 16, 5), (16, 32, 5), (3, 8, 3), (2, 4, 1)]  # (in_channels, out_channels, kernel_size)
LINEAR_LAYERS = [(512, 10), (7, 3)]  # (in_features, out_features)


def _count_mistakes(kind: type, *args: int) -> list[tuple[str, int]]:
    """The counts the usual slips give for a layer of this kind and these sizes."""
    if kind is nn.Linear:
        fin, fout = args
        return [
            ("the weights alone; add one bias per output", fout * fin),
            ("one bias per output feature, not per input feature", fout * fin + fin),
        ]
    cin, cout, k = args
    return [
        ("the weights alone; add one bias per output channel", cout * cin * k * k),
        ("one bias per output channel, not per input channel", cout * cin * k * k + cin),
        ("one k×k kernel for each pair of input and output channel: out·in·k·k", cout * k * k + cout),
        ("a kernel holds k·k weights, not k", cout * cin * k + cout),
    ]


@exercise(
    "2.3",
    "count_*_parameters",
    "a convolution has out·in·k·k weights plus one bias per output channel; "
    "a linear layer out·in weights plus out biases",
)
def check_count_parameters(count_conv_parameters, count_linear_parameters=None) -> str:
    """Six layers' counts against the parameters PyTorch creates; building the layer is ruled out."""
    tk.expect_function(
        count_conv_parameters, "a function count_conv_parameters(in_channels, out_channels, kernel_size)"
    )
    if count_linear_parameters is None:
        raise Mismatch('expected two functions: check("2.3", count_conv_parameters, count_linear_parameters)')
    tk.expect_function(count_linear_parameters, "a function count_linear_parameters(in_features, out_features)")
    layers = [("count_conv_parameters", count_conv_parameters, nn.Conv2d, args) for args in CONV_LAYERS]
    layers += [("count_linear_parameters", count_linear_parameters, nn.Linear, args) for args in LINEAR_LAYERS]
    why = "your function builds the layer to count its parameters: use the formula instead"
    for name, count, kind, args in layers:
        layer, call = kind(*args), f"{name}({', '.join(map(str, args))})"
        expected = sum(p.numel() for p in layer.parameters())
        try:
            with tk.forbid_call(nn.Conv2d, "__init__", why), tk.forbid_call(nn.Linear, "__init__", why):
                got = tk.as_scalar(count(*args), call)
        except TypeError as exc:
            raise Mismatch(
                f"{call} raised {tk.first_line(exc, 80)}: pass the convolution's function first, "
                'check("2.3", count_conv_parameters, count_linear_parameters)'
            ) from None
        _expect_count(got, expected, call, _count_mistakes(kind, *args))
    return "6 layers match PyTorch's counts: cnn1 416, cnn2 12,832, fc1 5,130 (and three other shapes)"


# ---------------------------------------------------------------- 2.4 CNN


def _variant(state: dict, x: Tensor, act: Callable = torch.relu, pool: Callable = F.max_pool2d) -> Tensor:
    """The plain CNN with the reference's weights and one thing changed (to name a mistake)."""
    x = pool(act(F.conv2d(x, state["cnn1.weight"], state["cnn1.bias"], padding=2)), 2)
    x = pool(act(F.conv2d(x, state["cnn2.weight"], state["cnn2.bias"], padding=2)), 2)
    return F.linear(torch.flatten(x, 1), state["fc1.weight"], state["fc1.bias"])


def _names(keys: list[str], limit: int = 3) -> str:
    """The first few names, then how many more."""
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


LOADED = "with the reference's weights loaded, "
SOFTMAX = (
    "are the (log-)softmax of the reference's: return the raw scores (logits), "
    "CrossEntropyLoss applies the softmax itself"
)


@exercise(
    "2.4",
    "CNN",
    "cnn1 = Conv2d(1, 16, 5, padding=2), cnn2 = Conv2d(16, 32, 5, padding=2), "
    "fc1 = Linear(32·4·4, 10); forward: conv → ReLU → max-pool 2, twice, then flatten and fc1",
)
def check_cnn(CNN) -> str:  # noqa: N803 - the learner's class keeps its name
    """Parameters and names, outputs with the reference's weights on batches of 100, 7 and 1, gradients,
    float64 on another device (the `meta` device stands in for a GPU) and the constructor arguments."""
    tk.expect_class(CNN, "a class CNN(nn.Module)", 'check("2.4", CNN)')
    model = tk.build_module(
        CNN,
        "CNN()",
        "CNN() must build the original with no arguments (give every argument a default, e.g. out_1=16, out_2=32)",
    )
    reference = tk.seeded(0, ReferenceCNN)
    _expect_layers(model, reference)
    x, atol = torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 1e-5
    with torch.no_grad():
        tk.expect_tensor(model(x), "CNN()(x) for x of shape (100, 1, 16, 16)", (100, 10))
        model.load_state_dict(state := reference.state_dict())
        for got in tk.forward_batches(model.train(), x, (100, 7, 1), 10):
            batch = x[: len(got)]
            expected = reference(batch)
            mistakes = [
                ("equal a network without the ReLUs", _variant(state, batch, act=lambda t: t)),
                ("equal average pooling instead of max pooling", _variant(state, batch, pool=F.avg_pool2d)),
                (SOFTMAX, expected.softmax(dim=1)),
                (SOFTMAX, expected.log_softmax(1)),
            ]
            what = f"your outputs for a batch of {len(batch)}"
            gap = f"{LOADED}{what} differ by up to {tk.max_difference(got, expected):.3g} (tolerance {atol:g})"
            tk.expect_same(got, expected, what, mistakes, atol=atol, found=LOADED + "your outputs ", otherwise=gap)
    tk.expect_model_gradients(model, reference, x[:7], "your output")
    tk.expect_model_device_and_dtype(model, x[:7], "your model")
    tk.expect_constructor_arguments(CNN, "CNN", ReferenceCNN)
    return (
        f"{CNN_PARAMETERS:,} parameters, output (100, 10), matches the reference with its weights loaded (within 1e-5)"
    )


def _expect_layers(model: nn.Module, reference: nn.Module) -> None:
    """The original's parameter count, layer names and shapes; every difference named."""
    wanted, found, count = tk.state_shapes(reference), tk.state_shapes(model), count_parameters(model)
    problems = [
        f"{k} is {found[k]}, the reference's is {wanted[k]}" for k in wanted if k in found and found[k] != wanted[k]
    ]
    if missing := [k for k in wanted if k not in found]:
        problems.append(
            f"no parameter named {_names(missing)} (yours: {_names(list(found)) or 'none'}); "
            f"name the layers cnn1, cnn2 and fc1 like the original"
        )
    if extra := [k for k in found if k not in wanted]:
        problems.append(f"unexpected {_names(extra)}: the plain CNN has only cnn1, cnn2 and fc1 (no batch norm)")
    if count != CNN_PARAMETERS:
        raise Mismatch(
            f"expected {CNN_PARAMETERS:,} trainable parameters, found {count:,}"
            + (f": {'; '.join(problems)}" if problems else "")
        )
    if problems:
        raise Mismatch(f"{CNN_PARAMETERS:,} parameters, but {'; '.join(problems)}")
