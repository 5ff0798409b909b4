"""The original notebook's four figures, each returned as a matplotlib Figure in one consistent style."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from fmnist_lab.data import CLASS_NAMES

STYLE = {"figure.dpi": 100, "axes.titlesize": 12, "axes.labelsize": 10, "axes.grid": False, "figure.autolayout": False}
COST_COLOR, ACCURACY_COLOR = "tab:red", "tab:blue"
RIGHT_COLOR, WRONG_COLOR = "tab:green", "tab:red"


def _images_2d(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images as an (N, H, W) float array, whatever the channel layout."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return array.reshape(len(array), array.shape[-2], array.shape[-1])


def training_curves(history: list[dict], title: str = "Training cost and validation accuracy") -> Figure:
    """The original's figure: summed training cost (left axis) and validation accuracy (right) per epoch."""
    with plt.rc_context(STYLE):
        fig, cost_ax = plt.subplots(figsize=(7, 4), layout="constrained")
        epochs = [record["epoch"] for record in history]
        cost_ax.plot(epochs, [record["cost"] for record in history], "o-", color=COST_COLOR)
        cost_ax.set_xlabel("epoch")
        cost_ax.set_ylabel("training cost (sum of batch losses)", color=COST_COLOR)
        cost_ax.tick_params(axis="y", colors=COST_COLOR)
        cost_ax.set_xticks(epochs)
        accuracy_ax = cost_ax.twinx()
        accuracy_ax.plot(
            epochs, [100 * (record["val_accuracy"] or 0) for record in history], "s-", color=ACCURACY_COLOR
        )
        accuracy_ax.set_ylabel("validation accuracy (%)", color=ACCURACY_COLOR)
        accuracy_ax.tick_params(axis="y", colors=ACCURACY_COLOR)
        cost_ax.set_title(title)
    return fig


def confusion_matrix(matrix: np.ndarray, title: str = "Confusion matrix (test set)", normalize: bool = False) -> Figure:
    """A heatmap of a 10×10 confusion matrix, rows true and columns predicted, class names on both, counts written in.

    The original drew it with seaborn's `heatmap`; matplotlib alone draws the same picture without importing
    seaborn and pandas (half a second in every `fmnist-lab train`).
    """
    values = matrix / matrix.sum(axis=1, keepdims=True) if normalize else matrix
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax)
        ticks = range(len(CLASS_NAMES))
        ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(ticks, CLASS_NAMES)
        threshold = (values.max() + values.min()) / 2
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            colour = "white" if value > threshold else "black"  # readable on dark and light cells
            ax.text(column, row, text, ha="center", va="center", fontsize=8, color=colour)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
    return fig


def sample_predictions(
    images: torch.Tensor,
    labels: torch.Tensor,
    predicted: torch.Tensor,
    count: int = 16,
    columns: int = 8,
    title: str = "Sample predictions (true → predicted; red = mistake)",
) -> Figure:
    """A grid of test images, each titled with its true and predicted class; mistakes in red."""
    count = min(count, len(images))
    rows = max(1, -(-count // columns))
    pictures = _images_2d(images[:count])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            rows, columns, figsize=(1.6 * columns, 2.0 * rows), layout="constrained", squeeze=False
        )
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i >= count:
                continue
            truth, guess = int(labels[i]), int(predicted[i])
            ax.imshow(pictures[i], cmap="gray_r")
            ax.set_title(
                f"{CLASS_NAMES[truth]}\n→ {CLASS_NAMES[guess]}",
                fontsize=8,
                color=RIGHT_COLOR if truth == guess else WRONG_COLOR,
            )
        fig.suptitle(title)
    return fig


def sample_images(
    images: torch.Tensor, labels: torch.Tensor, per_class: int = 8, title: str = "Fashion-MNIST: one row per class"
) -> Figure:
    """A grid with one row per class, labelled by class name: the first `per_class` images of each.

    Drawn as one mosaic in one axes rather than 80 small axes: the same picture, drawn seven times faster.
    """
    labels_np, pictures, gap = np.asarray(labels), _images_2d(images), 4
    height, width = pictures.shape[1:]
    rows = len(CLASS_NAMES)
    mosaic = np.zeros((rows * (height + gap) - gap, per_class * (width + gap) - gap), dtype=np.float32)
    for class_id in range(rows):
        for column, index in enumerate(np.flatnonzero(labels_np == class_id)[:per_class]):
            top, left = class_id * (height + gap), column * (width + gap)
            mosaic[top : top + height, left : left + width] = pictures[index]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.1 * per_class + 1.5, 11), layout="constrained")
        ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
        ax.set_yticks([c * (height + gap) + (height - 1) / 2 for c in range(rows)], CLASS_NAMES, fontsize=10)
        ax.set_xticks([])
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        fig.suptitle(title)
    return fig
