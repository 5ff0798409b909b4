"""Error analysis and interpretability: confused pairs, calibration (bins, ECE), occlusion and saliency maps.

Conventions: a confusion matrix has one row per true class and one column per predicted class (as
`fmnist_lab.evaluate.confusion_matrix` returns it). Calibration bins are equal-width on [0, 1] and
half-open on the left, (lo, hi], the first one also holding 0. An image is one (1, H, W) tensor of
the test set, e.g. `images[i]`; maps come back as (H, W) tensors on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fmnist_lab.data import CLASS_NAMES
from fmnist_lab.evaluate import predict_logits


def most_confused_pairs(
    matrix: np.ndarray | torch.Tensor, k: int = 5, class_names: Sequence[str] = CLASS_NAMES
) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal cells as (true name, predicted name, count), largest first; zeros left out."""
    counts = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {counts.shape}")
    if len(class_names) != counts.shape[0]:
        raise ValueError(f"{counts.shape[0]} classes in the matrix but {len(class_names)} class names")
    cells = [
        (int(counts[i, j]), i, j) for i in range(len(counts)) for j in range(len(counts)) if i != j and counts[i, j] > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))  # ties: in row-major order
    return [(class_names[i], class_names[j], count) for count, i, j in cells[:k]]


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-width confidence bins: edges (n + 1); per bin the count, mean confidence and accuracy (NaN if empty)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        """Mean confidence minus accuracy per bin: above 0 means overconfident (NaN if empty)."""
        return self.confidence - self.accuracy


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence[float], what: str) -> np.ndarray:
    """A 1-D float64 array from a tensor, array or list."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"expected {what} to be one value per prediction (1-D), got shape {array.shape}")
    return array


def calibration_bins(
    confidences: torch.Tensor | np.ndarray, correct: torch.Tensor | np.ndarray, n_bins: int = 10
) -> CalibrationBins:
    """Sort predictions into `n_bins` equal confidence bins (lo, hi]: count, mean confidence, accuracy of each."""
    confidence = _as_numpy(confidences, "confidences")
    hits = _as_numpy(correct, "correct")
    if len(confidence) != len(hits) or len(confidence) == 0:
        raise ValueError(
            f"expected as many confidences as correct flags (at least one), got {len(confidence)} and {len(hits)}"
        )
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if confidence.min() < 0 or confidence.max() > 1:
        raise ValueError("confidences must lie in [0, 1] (probabilities, not logits)")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # (lo, hi]; 0 joins the first bin
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(index, weights=hits, minlength=n_bins) / counts
    return CalibrationBins(edges, counts, mean_confidence, accuracy)


def expected_calibration_error(
    confidences: torch.Tensor | np.ndarray, correct: torch.Tensor | np.ndarray, n_bins: int = 10
) -> float:
    """ECE: the count-weighted mean over bins of |accuracy − mean confidence| (0 = perfectly calibrated)."""
    bins = calibration_bins(confidences, correct, n_bins)
    filled = bins.counts > 0
    weights = bins.counts[filled] / bins.counts.sum()
    return float(np.sum(weights * np.abs(bins.gaps[filled])))


def _one_image(image: torch.Tensor) -> torch.Tensor:
    """A single image as (1, H, W), from (1, H, W) or (H, W)."""
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, H, W), got {tuple(image.shape)}")
    return image.detach().cpu().float()


def occlusion_map(
    model: nn.Module, image: torch.Tensor, label: int, patch: int = 3, fill: float = 0.0, batch_size: int = 1000
) -> torch.Tensor:
    """(H, W): drop in p(label) when a patch×patch square of `fill` centred on each pixel (clipped) hides it."""
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be an odd size (so it has a centre pixel), got {patch}")
    image = _one_image(image)
    _, height, width = image.shape
    half = patch // 2
    occluded = image.repeat(height * width, 1, 1, 1)
    for i in range(height):
        for j in range(width):
            occluded[i * width + j, :, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1] = fill
    probabilities = predict_logits(model, torch.cat([image.unsqueeze(0), occluded]), batch_size).softmax(1)
    return (probabilities[0, label] - probabilities[1:, label]).reshape(height, width)


def saliency_map(model: nn.Module, image: torch.Tensor, label: int) -> torch.Tensor:
    """(H, W): |∂ score / ∂ pixel|, where score is the logit of class `label` (the model in eval mode)."""
    image = _one_image(image)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = image.unsqueeze(0).to(device).requires_grad_(True)
        with torch.enable_grad():
            score = model(x)[0, label]
            (gradient,) = torch.autograd.grad(score, x)
    finally:
        model.train(was_training)
    return gradient.abs()[0, 0].cpu()
