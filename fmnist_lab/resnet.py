"""A small residual network for 28×28 Fashion-MNIST, and a counter of its multiply-adds.

`ResNet()` is the wish list's "deeper net": a 3×3 stem, then three stages of `BasicBlock`s (two 3×3
convolutions with batch norm and a shortcut), each stage after the first halving the image and
doubling the channels, then global average pooling and one linear layer. Lesson 07 uses
`ResNet(**fmnist_lab.recipes.RESNET_ARCHITECTURE)`: a stride-2 stem and 32, 64, 128 channels, sized
so that its training fits in 10 minutes on a 2-core CPU (see `benchmarks/going_further.py`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fmnist_lab.errors import FmnistLabError


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the input (a 1×1 conv + BN when the shape changes), → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, stages of BasicBlocks (by default three: 28×28, 14×14, 7×7), global average pooling, linear.

    Each stage's first block uses the stage's stride (default 1 for the first stage, 2 after), so a
    stride of 2 halves the image; `strides=(2, 2, 2)` works at 14×14, 7×7 and 4×4 instead.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),
        blocks: tuple[int, ...] = (1, 1, 1),
        strides: tuple[int, ...] | None = None,
        stem_stride: int = 1,
        number_of_classes: int = 10,
        image_size: int = 28,
        dropout: float = 0.0,
    ):
        super().__init__()
        strides = tuple(strides) if strides is not None else (1,) + (2,) * (len(channels) - 1)
        if not channels or not len(channels) == len(blocks) == len(strides):
            raise FmnistLabError(
                f"one block count and one stride per stage: channels {channels}, blocks {blocks}, strides {strides}"
            )
        if any(b < 1 for b in blocks) or any(c < 1 for c in channels) or min(strides + (stem_stride,)) < 1:
            raise FmnistLabError(f"channels, blocks and strides must be positive, got {channels}, {blocks}, {strides}")
        self.image_size = image_size
        self.channels, self.blocks, self.strides = tuple(channels), tuple(blocks), strides
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        stages, previous = [], channels[0]
        for width, count, stage_stride in zip(channels, blocks, strides):
            layers = []
            for block in range(count):
                layers.append(BasicBlock(previous, width, stage_stride if block == 0 else 1))
                previous = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(previous, number_of_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def count_multiply_adds(model: nn.Module, image_size: int | None = None) -> int:
    """Multiply-adds of one forward pass on one image: every Conv2d and Linear (BN, ReLU, pooling, adds not counted)."""
    size = image_size or getattr(model, "image_size", None)
    if size is None:
        raise FmnistLabError("pass image_size: the model does not say which input size it expects")
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total
