"""The checks of lesson 02: reference answers pass, other correct answers pass, plausible mistakes fail."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_lab import models
from fmnist_lab.checks import run_check

# ---------------------------------------------------------------- 2.1 conv_output_size


def conv_output_size(n, kernel, padding=0, stride=1):
    return (n + 2 * padding - kernel) // stride + 1


def test_2_1_reference_passes():
    result = run_check("2.1", conv_output_size)
    assert result.status == "passed", result.message
    assert "9 cases match the sizes F.conv2d gives" in result.message


def test_2_1_written_differently_passes():
    def other(n, k, p, s):
        return math.floor((n + 2 * p - k) / s) + 1

    assert run_check("2.1", other).status == "passed"
    # by counting the positions the kernel can take
    assert run_check("2.1", lambda n, k, p, s: len(range(0, n + 2 * p - k + 1, s))).status == "passed"


def test_2_1_no_floor_fails():
    result = run_check("2.1", lambda n, k, p, s: (n + 2 * p - k) / s + 1)
    assert result.status == "failed"
    assert "conv_output_size(28, 3, 0, 1) returned 26.0" in result.message
    assert "return an int" in result.message


def test_2_1_padding_once_fails():
    result = run_check("2.1", lambda n, k, p, s: (n + p - k) // s + 1)
    assert result.status == "failed"
    assert "expected conv_output_size(16, 5, 2, 1) = 16, got 14" in result.message


def test_2_1_missing_plus_one_fails():
    result = run_check("2.1", lambda n, k, p, s: (n + 2 * p - k) // s)
    assert result.status == "failed"
    assert "expected conv_output_size(28, 3, 0, 1) = 26, got 25" in result.message


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
    result = run_check("2.2", convolve2d)
    assert result.status == "passed", result.message
    assert "match F.conv2d within 0.0001" in result.message


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


def test_2_2_flipped_kernel_fails():
    result = run_check("2.2", lambda image, kernel, padding=0: convolve2d(image, kernel.flip(0, 1), padding))
    assert result.status == "failed"
    assert "equals the convolution with the kernel flipped" in result.message


def test_2_2_padding_ignored_fails():
    result = run_check("2.2", lambda image, kernel, padding=0: convolve2d(image, kernel, 0))
    assert result.status == "failed"
    assert "padding=1) of shape (7, 9), got (5, 7)" in result.message


def test_2_2_wrong_values_and_type_fail():
    result = run_check("2.2", lambda image, kernel, padding=0: convolve2d(image, kernel, padding) + 1)
    assert result.status == "failed"
    assert "differs from F.conv2d by up to 1" in result.message
    result = run_check("2.2", lambda image, kernel, padding=0: convolve2d(image, kernel, padding).tolist())
    assert result.status == "failed"
    assert "to be a torch.Tensor, got list" in result.message


# ---------------------------------------------------------------- 2.3 count_*_parameters


def count_conv_parameters(in_channels, out_channels, kernel_size):
    return out_channels * in_channels * kernel_size * kernel_size + out_channels


def count_linear_parameters(in_features, out_features):
    return out_features * in_features + out_features


def test_2_3_reference_passes():
    result = run_check("2.3", count_conv_parameters, count_linear_parameters)
    assert result.status == "passed", result.message
    assert "cnn1 416, cnn2 12,832, fc1 5,130" in result.message


def test_2_3_written_differently_passes():
    def conv(cin, cout, k):
        return sum(p.numel() for p in nn.Conv2d(cin, cout, k).parameters())

    def linear(fin, fout):
        return torch.tensor(fout * (fin + 1))  # a one-element tensor counts as a number

    assert run_check("2.3", conv, linear).status == "passed"


def test_2_3_forgotten_bias_fails():
    result = run_check("2.3", lambda cin, cout, k: cin * cout * k * k, count_linear_parameters)
    assert result.status == "failed"
    assert "count_conv_parameters(1, 16, 5) = 416, got 400: the weights alone" in result.message
    result = run_check("2.3", count_conv_parameters, lambda fin, fout: fin * fout)
    assert result.status == "failed"
    assert "count_linear_parameters(512, 10) = 5,130, got 5120" in result.message


def test_2_3_bias_per_input_channel_fails():
    result = run_check("2.3", lambda cin, cout, k: cout * cin * k * k + cin, count_linear_parameters)
    assert result.status == "failed"
    assert "expected count_conv_parameters(1, 16, 5) = 416, got 401" in result.message


def test_2_3_one_function_fails():
    result = run_check("2.3", count_conv_parameters)
    assert result.status == "failed"
    assert "expected two functions" in result.message


# ---------------------------------------------------------------- 2.4 CNN


class CNN(nn.Module):
    def __init__(self, out_1=16, out_2=32):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, out_1, kernel_size=5, padding=2)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(out_1, out_2, kernel_size=5, stride=1, padding=2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(out_2 * 4 * 4, 10)

    def forward(self, x):
        x = self.maxpool1(torch.relu(self.cnn1(x)))
        x = self.maxpool2(torch.relu(self.cnn2(x)))
        return self.fc1(x.view(x.size(0), -1))


def test_2_4_reference_passes():
    result = run_check("2.4", CNN)
    assert result.status == "passed", result.message
    assert result.message == (
        "18,378 parameters, output (100, 10), matches the reference with its weights loaded (within 1e-5)"
    )
    assert run_check("2.4", models.CNN).status == "passed"


def test_2_4_written_differently_passes():
    class Functional(nn.Module):
        """Pooling before ReLU (they commute), functional ops, nn.Flatten: still the same network."""

        def __init__(self):
            super().__init__()
            self.cnn1 = nn.Conv2d(1, 16, 5, padding="same")
            self.cnn2 = nn.Conv2d(16, 32, (5, 5), padding=(2, 2))
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(512, 10)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.cnn1(x), 2))
            x = nn.ReLU()(F.max_pool2d(self.cnn2(x), kernel_size=2, stride=2))
            return self.fc1(self.flatten(x))

    assert run_check("2.4", Functional).status == "passed"


def test_2_4_copy_of_cnn_batch_fails():
    result = run_check("2.4", models.CNNBatch)
    assert result.status == "failed"
    assert "expected 18,378 trainable parameters, found 18,494" in result.message
    assert "unexpected conv1_bn.weight" in result.message


class NoPadding(CNN):
    def __init__(self):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, 16, 5)
        self.cnn2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(32, 10)


def test_2_4_wrong_shapes_fail():
    result = run_check("2.4", NoPadding)
    assert result.status == "failed"
    assert "found 13,578: fc1.weight is (10, 32), the reference's is (10, 512)" in result.message

    class ThreeByThree(CNN):
        def __init__(self):
            super().__init__()
            self.cnn2 = nn.Conv2d(16, 32, 3, padding=1)

    result = run_check("2.4", ThreeByThree)
    assert result.status == "failed"
    assert "cnn2.weight is (32, 16, 3, 3), the reference's is (32, 16, 5, 5)" in result.message


def test_2_4_other_names_fail():
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

    result = run_check("2.4", Sequential)
    assert result.status == "failed"
    assert "no parameter named cnn1.weight, cnn1.bias, cnn2.weight and 3 more" in result.message
    assert "name the layers cnn1, cnn2 and fc1" in result.message


def test_2_4_wrong_behaviour_fails():
    class NoReLU(CNN):
        def forward(self, x):
            x = self.maxpool2(self.cnn2(self.maxpool1(self.cnn1(x))))
            return self.fc1(torch.flatten(x, 1))

    class Softmax(CNN):
        def forward(self, x):
            return super().forward(x).softmax(dim=1)

    class FixedBatch(CNN):
        def forward(self, x):
            x = self.maxpool2(torch.relu(self.cnn2(self.maxpool1(torch.relu(self.cnn1(x))))))
            return self.fc1(x.reshape(100, -1))

    result = run_check("2.4", NoReLU)
    assert result.status == "failed"
    assert "your outputs equal a network without the ReLUs" in result.message
    result = run_check("2.4", Softmax)
    assert result.status == "failed"
    assert "return the raw scores (logits)" in result.message
    result = run_check("2.4", FixedBatch)
    assert result.status == "error"  # reshape(100, -1) of a batch of 7 raises inside the learner's code
    assert "RuntimeError" in result.message


def test_2_4_needs_no_arguments():
    class NeedsArguments(CNN):
        def __init__(self, out_1, out_2):
            super().__init__(out_1, out_2)

    result = run_check("2.4", NeedsArguments)
    assert result.status == "failed"
    assert "CNN() must build the original with no arguments" in result.message
    result = run_check("2.4", lambda: "a model")
    assert result.status == "failed"
    assert "expected CNN() to be a torch.nn.Module, got str" in result.message


def test_2_4_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert run_check("2.4", CNN).status == "passed"
    assert torch.equal(torch.rand(3), expected)
