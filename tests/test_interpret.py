"""fmnist_lab.interpret: confused pairs, calibration bins and ECE, occlusion and saliency maps (no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fmnist_lab import interpret
from fmnist_lab.data import CLASS_NAMES
from fmnist_lab.models import CNNBatch


def linear_model(seed: int = 0) -> nn.Module:
    """Logits = W · pixels + b on 16×16 images: the gradient of logit c is exactly W[c]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).eval()


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CNNBatch().eval()


def image_with_blank_left_half(seed: int = 0) -> torch.Tensor:
    image = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(seed))
    image[:, :, :8] = 0
    return image


# ------------------------------------------------------------------------------------ most_confused_pairs


def test_most_confused_pairs_ranks_off_diagonal_cells():
    matrix = np.diag([50] * 10)
    matrix[6, 0], matrix[0, 6], matrix[2, 4], matrix[4, 2], matrix[9, 7] = 30, 12, 20, 12, 1
    assert interpret.most_confused_pairs(matrix, 4) == [
        ("Shirt", "T-shirt/top", 30),
        ("Pullover", "Coat", 20),
        ("T-shirt/top", "Shirt", 12),
        ("Coat", "Pullover", 12),
    ]  # a tie keeps row-major order
    assert len(interpret.most_confused_pairs(matrix, 20)) == 5  # cells never confused are left out
    assert interpret.most_confused_pairs(torch.tensor(matrix), 1) == [("Shirt", "T-shirt/top", 30)]
    assert interpret.most_confused_pairs(np.eye(3, dtype=int), 3, ["a", "b", "c"]) == []


def test_most_confused_pairs_refuses_a_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        interpret.most_confused_pairs(np.zeros((10, 9)))
    with pytest.raises(ValueError, match="class names"):
        interpret.most_confused_pairs(np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------- calibration


def test_calibration_bins_are_left_open_and_hold_zero_and_one():
    confidences = torch.tensor([0.0, 0.1, 0.1001, 0.55, 0.95, 1.0], dtype=torch.float64)
    correct = torch.tensor([False, True, True, False, True, False])
    bins = interpret.calibration_bins(confidences, correct, 10)
    assert np.allclose(bins.edges, np.linspace(0, 1, 11))
    assert bins.counts.tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins.accuracy[0] == 0.5 and bins.accuracy[9] == 0.5
    assert bins.confidence[9] == pytest.approx(0.975)
    assert np.isnan(bins.accuracy[3]) and np.isnan(bins.gaps[3])
    assert bins.gaps[5] == pytest.approx(0.55)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    generator = torch.Generator().manual_seed(0)
    confidences = torch.rand(200_000, generator=generator)
    calibrated = torch.rand(200_000, generator=generator) < confidences
    assert interpret.expected_calibration_error(confidences, calibrated) < 0.005
    overconfident = torch.rand(200_000, generator=generator) < confidences - 0.2
    assert interpret.expected_calibration_error(confidences, overconfident) == pytest.approx(0.2, abs=0.02)


def test_ece_weights_each_bin_by_its_share():
    confidences = np.array([0.95] * 300 + [0.45] * 100)
    correct = np.array([1] * 270 + [0] * 30 + [1] * 75 + [0] * 25)
    assert interpret.expected_calibration_error(confidences, correct) == pytest.approx(0.1125)
    assert interpret.expected_calibration_error(confidences, correct, n_bins=1) == pytest.approx(0.0375)


def test_calibration_refuses_logits_and_mismatched_lengths():
    with pytest.raises(ValueError, match="probabilities, not logits"):
        interpret.expected_calibration_error(torch.tensor([2.5, 0.3]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="as many confidences"):
        interpret.calibration_bins(torch.tensor([0.5]), torch.tensor([True, False]))


# ------------------------------------------------------------------------------------------- occlusion


def test_occluding_blank_background_changes_nothing():
    model, image = small_cnn(), image_with_blank_left_half()
    drops = interpret.occlusion_map(model, image, label=3, patch=3)
    assert drops.shape == (16, 16)
    assert drops[:, :7].abs().max() < 1e-6  # every 3×3 patch centred in columns 0…6 is already 0
    assert drops[:, 8:].abs().max() > 1e-4


def test_a_patch_larger_than_the_image_blanks_it_everywhere():
    model, image = small_cnn(), image_with_blank_left_half()
    drops = interpret.occlusion_map(model, image, label=3, patch=33)
    with torch.no_grad():
        p = model(torch.stack([image, torch.zeros_like(image)])).softmax(1)[:, 3]
    assert torch.allclose(drops, (p[0] - p[1]).expand(16, 16), atol=1e-6)


def test_occlusion_needs_an_odd_patch_and_one_image():
    with pytest.raises(ValueError, match="odd"):
        interpret.occlusion_map(small_cnn(), image_with_blank_left_half(), 0, patch=4)
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        interpret.occlusion_map(small_cnn(), torch.zeros(2, 1, 16, 16), 0)


# -------------------------------------------------------------------------------------------- saliency


def test_saliency_of_a_linear_model_is_the_absolute_weight_row():
    model, image = linear_model(), image_with_blank_left_half()
    saliency = interpret.saliency_map(model, image, label=6)
    assert saliency.shape == (16, 16) and (saliency >= 0).all()
    assert torch.allclose(saliency, model[1].weight[6].abs().view(16, 16))


def test_saliency_is_non_negative_leaves_the_image_and_mode_alone():
    model, image = small_cnn(), image_with_blank_left_half()
    model.train()
    before = image.clone()
    saliency = interpret.saliency_map(model, image, label=2)
    assert saliency.shape == (16, 16) and (saliency >= 0).all() and saliency.max() > 0
    assert torch.equal(image, before) and not image.requires_grad
    assert model.training  # restored after computing in eval mode
    assert all(p.grad is None for p in model.parameters())
    assert CLASS_NAMES[2] == "Pullover"
