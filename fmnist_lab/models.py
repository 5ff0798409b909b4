"""The original notebook's two networks: `CNN` (no batch norm) and `CNNBatch` (the original `CNN_batch`).

Layer names match the original's, so a `model_weights.pth` saved by the original notebook loads
into `CNNBatch` unchanged, and ours loads into the original class.
"""

from __future__ import annotations

import torch
from torch import nn

from fmnist_lab.errors import FmnistLabError


def _flat_features(channels: int, image_size: int) -> int:
    """Features after two 2×2 poolings: 32·4·4 = 512 for the original's 16×16 inputs."""
    if image_size % 4:
        raise FmnistLabError(f"image_size must be a multiple of 4 (two 2×2 poolings), got {image_size}")
    return channels * (image_size // 4) ** 2


class CNN(nn.Module):
    """Two 5×5 convolutions with ReLU and max-pooling, then one linear layer: 18,378 parameters."""

    def __init__(self, out_1: int = 16, out_2: int = 32, number_of_classes: int = 10, image_size: int = 16):
        super().__init__()
        self.image_size = image_size
        self.cnn1 = nn.Conv2d(1, out_1, kernel_size=5, padding=2)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(out_1, out_2, kernel_size=5, stride=1, padding=2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(_flat_features(out_2, image_size), number_of_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(torch.relu(self.cnn1(x)))
        x = self.maxpool2(torch.relu(self.cnn2(x)))
        return self.fc1(torch.flatten(x, 1))


class CNNBatch(nn.Module):
    """The original `CNN_batch`: `CNN` with batch norm after each convolution and on the logits (18,494)."""

    def __init__(self, out_1: int = 16, out_2: int = 32, number_of_classes: int = 10, image_size: int = 16):
        super().__init__()
        self.image_size = image_size
        self.cnn1 = nn.Conv2d(1, out_1, kernel_size=5, padding=2)
        self.conv1_bn = nn.BatchNorm2d(out_1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(out_1, out_2, kernel_size=5, stride=1, padding=2)
        self.conv2_bn = nn.BatchNorm2d(out_2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(_flat_features(out_2, image_size), number_of_classes)
        self.bn_fc1 = nn.BatchNorm1d(number_of_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(torch.relu(self.conv1_bn(self.cnn1(x))))
        x = self.maxpool2(torch.relu(self.conv2_bn(self.cnn2(x))))
        return self.bn_fc1(self.fc1(torch.flatten(x, 1)))


MODELS: dict[str, type[nn.Module]] = {"cnn_batch": CNNBatch, "cnn": CNN}


def build_model(name: str = "cnn_batch", image_size: int = 16) -> nn.Module:
    """A fresh model by its CLI name (`cnn_batch` or `cnn`)."""
    if name not in MODELS:
        raise FmnistLabError(f"unknown model {name!r}; use one of {', '.join(MODELS)}")
    return MODELS[name](image_size=image_size)


def model_name(model: nn.Module) -> str:
    """The CLI name of a model instance (the inverse of `build_model`)."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    return type(model).__name__


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """How many numbers the optimiser can change (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
