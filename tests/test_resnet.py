"""fmnist_lab.resnet: shapes, parameter and multiply-add counts, residual blocks, bad configurations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNNBatch, count_parameters
from fmnist_lab.resnet import BasicBlock, ResNet, count_multiply_adds


def test_default_resnet_shapes_and_counts():
    torch.manual_seed(0)
    model = ResNet()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert model.image_size == 28
    # stem 1→16 (144 + 32 BN), three blocks, fc 64→10
    stem = 9 * 16 + 2 * 16
    block1 = 2 * (9 * 16 * 16 + 2 * 16)
    block2 = 9 * 16 * 32 + 2 * 32 + 9 * 32 * 32 + 2 * 32 + 16 * 32 + 2 * 32
    block3 = 9 * 32 * 64 + 2 * 64 + 9 * 64 * 64 + 2 * 64 + 32 * 64 + 2 * 64
    assert count_parameters(model) == stem + block1 + block2 + block3 + 64 * 10 + 10


def test_multiply_adds_by_hand():
    model = ResNet()
    stem = 28 * 28 * 16 * 9
    block1 = 2 * 28 * 28 * 16 * 16 * 9
    block2 = 14 * 14 * 32 * (16 * 9 + 32 * 9 + 16)
    block3 = 7 * 7 * 64 * (32 * 9 + 64 * 9 + 32)
    assert count_multiply_adds(model) == stem + block1 + block2 + block3 + 64 * 10
    # the original CNNBatch: conv1 16·16·16·25, conv2 8·8·32·16·25, fc1 512·10
    assert count_multiply_adds(CNNBatch()) == 16 * 16 * 16 * 25 + 8 * 8 * 32 * 16 * 25 + 512 * 10


def test_counting_leaves_the_model_as_it_was():
    model = ResNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_multiply_adds(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no BN statistics updated
    assert not any(m._forward_hooks for m in model.modules())


def test_wider_deeper_configurations():
    model = ResNet(channels=(8, 16, 32, 64), blocks=(1, 2, 1, 1))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 5


def test_strides_choose_the_resolution_of_each_stage():
    model = ResNet(channels=(32, 64, 128), strides=(2, 2, 2))
    x = model.stem(torch.zeros(1, 1, 28, 28))
    sizes = []
    for stage in model.stages:
        x = stage(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(32, 14, 14), (64, 7, 7), (128, 4, 4)]
    stem = 28 * 28 * 32 * 9
    block1 = 14 * 14 * 32 * (32 * 9 + 32 * 9 + 32)
    block2 = 7 * 7 * 64 * (32 * 9 + 64 * 9 + 32)
    block3 = 4 * 4 * 128 * (64 * 9 + 128 * 9 + 64)
    assert count_multiply_adds(model) == stem + block1 + block2 + block3 + 128 * 10


def test_block_adds_its_input_and_projects_when_the_shape_changes():
    torch.manual_seed(0)
    block = BasicBlock(4, 4).eval()
    assert isinstance(block.shortcut, nn.Identity)
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    x = torch.rand(2, 4, 6, 6)  # non-negative: with the residual branch silenced, ReLU(0 + x) == x
    assert torch.allclose(block(x), x)
    down = BasicBlock(4, 8, stride=2)
    assert isinstance(down.shortcut, nn.Sequential)
    assert down(x).shape == (2, 8, 3, 3)


def test_learns_a_tiny_batch():
    torch.manual_seed(0)
    model = ResNet(channels=(8, 8, 8))
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_configurations_are_one_clear_error():
    with pytest.raises(FmnistLabError, match="one block count and one stride per stage"):
        ResNet(channels=(16, 32), blocks=(1, 1, 1))
    with pytest.raises(FmnistLabError, match="positive"):
        ResNet(channels=(16, 0, 32))
    with pytest.raises(FmnistLabError, match="image_size"):
        count_multiply_adds(nn.Sequential(nn.Linear(3, 2)))


def test_the_lesson_resnet_counted_by_hand():
    from fmnist_lab.recipes import RESNET_ARCHITECTURE

    model = ResNet(**RESNET_ARCHITECTURE)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # stem 1→32 with stride 2 (14×14); stages 32 at 14×14, 64 at 7×7, 128 at 4×4; fc 128→10
    stem = 9 * 32 + 2 * 32
    block1 = 2 * (9 * 32 * 32 + 2 * 32)
    block2 = 9 * 32 * 64 + 9 * 64 * 64 + 32 * 64 + 3 * 2 * 64
    block3 = 9 * 64 * 128 + 9 * 128 * 128 + 64 * 128 + 3 * 2 * 128
    assert count_parameters(model) == stem + block1 + block2 + block3 + 128 * 10 + 10
    macs = (
        14 * 14 * 32 * 9
        + 2 * 14 * 14 * 32 * 32 * 9
        + 7 * 7 * 64 * (32 * 9 + 64 * 9 + 32)
        + 4 * 4 * 128 * (64 * 9 + 128 * 9 + 64)
        + 128 * 10
    )
    assert count_multiply_adds(model) == macs
