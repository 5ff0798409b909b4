"""The checks of lesson 02: reference answers pass, other correct answers pass, plausible mistakes fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_cases import fails, passes
from torch import nn

from fmnist_lab import models
from fmnist_lab.checks import run_check

# ---------------------------------------------------------------- 2.1 conv_output_size


def conv_output_size(n, kernel, padding=0, stride=1):
    return (n + 2 * padding - kernel) // stride + 1


def test_2_1_reference_passes():
    passes("2.1", conv_output_size, fragment="9 cases match the sizes F.conv2d gives")


def test_2_1_written_differently_passes():
    def other(n, k, p, s):
        return math.floor((n + 2 * p - k) / s) + 1

    assert run_check("2.1", other).status == "passed"
    # by counting the positions the kernel can take
    assert run_check("2.1", lambda n, k, p, s: len(range(0, n + 2 * p - k + 1, s))).status == "passed"


MISTAKES_2_1 = [
    (lambda n, k, p, s: (n + 2 * p - k) / s + 1, "conv_output_size(28, 3, 0, 1) returned 26.0"),
    (
        lambda n, k, p, s: (n + p - k) // s + 1,
        "expected conv_output_size(16, 5, 2, 1) = 16, got 14: you added the padding once",
    ),
    (
        lambda n, k, p, s: (n + 2 * p - k) // s,
        "expected conv_output_size(28, 3, 0, 1) = 26, got 25: the + 1 is missing",
    ),
    (lambda n, k, p, s: (n - k) // s + 1, "= 16, got 12: you ignored the padding"),
    (
        lambda n, k, p, s: n + 2 * p - k + 1,
        "expected conv_output_size(16, 2, 0, 2) = 8, got 15: you ignored the stride",
    ),
    (lambda n, k, p, s: math.ceil((n + 2 * p - k) / s) + 1, "= 14, got 15: you rounded up"),
    (lambda n, k, p, s: (n + 2 * p - k + 1) // s, "divide (n + 2·padding − kernel) by the stride, then add 1"),
    (lambda n, k, p, s: float((n + 2 * p - k) // s + 1), "a float; a size or a count is a whole number: return an int"),
    (lambda n, k, p, s: np.floor((n + 2 * p - k) / s) + 1, "returned 26.0, a float"),
    (
        lambda n, k, p, s: F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), padding=p, stride=s).shape[-1],
        "runs a convolution (F.conv2d or nn.Conv2d) to measure the size",
    ),
    (lambda n, k, p, s: str((n + 2 * p - k) // s + 1), "to be a number, got str"),
]


# ---------------------------------------------------------------- 2.2 convolve2d


def convolve2d(image, kernel, padding=0):
    padded = F.pad(image, (padding, padding, padding, padding))
    k = kernel.shape[0]
    height, width = padded.shape[0] - k + 1, padded.shape[1] - k + 1
    out = torch.zeros(height, width)
    for i in range(height):
        for j in range(width):
            out[i, j] = (padded[i : i + k, j : j + k] * kernel).sum()
    return out


def test_2_2_reference_passes():
    passes("2.2", convolve2d, fragment="match F.conv2d within 0.0001")


def test_2_2_unfold_and_numpy_pass():
    def with_unfold(image, kernel, padding=0):
        k = kernel.shape[-1]
        padded = F.pad(image, [padding] * 4)
        windows = padded.unfold(0, k, 1).unfold(1, k, 1)  # (H', W', k, k)
        return (windows * kernel).sum(dim=(-1, -2))

    def with_numpy(image, kernel, padding=0):
        x = np.pad(image.numpy().astype(np.float64), padding)
        w = kernel.numpy().astype(np.float64)
        k = w.shape[0]
        return np.array(
            [
                [np.sum(x[i : i + k, j : j + k] * w) for j in range(x.shape[1] - k + 1)]
                for i in range(x.shape[0] - k + 1)
            ]
        )

    assert run_check("2.2", with_unfold).status == "passed"
    assert run_check("2.2", with_numpy).status == "passed"


def convolve2d_square(image, kernel, padding=0):
    """Takes the width from the height: right only for square images."""
    padded = F.pad(image, (padding, padding, padding, padding))
    k, size = kernel.shape[0], padded.shape[0] - kernel.shape[0] + 1
    return torch.stack(
        [torch.stack([(padded[i : i + k, j : j + k] * kernel).sum() for j in range(size)]) for i in range(size)]
    )


def convolve2d_hard_coded(image, kernel, padding=0):
    """Written for the first case only: a 7×9 image and a 3×3 kernel."""
    padded = F.pad(image, (padding, padding, padding, padding))
    out = torch.zeros(7 + 2 * padding - 2, 9 + 2 * padding - 2)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (padded[i : i + 3, j : j + 3] * kernel).sum()
    return out


def convolve2d_transposing_in_place(image, kernel, padding=0):
    kernel.t_()  # transposed in the caller's tensor…
    return convolve2d(image, kernel.T, padding)  # …and back for the computation


MISTAKES_2_2 = [
    (
        lambda image, kernel, padding=0: convolve2d(image, kernel.flip(0, 1), padding),
        "equals the convolution with the kernel flipped",
    ),
    (
        lambda image, kernel, padding=0: convolve2d(image, kernel.T, padding),
        "equals the convolution with the kernel transposed",
    ),
    (
        lambda image, kernel, padding=0: convolve2d(image, kernel, padding) / kernel.numel(),
        "is the mean of each window × kernel, not the sum",
    ),
    (lambda image, kernel, padding=0: convolve2d(image, kernel, 0), "padding=1) of shape (7, 9), got (5, 7)"),
    (lambda image, kernel, padding=0: convolve2d(image, kernel, padding) + 1, "differs from F.conv2d by up to 1"),
    (lambda image, kernel, padding=0: convolve2d(image, kernel, padding).tolist(), "to be a torch.Tensor, got list"),
    (
        lambda image, kernel, padding=0: F.conv2d(image[None, None], kernel[None, None], padding=padding)[0, 0],
        "calls F.conv2d (or an nn.Conv2d layer): write the sliding window yourself",
    ),
    (convolve2d_square, "of shape (5, 7), got (5, 5): images need not be square"),
    (convolve2d_hard_coded, "works on the first image (7×9, kernel 3×3) but fails on image 6×6, kernel 5×5"),
    (convolve2d_transposing_in_place, "changed its input kernel in place"),
    (lambda image, kernel, padding=0: convolve2d(image, kernel, padding).log(), "NaN"),
]


# ---------------------------------------------------------------- 2.3 count_*_parameters


def count_conv_parameters(in_channels, out_channels, kernel_size):
    return out_channels * in_channels * kernel_size * kernel_size + out_channels


def count_linear_parameters(in_features, out_features):
    return out_features * in_features + out_features


def test_2_3_reference_passes():
    passes("2.3", count_conv_parameters, count_linear_parameters, fragment="cnn1 416, cnn2 12,832, fc1 5,130")


def test_2_3_written_differently_passes():
    def conv(cin, cout, k):
        return math.prod((cout, cin, k, k)) + cout

    def linear(fin, fout):
        return torch.tensor(fout * (fin + 1))  # a one-element tensor counts as a number

    def conv_numpy(cin, cout, k):
        return np.int64(cout * (cin * k**2 + 1))  # a NumPy integer is a whole number too

    for answers in ((conv, linear), (conv_numpy, count_linear_parameters)):
        passes("2.3", *answers)


MISTAKES_2_3 = [
    (
        (lambda cin, cout, k: cin * cout * k * k, count_linear_parameters),
        "count_conv_parameters(1, 16, 5) = 416, got 400: the weights alone",
    ),
    (
        (count_conv_parameters, lambda fin, fout: fin * fout),
        "count_linear_parameters(512, 10) = 5,130, got 5120: the weights alone",
    ),
    (
        (lambda cin, cout, k: cout * cin * k * k + cin, count_linear_parameters),
        "= 416, got 401: one bias per output channel, not per input channel",
    ),
    (
        (count_conv_parameters, lambda fin, fout: fin * fout + fin),
        "= 5,130, got 5632: one bias per output feature, not per input feature",
    ),
    (
        (lambda cin, cout, k: cout * k * k + cout, count_linear_parameters),
        "expected count_conv_parameters(16, 32, 5) = 12,832, got 832: one k×k kernel for each pair",
    ),
    (
        (lambda cin, cout, k: cout * cin * k + cout, count_linear_parameters),
        "= 416, got 96: a kernel holds k·k weights, not k",
    ),
    ((count_conv_parameters,), "expected two functions"),
    ((lambda cin, cout, k: (cout * cin * k * k + cout) * 1.0, count_linear_parameters), "returned 416.0, a float"),
    (
        (lambda cin, cout, k: sum(p.numel() for p in nn.Conv2d(cin, cout, k).parameters()), count_linear_parameters),
        "builds the layer to count its parameters: use the formula instead",
    ),
    (
        (count_conv_parameters, lambda fin, fout: sum(p.numel() for p in nn.Linear(fin, fout).parameters())),
        "builds the layer to count its parameters",
    ),
    ((count_linear_parameters, count_conv_parameters), "pass the convolution's function first"),
]


# ---------------------------------------------------------------- 2.4 CNN


class CNN(nn.Module):
    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, out_1, kernel_size=5, padding=2)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(out_1, out_2, kernel_size=5, stride=1, padding=2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(out_2 * 4 * 4, number_of_classes)

    def forward(self, x):
        x = self.maxpool1(torch.relu(self.cnn1(x)))
        x = self.maxpool2(torch.relu(self.cnn2(x)))
        return self.fc1(x.view(x.size(0), -1))


class Functional(nn.Module):
    """Correct, written differently: pooling before ReLU (they commute), functional ops, nn.Flatten."""

    def __init__(self, out_1: int = 16, out_2: int = 32, number_of_classes: int = 10):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, out_1, 5, padding="same")
        self.cnn2 = nn.Conv2d(out_1, out_2, (5, 5), padding=(2, 2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * out_2, number_of_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.cnn1(x), 2))
        x = nn.ReLU()(F.max_pool2d(self.cnn2(x), kernel_size=2, stride=2))
        return self.fc1(self.flatten(x))


def test_2_4_reference_passes():
    result = passes("2.4", CNN)
    assert result.message == (
        "18,378 parameters, output (100, 10), matches the reference with its weights loaded (within 1e-5)"
    )


@pytest.mark.parametrize("answer", [models.CNN, Functional])
def test_2_4_written_differently_passes(answer):
    passes("2.4", answer)


class NoPadding(CNN):
    def __init__(self):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, 16, 5)
        self.cnn2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(32, 10)


class ThreeByThree(CNN):
    def __init__(self):
        super().__init__()
        self.cnn2 = nn.Conv2d(16, 32, 3, padding=1)


class Sequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        return self.net(x)


class NoReLU(CNN):
    def forward(self, x):
        x = self.maxpool2(self.cnn2(self.maxpool1(self.cnn1(x))))
        return self.fc1(torch.flatten(x, 1))


class Softmax(CNN):
    def forward(self, x):
        return super().forward(x).softmax(dim=1)


class AveragePooling(CNN):
    def forward(self, x):
        x = F.avg_pool2d(torch.relu(self.cnn1(x)), 2)
        x = F.avg_pool2d(torch.relu(self.cnn2(x)), 2)
        return self.fc1(torch.flatten(x, 1))


class FixedBatch(CNN):
    def forward(self, x):
        x = self.maxpool2(torch.relu(self.cnn2(self.maxpool1(torch.relu(self.cnn1(x))))))
        return self.fc1(x.reshape(100, -1))


class Squeezed(CNN):
    def forward(self, x):
        return super().forward(x).squeeze()


class NeedsArguments(CNN):
    def __init__(self, out_1, out_2):
        super().__init__(out_1, out_2)


class HardCoded(CNN):
    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__()


class NoGrad(CNN):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


class SwitchesToEval(CNN):
    def forward(self, x):
        self.eval()  # "no dropout here anyway"
        return super().forward(x)


class Float32Only(CNN):
    def forward(self, x):
        return super().forward(x.to(torch.float32))


MISTAKES_2_4 = [
    (models.CNNBatch, "expected 18,378 trainable parameters, found 18,494"),
    (NoPadding, "found 13,578: fc1.weight is (10, 32), the reference's is (10, 512)"),
    (ThreeByThree, "cnn2.weight is (32, 16, 3, 3), the reference's is (32, 16, 5, 5)"),
    (Sequential, "no parameter named cnn1.weight, cnn1.bias, cnn2.weight and 3 more"),
    (NoReLU, "your outputs equal a network without the ReLUs"),
    (Softmax, "return the raw scores (logits)"),
    (AveragePooling, "equal average pooling instead of max pooling"),
    (FixedBatch, "your model works on 100 images but fails on 7"),
    (Squeezed, "for one image your model returns shape (10,), expected (1, 10)"),
    (NeedsArguments, "CNN() must build the original with no arguments"),
    (lambda: "a model", "expected CNN() to be an nn.Module, got str"),
    (CNN(), 'got an instance of CNN: pass the class itself, check("2.4", CNN)'),
    (HardCoded, "CNN(out_1=8, out_2=12, number_of_classes=7) gives cnn1.weight the shape (16, 1, 5, 5)"),
    (NoGrad, "no gradient flows from your output back to the weights"),
    (SwitchesToEval, "your forward in training mode left SwitchesToEval, cnn1, maxpool1 in eval mode"),
    (Float32Only, "your model fails once the model and its input are moved to float64 on another device"),
]


def test_2_4_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert run_check("2.4", CNN).status == "passed"
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- every exercise: mistakes name their cause

MISTAKES = [
    *(("2.1", (answer,), fragment) for answer, fragment in MISTAKES_2_1),
    *(("2.2", (answer,), fragment) for answer, fragment in MISTAKES_2_2),
    *(("2.3", answers, fragment) for answers, fragment in MISTAKES_2_3),
    *(("2.4", (answer,), fragment) for answer, fragment in MISTAKES_2_4),
]


@pytest.mark.parametrize("exercise_id, answers, fragment", MISTAKES)
def test_mistakes_fail_naming_their_cause(exercise_id, answers, fragment):
    fails(exercise_id, *answers, fragment=fragment)
