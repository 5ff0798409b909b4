"""Predictions, accuracy, per-class accuracy, the confusion matrix and the classification report."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fmnist_lab.data import CLASS_NAMES
from fmnist_lab.errors import FmnistLabError

EVAL_BATCH_SIZE = 250
"""Images per forward pass when predicting: small enough for a layer's activations to stay in the CPU's cache.

In eval mode the logits are the same, bit for bit, whatever the batch; on a CPU a smaller batch is faster,
most of all for lesson 07's ResNet.
"""


def check_input_size(model: nn.Module, images: torch.Tensor) -> None:
    """Raise a clear error when `images` are not the (N, 1, S, S) the model was built for."""
    size = getattr(model, "image_size", None)
    if images.ndim != 4 or images.shape[1] != 1:
        raise FmnistLabError(f"expected images shaped (N, 1, H, W), got {tuple(images.shape)}")
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise FmnistLabError(
            f"the model expects {size}×{size} images, got {images.shape[-2]}×{images.shape[-1]}; "
            f"load the data with image_size={size}"
        )


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """The model's logits for every image, in eval mode, on the model's device; returned on the CPU."""
    check_input_size(model, images)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        chunks = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class ids and the softmax probabilities of all ten classes."""
    probabilities = predict_logits(model, images, batch_size).softmax(dim=1)
    return probabilities.argmax(dim=1), probabilities


def flip_tta_probs(model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Softmax probabilities averaged over each image and its mirror image (eval mode); returned on the CPU."""
    plain = predict_logits(model, images, batch_size).softmax(dim=1)
    return (plain + predict_logits(model, images.flip(-1), batch_size).softmax(dim=1)) / 2


def predicted_classes(
    model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE, *, tta: bool = False
) -> torch.Tensor:
    """The predicted class id of every image (on the CPU); `tta`: from `flip_tta_probs`."""
    if tta:
        return flip_tta_probs(model, images, batch_size).argmax(dim=1)
    return predict(model, images, batch_size)[0]


def fraction_right(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of predicted class ids that equal the labels."""
    return (predicted == labels.cpu()).sum().item() / len(labels)


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
    *,
    tta: bool = False,
) -> float:
    """The fraction of images whose predicted class is the label; `tta`: predict with `flip_tta_probs`."""
    return fraction_right(predicted_classes(model, images, batch_size, tta=tta), labels)


def per_class_accuracy(labels: torch.Tensor | np.ndarray, predicted: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Accuracy within each true class (the recall of each class), keyed by class name."""
    matrix = confusion_matrix(labels, predicted)
    totals = matrix.sum(axis=1)
    return {name: float(matrix[i, i] / totals[i]) if totals[i] else float("nan") for i, name in enumerate(CLASS_NAMES)}


def confusion_matrix(labels: torch.Tensor | np.ndarray, predicted: torch.Tensor | np.ndarray) -> np.ndarray:
    """10×10 counts: row = true class, column = predicted class.

    The same as scikit-learn's `confusion_matrix` (the tests compare them), counted with NumPy, so that
    `fmnist-lab train` does not spend most of a second importing scikit-learn.
    """
    classes = len(CLASS_NAMES)
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    ids = np.concatenate([labels.ravel(), predicted.ravel()])
    if ids.size and (ids.min() < 0 or ids.max() >= classes):
        raise FmnistLabError(f"class ids must be 0 … {classes - 1}")
    pairs = labels * classes + predicted
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def classification_report(
    labels: torch.Tensor | np.ndarray, predicted: torch.Tensor | np.ndarray, output_dict: bool = False
) -> str | dict:
    """Precision, recall and F1 per class, with class names (scikit-learn's report)."""
    from sklearn.metrics import classification_report as sk_classification_report

    return sk_classification_report(
        np.asarray(labels),
        np.asarray(predicted),
        labels=range(len(CLASS_NAMES)),
        target_names=CLASS_NAMES,
        digits=4,
        output_dict=output_dict,
        zero_division=0,
    )
