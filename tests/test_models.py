"""fmnist_lab.models: the original architectures, their parameter counts and state-dict compatibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNN, CNNBatch, build_model, count_parameters, model_name


class OriginalCNNBatch(nn.Module):
    """The original notebook's CNN_batch, as written there (the reference for compatibility)."""

    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__()
        self.cnn1 = nn.Conv2d(in_channels=1, out_channels=out_1, kernel_size=5, padding=2)
        self.conv1_bn = nn.BatchNorm2d(out_1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(in_channels=out_1, out_channels=out_2, kernel_size=5, stride=1, padding=2)
        self.conv2_bn = nn.BatchNorm2d(out_2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(out_2 * 4 * 4, number_of_classes)
        self.bn_fc1 = nn.BatchNorm1d(10)

    def forward(self, x):
        x = self.cnn1(x)
        x = self.conv1_bn(x)
        x = torch.relu(x)
        x = self.maxpool1(x)
        x = self.cnn2(x)
        x = self.conv2_bn(x)
        x = torch.relu(x)
        x = self.maxpool2(x)
        x = x.view(x.size(0), -1)
        x = self.fc1(x)
        x = self.bn_fc1(x)
        return x


def test_parameter_counts_match_the_original():
    assert count_parameters(CNN()) == 18_378
    assert count_parameters(CNNBatch()) == 18_494
    # the running statistics (mean, var, count) are buffers, never trainable parameters
    assert count_parameters(CNNBatch(), trainable_only=False) == 18_494


@pytest.mark.parametrize("cls", [CNN, CNNBatch])
def test_output_is_one_logit_per_class(cls):
    torch.manual_seed(0)
    assert cls()(torch.rand(100, 1, 16, 16)).shape == (100, 10)
    assert cls(image_size=28)(torch.rand(7, 1, 28, 28)).shape == (7, 10)


def test_state_dict_keys_are_exactly_the_originals():
    assert list(CNNBatch().state_dict()) == list(OriginalCNNBatch().state_dict())
    assert [k.split(".")[0] for k in CNNBatch().state_dict()][::1] and {
        k.split(".")[0] for k in CNNBatch().state_dict()
    } == {"cnn1", "conv1_bn", "cnn2", "conv2_bn", "fc1", "bn_fc1"}


def test_weights_move_both_ways_between_ours_and_the_original(tmp_path):
    torch.manual_seed(1)
    original = OriginalCNNBatch()
    original.train()
    original(torch.rand(64, 1, 16, 16))  # give the running statistics non-default values
    torch.save(original.state_dict(), tmp_path / "model_weights.pth")
    ours = CNNBatch()
    ours.load_state_dict(torch.load(tmp_path / "model_weights.pth"))
    x = torch.rand(20, 1, 16, 16)
    assert torch.allclose(ours.eval()(x), original.eval()(x), atol=1e-6)
    back = OriginalCNNBatch()
    back.load_state_dict(CNNBatch().state_dict())  # ours loads into the original class


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(2)
    model = CNNBatch().eval()
    x = torch.rand(8, 1, 16, 16)
    expected = model(x)
    fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, fast, atol=1e-5)


def test_build_model_by_name_and_back():
    assert isinstance(build_model("cnn"), CNN) and model_name(build_model("cnn_batch")) == "cnn_batch"
    assert build_model("cnn_batch", 28).fc1.in_features == 32 * 7 * 7
    with pytest.raises(FmnistLabError, match="unknown model 'resnet'; use one of cnn_batch, cnn"):
        build_model("resnet")
    with pytest.raises(FmnistLabError, match="multiple of 4"):
        CNN(image_size=18)
