"""Lesson 03 checks: reference answers pass, differently written correct answers pass, usual mistakes fail."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from check_cases import fails, passes
from torch import nn

from fmnist_lab import models
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


def bn_forward_var_mean(x, gamma, beta, eps=1e-5):
    """Correct, written differently: torch.var_mean with correction=0, channels moved last, rsqrt."""
    var, mean = torch.var_mean(x, dim=DIMS, correction=0, keepdim=True)
    x_hat = ((x - mean) * torch.rsqrt(var + eps)).permute(0, 2, 3, 1)
    return (x_hat * gamma + beta).permute(0, 3, 1, 2)


def bn_forward_unbiased(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=DIMS, keepdim=True)
    var = x.var(dim=DIMS, keepdim=True)  # unbiased: divides by M − 1
    return _c(gamma) * (x - mean) / torch.sqrt(var + eps) + _c(beta)


def bn_forward_global(x, gamma, beta, eps=1e-5):
    return _c(gamma) * (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) + _c(beta)


def bn_forward_per_image(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return _c(gamma) * (x - mean) / torch.sqrt(var + eps) + _c(beta)


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


def bn_forward_functional(x, gamma, beta, eps=1e-5):
    """Ruled out by the lesson: PyTorch's own function."""
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def bn_forward_layer(x, gamma, beta, eps=1e-5):
    """Ruled out by the lesson: a BatchNorm2d layer with gamma and beta copied in."""
    layer = nn.BatchNorm2d(x.shape[1], eps=eps).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
    return layer(x)


def bn_forward_no_grad(x, gamma, beta, eps=1e-5):
    with torch.no_grad():
        return bn_forward_reference(x, gamma, beta, eps)


def bn_forward_detached_stats(x, gamma, beta, eps=1e-5):
    mean = x.mean(dim=DIMS, keepdim=True).detach()
    var = x.var(dim=DIMS, unbiased=False, keepdim=True).detach()
    return _c(gamma) * (x - mean) / torch.sqrt(var + eps) + _c(beta)


def bn_forward_new_cpu_tensor(x, gamma, beta, eps=1e-5):
    out = torch.zeros(x.shape, dtype=x.dtype)  # no device=x.device
    out[:] = bn_forward_reference(x, gamma, beta, eps)
    return out


MISTAKES_3_1 = [
    (bn_forward_unbiased, "unbiased variance"),
    (bn_forward_global, "one mean and variance for the whole batch"),
    (bn_forward_per_image, "averaged over H and W of each image separately"),
    (bn_forward_eps_outside, "eps belongs inside the square root"),
    (bn_forward_no_affine, "gamma and beta are missing"),
    (bn_forward_fixed_eps, "ignores the eps argument"),
    (bn_forward_in_place, "changed its input x in place"),
    (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma.mul_(2), beta, eps), "input gamma in place"),
    (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta.copy_(beta * 2), eps), "beta in place"),
    (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps).tolist(), "torch.Tensor"),
    (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps)[:, :2], "of shape (4, 3, 2, 2)"),
    (lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps) + 1e-3, "differs from the reference"),
    (bn_forward_functional, "calls F.batch_norm"),
    (bn_forward_layer, "(or an nn.BatchNorm layer, which calls it)"),
    (
        lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x.double(), gamma.double(), beta.double(), eps),
        "on a (4, 3, 2, 2) batch of dtype torch.float32 like its input, got torch.float64",
    ),
    (
        lambda x, gamma, beta, eps=1e-5: bn_forward_reference(x, gamma, beta, eps).float(),
        "on one float64 image (1, 2, 3, 5) of dtype torch.float64 like its input, got torch.float32",
    ),
    (
        lambda x, gamma, beta, eps=1e-5: bn_forward_no_affine(x, gamma, beta, eps).log() * _c(gamma) + _c(beta),
        "holds 22 NaN values (of 48)",
    ),
    (bn_forward_no_grad, "no gradient flows back through batch_norm_forward"),
    (bn_forward_detached_stats, "its gradient with respect to x differs from the reference's"),
    (bn_forward_new_cpu_tensor, "batch_norm_forward fails for inputs on another device"),
    (nn.BatchNorm2d(3), "got a BatchNorm2d layer (an instance): write the function"),
    (torch.zeros(4, 3, 2, 2), "got Tensor, a result: pass the function or class itself"),
]


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

    def __init__(self, out_1: int = 16, out_2: int = 32, number_of_classes: int = 10):
        super().__init__()
        self.bn_fc1 = nn.BatchNorm1d(number_of_classes)
        self.fc1 = nn.Linear(16 * out_2, number_of_classes)
        self.conv2_bn = nn.BatchNorm2d(out_2)
        self.cnn2 = nn.Conv2d(out_1, out_2, 5, padding="same")
        self.conv1_bn = nn.BatchNorm2d(out_1)
        self.cnn1 = nn.Conv2d(1, out_1, (5, 5), padding=2)

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
    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__(out_1, out_2, number_of_classes)
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


class CNNBatchHardCoded(nn.Module):
    """Ignores its constructor arguments: the numbers 16, 32 and 10 written into every layer."""

    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv1_bn = nn.BatchNorm2d(16)
        self.maxpool1 = nn.MaxPool2d(2)
        self.cnn2 = nn.Conv2d(16, 32, 5, padding=2)
        self.conv2_bn = nn.BatchNorm2d(32)
        self.maxpool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(512, 10)
        self.bn_fc1 = nn.BatchNorm1d(10)

    forward = CNNBatchReference.forward


class CNNBatchNoArguments(CNNBatchHardCoded):
    def __init__(self):
        super().__init__()


class CNNBatchNoAffine(CNNBatchReference):
    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__(out_1, out_2, number_of_classes)
        self.bn_fc1 = nn.BatchNorm1d(number_of_classes, affine=False)


class CNNBatchNoRunningStats(CNNBatchReference):
    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__(out_1, out_2, number_of_classes)
        self.conv2_bn = nn.BatchNorm2d(out_2, track_running_stats=False)


class CNNBatchFixedBatch(CNNBatchReference):
    def forward(self, x):
        x = self.maxpool1(torch.relu(self.conv1_bn(self.cnn1(x))))
        x = self.maxpool2(torch.relu(self.conv2_bn(self.cnn2(x))))
        return self.bn_fc1(self.fc1(x.reshape(100, -1)))


class CNNBatchSqueezed(CNNBatchReference):
    def forward(self, x):
        return super().forward(x).squeeze()


class CNNBatchPoolFirst(CNNBatchReference):
    def forward(self, x):
        x = torch.relu(self.conv1_bn(self.maxpool1(self.cnn1(x))))
        x = torch.relu(self.conv2_bn(self.maxpool2(self.cnn2(x))))
        return self.bn_fc1(self.fc1(torch.flatten(x, 1)))


class CNNBatchDropout(CNNBatchReference):
    def forward(self, x):
        x = self.maxpool1(torch.relu(self.conv1_bn(self.cnn1(x))))
        x = self.maxpool2(torch.relu(self.conv2_bn(self.cnn2(x))))
        return self.bn_fc1(self.fc1(F.dropout(torch.flatten(x, 1), 0.2, self.training)))


class CNNBatchForcedTrain(CNNBatchReference):
    def forward(self, x):
        self.train()  # "batch norm needs training mode"
        return super().forward(x)


class CNNBatchNoGrad(CNNBatchReference):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


class CNNBatchDetachedConv(CNNBatchReference):
    def forward(self, x):
        x = self.maxpool1(torch.relu(self.conv1_bn(self.cnn1(x).detach())))
        x = self.maxpool2(torch.relu(self.conv2_bn(self.cnn2(x))))
        return self.bn_fc1(self.fc1(torch.flatten(x, 1)))


class CNNBatchFloat32Only(CNNBatchReference):
    def forward(self, x):
        return super().forward(x.float())


def test_3_2_reference_passes_with_the_design_message():
    result = passes("3.2", CNNBatchReference)
    assert result.line() == "✓ 3.2 CNNBatch: 18,494 parameters, output (100, 10), matches the reference"


def test_3_2_plain_cnn_gives_the_design_line():
    from fmnist_lab.models import CNN

    result = run_check("3.2", CNN)
    assert result.status == "failed"
    assert result.line().startswith("✗ 3.2 CNNBatch: expected 18,494 trainable parameters, found 18,378")
    assert "BatchNorm1d after fc1" in result.line()


MISTAKES_3_2 = [
    (
        CNNBatchNoBn1d,
        "expected 18,494 trainable parameters, found 18,474 (20 fewer: BatchNorm1d(10) after fc1 missing)",
    ),
    (CNNBatchReluFirst, "eval-mode output for 100 images differs from the original's"),
    (
        CNNBatchSequential,
        "state-dict keys differ from the original's: missing cnn1, conv1_bn, cnn2, conv2_bn, fc1, bn_fc1; "
        "unexpected net.0, net.1, net.4, net.5, net.9, net.10",
    ),
    (CNNBatchMomentum, "conv1_bn.running_mean differs"),
    (CNNBatchAlwaysEval, "in training mode your model still uses the running statistics"),
    (lambda: "a model", "expected CNNBatch() to be an nn.Module, got str"),
    (CNNBatchReference(), 'got an instance of CNNBatchReference: pass the class itself, check("3.2", CNNBatch)'),
    (
        CNNBatchHardCoded,
        "CNNBatch(out_1=8, out_2=12, number_of_classes=7) gives cnn1.weight the shape (16, 1, 5, 5), "
        "expected (8, 1, 5, 5): build the layers from out_1, out_2 and number_of_classes",
    ),
    (CNNBatchNoArguments, "CNNBatch(out_1=8, out_2=12, number_of_classes=7) raised TypeError"),
    (CNNBatchNoAffine, "bn_fc1 has no γ and β (BatchNorm1d(…, affine=False)): keep the default affine=True"),
    (CNNBatchNoRunningStats, "conv2_bn keeps no running statistics (BatchNorm2d(…, track_running_stats=False))"),
    (CNNBatchFixedBatch, "your model works on 100 images but fails on 7"),
    (CNNBatchSqueezed, "for one image your model returns shape (10,), expected (1, 10)"),
    (CNNBatchPoolFirst, "your output matches max-pooling before batch norm"),
    (CNNBatchDropout, "changes from one call to the next on the same images: remove the dropout"),
    (
        CNNBatchForcedTrain,
        "your forward in eval mode left CNNBatchForcedTrain, cnn1, conv1_bn in training mode: the caller chooses",
    ),
    (CNNBatchNoGrad, "no gradient flows from your training-mode output back to the weights"),
    (CNNBatchDetachedConv, "no gradient reaches cnn1.weight from your training-mode output"),
    (CNNBatchFloat32Only, "your model fails once the model and its input are moved to float64 on another device"),
]


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


def running_lerp(running_mean, running_var, x, momentum=0.1):
    """Correct, written differently: torch.lerp (not in place), M/(M − 1) correction by hand, as nn.BatchNorm does."""
    channels = x.transpose(0, 1).reshape(x.shape[1], -1)
    n = channels.shape[1]
    mean = channels.mean(dim=1)
    biased = ((channels - mean[:, None]) ** 2).mean(dim=1)
    return torch.lerp(running_mean, mean, momentum), torch.lerp(running_var, biased * n / (n - 1), momentum)


def running_var_mean(running_mean, running_var, x, momentum=0.1):
    """Correct, written differently: torch.var_mean with correction=1, returned as a list."""
    var, mean = torch.var_mean(x, dim=DIMS, correction=1)
    return [running_mean + momentum * (mean - running_mean), running_var + momentum * (var - running_var)]


def running_in_place(running_mean, running_var, x, momentum=0.1):
    """Wrong here: changes the caller's tensors (the exercise returns new ones)."""
    running_mean.lerp_(x.mean(dim=DIMS), momentum)
    running_var.lerp_(x.var(dim=DIMS), momentum)
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


def running_images_only(running_mean, running_var, x, momentum=0.1):
    n = len(x)  # the number of images, not N·H·W
    var = x.var(dim=DIMS, unbiased=False) * n / (n - 1)
    return (1 - momentum) * running_mean + momentum * x.mean(dim=DIMS), (1 - momentum) * running_var + momentum * var


def running_std(running_mean, running_var, x, momentum=0.1):
    new_mean, _ = running_reference(running_mean, running_var, x, momentum)
    return new_mean, (1 - momentum) * running_var + momentum * x.std(dim=DIMS)


def running_by_layer(running_mean, running_var, x, momentum=0.1):
    """Ruled out by the lesson: nn.BatchNorm2d does the update."""
    layer = nn.BatchNorm2d(x.shape[1], momentum=momentum).to(x.dtype)
    layer.running_mean, layer.running_var = running_mean.clone(), running_var.clone()
    layer.train()(x)
    return layer.running_mean, layer.running_var


def running_new_cpu_tensors(running_mean, running_var, x, momentum=0.1):
    new_mean, new_var = torch.zeros(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype)  # no device=x.device
    new_mean[:], new_var[:] = running_reference(running_mean, running_var, x, momentum)
    return new_mean, new_var


MISTAKES_3_3 = [
    (running_biased, "unbiased batch variance"),
    (running_swapped, "momentum weighs the new batch"),
    (running_fixed_momentum, "after batch 4 of shape (4, 3, 2, 2) (momentum 0.3)"),
    (lambda m, v, x, momentum=0.1: (x.mean(dim=DIMS), x.var(dim=DIMS)), "you returned the batch statistics"),
    (lambda m, v, x, momentum=0.1: (m.clone(), v.clone()), "you returned the old running statistics unchanged"),
    (lambda m, v, x, momentum=0.1: None, "return a pair"),
    (lambda m, v, x, momentum=0.1: running_reference(m, v, x, momentum)[0], "return a pair"),
    (running_in_place, "changed its input running_mean in place"),
    (running_images_only, "the M in M/(M − 1) is the number of values per channel, N·H·W"),
    (running_std, "running_var tracks the variance, not the standard deviation"),
    (running_by_layer, "calls F.batch_norm (or an nn.BatchNorm layer, which calls it)"),
    (
        lambda m, v, x, momentum=0.1: tuple(t.double() for t in running_reference(m, v, x, momentum)),
        "the new running_mean after batch 1 of shape (4, 3, 2, 2) (momentum 0.1) of dtype torch.float32 like its "
        "input, got torch.float64",
    ),
    (
        lambda m, v, x, momentum=0.1: tuple(t.float() for t in running_reference(m, v, x, momentum)),
        "the new running_mean for float64 inputs of dtype torch.float64 like its input, got torch.float32",
    ),
    (running_new_cpu_tensors, "update_running_stats fails for inputs on another device"),
    (
        lambda m, v, x, momentum=0.1: (running_reference(m, v, x, momentum)[0], torch.sqrt(v - 1)),
        "the new running_var after batch 1 of shape (4, 3, 2, 2) (momentum 0.1) holds 1 NaN value (of 3)",
    ),
]


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


def eval_indexing(x, running_mean, running_var, gamma, beta, eps=1e-5):
    """Correct, written differently: None indexing, division by the standard deviation, float64 inside."""
    std = (running_var.double() + eps).sqrt()
    out = (x.double() - running_mean.double()[None, :, None, None]) / std[None, :, None, None]
    return (out * gamma.double()[None, :, None, None] + beta.double()[None, :, None, None]).to(x.dtype)


def eval_batch_stats(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return bn_forward_reference(x, gamma, beta, eps)


def eval_eps_outside(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return _c(gamma) * (x - _c(running_mean)) / (_c(running_var).sqrt() + eps) + _c(beta)


def eval_by_variance(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return _c(gamma) * (x - _c(running_mean)) / (_c(running_var) + eps) + _c(beta)


def eval_functional(x, running_mean, running_var, gamma, beta, eps=1e-5):
    """Ruled out by the lesson: PyTorch's own function."""
    return F.batch_norm(x, running_mean, running_var, gamma, beta, training=False, eps=eps)


def eval_no_grad(x, running_mean, running_var, gamma, beta, eps=1e-5):
    with torch.no_grad():
        return eval_reference(x, running_mean, running_var, gamma, beta, eps)


MISTAKES_3_4 = [
    (eval_batch_stats, "uses the batch's own mean and variance"),
    (eval_eps_outside, "eps belongs inside the square root"),
    (eval_by_variance, "you divided by the variance"),
    (
        lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v, torch.ones_like(g), torch.zeros_like(b), eps),
        "gamma and beta are missing",
    ),
    (lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v, g, b, 1e-5), "ignores the eps argument"),
    (
        lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v.clamp_(min=0.5), g, b, eps),
        "changed its input running_var in place",
    ),
    (
        lambda x, m, v, g, b, eps=1e-5: eval_reference(x.sub_(_c(m)), m * 0, v, g, b, eps),
        "changed its input x in place",
    ),
    (eval_functional, "calls F.batch_norm"),
    (
        lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v, g, b, eps).double(),
        "on a (5, 3, 4, 2) batch of dtype torch.float32 like its input, got torch.float64",
    ),
    (eval_no_grad, "no gradient flows back through batch_norm_eval"),
    (lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v - 1, g, b, eps), "holds 40 NaN values (of 120)"),
    (lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v, g, b, eps).numpy(), "to be a torch.Tensor, got ndarray"),
    (
        lambda x, m, v, g, b, eps=1e-5: eval_reference(x, m, v, g, b, eps).squeeze(0),
        "of shape (1, 3, 4, 2), got (3, 4, 2)",
    ),
]


# ------------------------------------------------------------------ every exercise: correct answers and mistakes

CORRECT = [  # (exercise, answer, what its message says): the references, then answers written differently
    ("3.1", bn_forward_reference, "match nn.BatchNorm2d in training mode within 1e-5"),
    ("3.3", running_reference, "follow nn.BatchNorm2d's buffers over 4 batches (momentum 0.1 and 0.3) within 1e-5"),
    ("3.4", eval_reference, "matches nn.BatchNorm2d in eval mode within 1e-5"),
    ("3.1", bn_forward_by_channel_loop, ""),
    ("3.1", bn_forward_var_mean, ""),
    ("3.2", models.CNNBatch, ""),
    ("3.2", CNNBatchFunctional, ""),
    ("3.3", running_lerp, ""),
    ("3.3", running_var_mean, ""),
    ("3.4", eval_folded, ""),
    ("3.4", eval_indexing, ""),
]


@pytest.mark.parametrize("exercise_id, answer, fragment", CORRECT)
def test_correct_answers_pass(exercise_id, answer, fragment):
    passes(exercise_id, answer, fragment=fragment)


MISTAKES = [
    *(("3.1", answer, fragment) for answer, fragment in MISTAKES_3_1),
    *(("3.2", answer, fragment) for answer, fragment in MISTAKES_3_2),
    *(("3.3", answer, fragment) for answer, fragment in MISTAKES_3_3),
    *(("3.4", answer, fragment) for answer, fragment in MISTAKES_3_4),
]


@pytest.mark.parametrize("exercise_id, answer, fragment", MISTAKES)
def test_mistakes_fail_naming_their_cause(exercise_id, answer, fragment):
    fails(exercise_id, answer, fragment=fragment)
