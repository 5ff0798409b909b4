"""Lesson 03 checks: reference answers pass, differently written correct answers pass, usual mistakes fail."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_lab.checks import run_check

DIMS = (0, 2, 3)


def _c(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


# ------------------------------------------------------------------ 3.1 batch_norm_forward


def bn_forward_reference(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=DIMS, keepdim=True)
    var = x.var(dim=DIMS, unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    return gamma.view(1, -1, 1, 1) * x_hat + beta.view(1, -1, 1, 1)


def bn_forward_by_channel_loop(x, gamma, beta, eps=1e-5):
    """Correct, written differently: one channel at a time, sums by hand, float64 inside."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c].double()
        n = values.numel()
        mean = values.sum() / n
        var = ((values - mean) ** 2).sum() / n
        out[:, c] = (gamma[c] * (values - mean) / (var + eps) ** 0.5 + beta[c]).float()
    return out


def bn_forward_functional(x, gamma, beta, eps=1e-5):
    """Correct: PyTorch's own function in training mode."""
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def bn_forward_unbiased(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=DIMS, keepdim=True)
    var = x.var(dim=DIMS, keepdim=True)  # unbiased: divides by n − 1
    return _c(gamma) * (x - mean) / torch.sqrt(var + eps) + _c(beta)


def bn_forward_global(x, gamma, beta, eps=1e-5):
    return _c(gamma) * (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) + _c(beta)


def bn_forward_eps_outside(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=DIMS, keepdim=True)
    std = x.var(dim=DIMS, unbiased=False, keepdim=True).sqrt()
    return _c(gamma) * (x - mean) / (std + eps) + _c(beta)


def bn_forward_no_affine(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=DIMS, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=DIMS, unbiased=False, keepdim=True) + eps)


def bn_forward_fixed_eps(x, gamma, beta, eps=1e-5):
    return bn_forward_reference(x, gamma, beta, 1e-5)


def bn_forward_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(dim=DIMS, keepdim=True)
    return bn_forward_reference(x, gamma, beta, eps)


def test_3_1_reference_passes():
    result = run_check("3.1", bn_forward_reference)
    assert result.status == "passed", result.message
    assert "match nn.BatchNorm2d in training mode within 1e-5" in result.message


@pytest.mark.parametrize("answer", [bn_forward_by_channel_loop, bn_forward_functional])
def test_3_1_other_correct_answers_pass(answer):
    assert run_check("3.1", answer).status == "passed"


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (bn_forward_unbiased, "unbiased variance"),
        (bn_forward_global, "one mean and variance for the whole batch"),
        (bn_forward_eps_outside, "eps belongs inside the square root"),
        (bn_forward_no_affine, "gamma and beta are missing"),
        (bn_forward_fixed_eps, "ignores the eps argument"),
        (bn_forward_in_place, "changed its input x in place"),
        (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps).tolist(), "torch.Tensor"),
        (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps)[:, :2], "of shape (4, 3, 2, 2)"),
        (
            lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps) + 1e-3,
            "differs from the reference",
        ),
    ],
)
def test_3_1_mistakes_fail_with_a_reason(answer, fragment):
    result = run_check("3.1", answer)
    assert result.status == "failed"
    assert fragment in result.message
    assert "hint:" in result.message


def test_3_1_wrong_broadcast_is_one_line():
    result = run_check("3.1", lambda x, gamma, beta, eps=1e-5: gamma * x + beta)
    assert result.status == "error"
    assert result.message.startswith("your code raised RuntimeError")


# ------------------------------------------------------------------ 3.2 CNNBatch


class CNNBatchReference(nn.Module):
    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, out_1, kernel_size=5, padding=2)
        self.conv1_bn = nn.BatchNorm2d(out_1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(out_1, out_2, kernel_size=5, stride=1, padding=2)
        self.conv2_bn = nn.BatchNorm2d(out_2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(out_2 * 4 * 4, number_of_classes)
        self.bn_fc1 = nn.BatchNorm1d(number_of_classes)

    def forward(self, x):
        x = self.maxpool1(torch.relu(self.conv1_bn(self.cnn1(x))))
        x = self.maxpool2(torch.relu(self.conv2_bn(self.cnn2(x))))
        return self.bn_fc1(self.fc1(torch.flatten(x, 1)))


class CNNBatchFunctional(nn.Module):
    """Correct, written differently: functional ReLU and pooling, a view, layers declared in another order."""

    def __init__(self):
        super().__init__()
        self.bn_fc1 = nn.BatchNorm1d(10)
        self.fc1 = nn.Linear(512, 10)
        self.conv2_bn = nn.BatchNorm2d(32)
        self.cnn2 = nn.Conv2d(16, 32, 5, padding=2)
        self.conv1_bn = nn.BatchNorm2d(16)
        self.cnn1 = nn.Conv2d(1, 16, 5, padding=2)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1_bn(self.cnn1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2_bn(self.cnn2(x))), 2)
        return self.bn_fc1(self.fc1(x.view(x.size(0), -1)))


class CNNBatchNoBn1d(CNNBatchReference):
    def __init__(self):
        super().__init__()
        del self.bn_fc1

    def forward(self, x):
        x = self.maxpool1(torch.relu(self.conv1_bn(self.cnn1(x))))
        x = self.maxpool2(torch.relu(self.conv2_bn(self.cnn2(x))))
        return self.fc1(torch.flatten(x, 1))


class CNNBatchReluFirst(CNNBatchReference):
    def forward(self, x):
        x = self.maxpool1(self.conv1_bn(torch.relu(self.cnn1(x))))
        x = self.maxpool2(self.conv2_bn(torch.relu(self.cnn2(x))))
        return self.bn_fc1(self.fc1(torch.flatten(x, 1)))


class CNNBatchSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(512, 10),
            nn.BatchNorm1d(10),
        )

    def forward(self, x):
        return self.net(x)


class CNNBatchMomentum(CNNBatchReference):
    def __init__(self):
        super().__init__()
        self.conv1_bn.momentum = 0.5


class CNNBatchAlwaysEval(CNNBatchReference):
    """Uses running statistics even in training mode."""

    def forward(self, x):
        def bn(layer, z):
            return F.batch_norm(
                z, layer.running_mean, layer.running_var, layer.weight, layer.bias, training=False, eps=layer.eps
            )

        x = self.maxpool1(torch.relu(bn(self.conv1_bn, self.cnn1(x))))
        x = self.maxpool2(torch.relu(bn(self.conv2_bn, self.cnn2(x))))
        return bn(self.bn_fc1, self.fc1(torch.flatten(x, 1)))


def test_3_2_reference_passes_with_the_design_message():
    result = run_check("3.2", CNNBatchReference)
    assert result.status == "passed", result.message
    assert result.line() == "✓ 3.2 CNNBatch: 18,494 parameters, output (100, 10), matches the reference"


def test_3_2_package_model_and_other_correct_answers_pass():
    from fmnist_lab.models import CNNBatch

    assert run_check("3.2", CNNBatch).status == "passed"
    assert run_check("3.2", CNNBatchFunctional).status == "passed"


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (
            CNNBatchNoBn1d,
            "expected 18,494 trainable parameters, found 18,474 (20 fewer: BatchNorm1d(10) after fc1 missing)",
        ),
        (CNNBatchReluFirst, "eval-mode output differs from the original's"),
        (
            CNNBatchSequential,
            "state-dict keys differ from the original's: missing cnn1, conv1_bn, cnn2, conv2_bn, fc1, bn_fc1; "
            "unexpected net.0, net.1, net.4, net.5, net.9, net.10",
        ),
        (CNNBatchMomentum, "conv1_bn.running_mean differs"),
        (CNNBatchAlwaysEval, "in training mode your output differs"),
    ],
)
def test_3_2_mistakes_fail_with_a_reason(answer, fragment):
    result = run_check("3.2", answer)
    assert result.status == "failed"
    assert fragment in result.message
    assert "hint: conv → BatchNorm2d → ReLU → max-pool" in result.message


def test_3_2_plain_cnn_gives_the_design_line():
    from fmnist_lab.models import CNN

    result = run_check("3.2", CNN)
    assert result.status == "failed"
    assert result.line().startswith("✗ 3.2 CNNBatch: expected 18,494 trainable parameters, found 18,378")
    assert "BatchNorm1d after fc1" in result.line()


def test_3_2_not_a_module_fails():
    result = run_check("3.2", lambda: "a model")
    assert result.status == "failed"
    assert "nn.Module" in result.message


def test_3_2_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check("3.2", CNNBatchReference)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ 3.3 update_running_stats


def running_reference(running_mean, running_var, x, momentum=0.1):
    mean = x.mean(dim=DIMS)
    var = x.var(dim=DIMS, unbiased=True)
    return (1 - momentum) * running_mean + momentum * mean, (1 - momentum) * running_var + momentum * var


def running_in_place(running_mean, running_var, x, momentum=0.1):
    """Correct, written differently: in-place lerp, n/(n − 1) correction by hand, as nn.BatchNorm does."""
    channels = x.transpose(0, 1).reshape(x.shape[1], -1)
    n = channels.shape[1]
    mean = channels.mean(dim=1)
    biased = ((channels - mean[:, None]) ** 2).mean(dim=1)
    running_mean.lerp_(mean, momentum)
    running_var.lerp_(biased * n / (n - 1), momentum)
    return running_mean, running_var


def running_biased(running_mean, running_var, x, momentum=0.1):
    return (
        (1 - momentum) * running_mean + momentum * x.mean(dim=DIMS),
        (1 - momentum) * running_var + momentum * x.var(dim=DIMS, unbiased=False),
    )


def running_swapped(running_mean, running_var, x, momentum=0.1):
    return (
        momentum * running_mean + (1 - momentum) * x.mean(dim=DIMS),
        momentum * running_var + (1 - momentum) * x.var(dim=DIMS),
    )


def running_fixed_momentum(running_mean, running_var, x, momentum=0.1):
    return running_reference(running_mean, running_var, x, 0.1)


def test_3_3_reference_passes():
    result = run_check("3.3", running_reference)
    assert result.status == "passed", result.message
    assert "follow nn.BatchNorm2d's buffers over 4 batches (momentum 0.1 and 0.3) within 1e-5" in result.message


def test_3_3_other_correct_answer_passes():
    assert run_check("3.3", running_in_place).status == "passed"


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (running_biased, "unbiased batch variance"),
        (running_swapped, "momentum weighs the new batch"),
        (running_fixed_momentum, "after batch 4 (momentum 0.3)"),
        (lambda m, v, x, momentum=0.1: (x.mean(dim=DIMS), x.var(dim=DIMS)), "you returned the batch statistics"),
        (lambda m, v, x, momentum=0.1: None, "return a pair"),
        (lambda m, v, x, momentum=0.1: running_reference(m, v, x, momentum)[0], "return a pair"),
    ],
)
def test_3_3_mistakes_fail_with_a_reason(answer, fragment):
    result = run_check("3.3", answer)
    assert result.status == "failed"
    assert fragment in result.message


# ------------------------------------------------------------------ 3.4 batch_norm_eval


def eval_reference(x, running_mean, running_var, gamma, beta, eps=1e-5):
    shape = (1, -1, 1, 1)
    x_hat = (x - running_mean.view(shape)) / torch.sqrt(running_var.view(shape) + eps)
    return gamma.view(shape) * x_hat + beta.view(shape)


def eval_folded(x, running_mean, running_var, gamma, beta, eps=1e-5):
    """Correct, written differently: folded into one scale and one shift per channel, channels last."""
    scale = gamma * torch.rsqrt(running_var + eps)
    shift = beta - running_mean * scale
    return (x.permute(0, 2, 3, 1) * scale + shift).permute(0, 3, 1, 2)


def eval_batch_stats(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return bn_forward_reference(x, gamma, beta, eps)


def eval_eps_outside(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return _c(gamma) * (x - _c(running_mean)) / (_c(running_var).sqrt() + eps) + _c(beta)


def test_3_4_reference_passes():
    result = run_check("3.4", eval_reference)
    assert result.status == "passed", result.message
    assert "matches nn.BatchNorm2d in eval mode within 1e-5" in result.message


def test_3_4_other_correct_answer_passes():
    assert run_check("3.4", eval_folded).status == "passed"


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (eval_batch_stats, "uses the batch's own mean and variance"),
        (eval_eps_outside, "eps belongs inside the square root"),
        (
            lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v, torch.ones_like(g), torch.zeros_like(b), eps),
            "gamma and beta are missing",
        ),
    ],
)
def test_3_4_mistakes_fail_with_a_reason(answer, fragment):
    result = run_check("3.4", answer)
    assert result.status == "failed"
    assert fragment in result.message


def test_3_1_and_3_4_watch_every_input_tensor():
    result = run_check("3.1", lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma.mul_(2), beta, eps))
    assert result.status == "failed" and "changed its input gamma in place" in result.message
    result = run_check("3.4", lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v.clamp_(min=0.5), g, b, eps))
    assert result.status == "failed" and "changed its input running_var in place" in result.message
