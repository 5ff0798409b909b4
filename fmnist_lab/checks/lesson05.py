"""Lesson 05 · Evaluation: accuracy, per-class accuracy, the confusion matrix, precision/recall/F1.

Every check feeds the learner's function fixed, seeded labels and predictions (never the trained
model) and compares the result with scikit-learn's on the same inputs. The inputs include a class
that is never predicted and, where it matters, a class that never occurs, so a missing `minlength`
or an unhandled 0/0 shows up.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fmnist_lab.checks import Mismatch, exercise, expect_callable
from fmnist_lab.data import CLASS_NAMES

N_CLASSES = len(CLASS_NAMES)
NEVER_PREDICTED = 7  # Sneaker: no prediction is ever this class (confusion matrix, precision/recall/F1)
NEVER_CORRECT = 9  # Ankle boot: never predicted in 5.2's inputs (a bincount of correct labels needs minlength)
NEVER_TRUE = 9  # Ankle boot: no label is ever this class (confusion matrix, precision/recall/F1)


def fixed_inputs(seed: int, n: int = 600, never_true: tuple[int, ...] = (),
                 never_predicted: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (labels, predicted) int64 tensors; class c is wrong with probability 0.05 + 0.05·c.

    Every class not in `never_true` occurs among the labels; no prediction is in `never_predicted`.
    """
    generator = torch.Generator().manual_seed(seed)
    allowed_true = torch.tensor([c for c in range(N_CLASSES) if c not in never_true])
    picks = torch.randint(0, len(allowed_true), (n - len(allowed_true),), generator=generator)
    labels = torch.cat([allowed_true, allowed_true[picks]])
    allowed_predicted = torch.tensor([c for c in range(N_CLASSES) if c not in never_predicted])
    guesses = allowed_predicted[torch.randint(0, len(allowed_predicted), (n,), generator=generator)]
    wrong = torch.rand(n, generator=generator) < 0.05 + 0.05 * labels
    wrong |= torch.isin(labels, torch.tensor(list(never_predicted), dtype=torch.long))
    return labels, torch.where(wrong, guesses, labels)


def _number(value: Any, what: str) -> float:
    """A learner's number (float, int, NumPy scalar, 0-d or 1-element tensor or array) as a float."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        if size != 1:
            raise Mismatch(f"expected {what} to be one number, got a {type(value).__name__} of shape "
                           f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise Mismatch(f"expected {what} to be a number, got {type(value).__name__}")
    return float(value)


def _values(value: Any, what: str, length: int) -> np.ndarray:
    """A learner's one-value-per-class answer (tensor, array, list, tuple, dict in class order) as floats."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().double().numpy()
    elif isinstance(value, np.ndarray):
        try:
            array = value.astype(np.float64)
        except (TypeError, ValueError):
            raise Mismatch(f"expected {what} to hold numbers, got dtype {value.dtype}") from None
    elif isinstance(value, (list, tuple)):
        array = np.array([_number(v, f"each value of {what}") for v in value], dtype=np.float64)
    else:
        raise Mismatch(f"expected {what} to be a tensor, array or list of {length} numbers, "
                       f"got {type(value).__name__}")
    if array.ndim != 1:
        raise Mismatch(f"expected {what} to be one value per class, shape ({length},), got shape {array.shape}")
    if len(array) != length:
        raise Mismatch(f"expected {length} values (one per class, even for a class that is never "
                       f"predicted: bincount needs minlength={length}), got {len(array)}")
    return array


def _recall_precision(labels: torch.Tensor, predicted: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-class recall and precision (0 where undefined), as scikit-learn computes them."""
    precision, recall, _, _ = precision_recall_fscore_support(
        labels.numpy(), predicted.numpy(), labels=range(N_CLASSES), zero_division=0)
    return recall, precision


@exercise("5.1", "accuracy",
          "the mean of (predicted == labels): the number of correct predictions divided by the number of images")
def check_accuracy(accuracy) -> str:
    expect_callable(accuracy, "a function accuracy(labels, predicted)")
    labels, predicted = fixed_inputs(51, n=500)
    expected = accuracy_score(labels.numpy(), predicted.numpy())
    correct = int((labels == predicted).sum())
    got = _number(accuracy(labels.clone(), predicted.clone()), "accuracy(labels, predicted)")
    if math.isclose(got, correct):
        raise Mismatch(f"expected a fraction, {expected:.4f}, got {got:g}: that is the number of correct "
                       f"predictions; divide it by the number of images ({len(labels)})")
    if math.isclose(got, 100 * expected, abs_tol=1e-4):
        raise Mismatch(f"expected a fraction in [0, 1], {expected:.4f}, got {got:g}, a percentage")
    if math.isclose(got, 1 - expected, abs_tol=1e-6):
        raise Mismatch(f"expected {expected:.4f}, got {got:.4f}, the error rate (the fraction of mistakes)")
    if not abs(got - expected) <= 1e-6:
        raise Mismatch(f"expected accuracy = {expected:.4f} ({correct} correct of {len(labels)}), got {got:.6g}")
    all_right = _number(accuracy(labels.clone(), labels.clone()), "accuracy(labels, labels)")
    if not abs(all_right - 1.0) <= 1e-6:
        raise Mismatch(f"expected accuracy(labels, labels) = 1.0 (every prediction right), got {all_right:.6g}")
    return (f"{expected:.4f} on 500 fixed labels/predictions ({correct} correct) and 1.0 when all are right, "
            f"as scikit-learn's accuracy_score (within 1e-6)")


@exercise("5.2", "per_class_accuracy",
          "for each class k: among the images whose TRUE label is k, the fraction predicted k "
          "(count with torch.bincount(..., minlength=10))")
def check_per_class_accuracy(per_class_accuracy) -> str:
    expect_callable(per_class_accuracy, "a function per_class_accuracy(labels, predicted)")
    labels, predicted = fixed_inputs(52, never_predicted=(NEVER_CORRECT,))
    recall, precision = _recall_precision(labels, predicted)
    got = _values(per_class_accuracy(labels.clone(), predicted.clone()),
                  "per_class_accuracy(labels, predicted)", N_CLASSES)
    if np.allclose(got, recall, atol=1e-6):
        return (f"10 values match scikit-learn's per-class recall within 1e-6 on 600 fixed labels/predictions "
                f"(from {recall.max():.3f} for {CLASS_NAMES[int(recall.argmax())]} down to 0 for "
                f"{CLASS_NAMES[NEVER_CORRECT]}, which is never predicted)")
    if np.allclose(got, 100 * recall, atol=1e-4):
        raise Mismatch("expected fractions in [0, 1], got percentages (each value is 100 times too large)")
    if np.allclose(np.nan_to_num(got), precision, atol=1e-6):
        raise Mismatch("these are the precisions: you divided by how often each class was PREDICTED; divide "
                       "by how many images truly belong to each class (the counts of `labels`)")
    overall = float((labels == predicted).double().mean())
    if np.allclose(got, overall, atol=1e-6):
        raise Mismatch(f"all ten values equal the overall accuracy {overall:.4f}; compute one accuracy per "
                       f"true class")
    if np.isnan(got).any():
        name = CLASS_NAMES[int(np.flatnonzero(np.isnan(got))[0])]
        raise Mismatch(f"got nan for {name}; every class occurs among these labels, so no value should be nan")
    k = int(np.flatnonzero(~np.isclose(got, recall, atol=1e-6))[0])
    raise Mismatch(f"expected {CLASS_NAMES[k]} (class {k}) = {recall[k]:.4f}, got {got[k]:.4g}"
                   + (" (this class is never predicted, so its accuracy is 0)" if k == NEVER_CORRECT else ""))


@exercise("5.3", "confusion_matrix",
          "a (10, 10) integer count: matrix[true, predicted] += 1 for each image, e.g. "
          "torch.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)")
def check_confusion_matrix(confusion_matrix) -> str:
    expect_callable(confusion_matrix, "a function confusion_matrix(labels, predicted)")
    labels, predicted = fixed_inputs(53, never_true=(NEVER_TRUE,), never_predicted=(NEVER_PREDICTED,))
    expected = sk_confusion_matrix(labels.numpy(), predicted.numpy(), labels=range(N_CLASSES))
    got = confusion_matrix(labels.clone(), predicted.clone())
    what = "confusion_matrix(labels, predicted)"
    if isinstance(got, torch.Tensor):
        integer = not (got.dtype.is_floating_point or got.dtype.is_complex or got.dtype == torch.bool)
        array = got.detach().cpu().numpy()
    elif isinstance(got, np.ndarray):
        integer = np.issubdtype(got.dtype, np.integer)
        array = got
    else:
        raise Mismatch(f"expected {what} to be a torch tensor or NumPy array, got {type(got).__name__}")
    if array.shape != (N_CLASSES, N_CLASSES):
        raise Mismatch(f"expected {what} of shape (10, 10), got {tuple(array.shape)}; keep a row for "
                       f"every class, even one that never occurs")
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise Mismatch(f"expected {what} to hold counts, got dtype {array.dtype}") from None
    if np.array_equal(array, expected.T) and not np.array_equal(array, expected):
        raise Mismatch("the matrix is transposed: rows must be the TRUE classes and columns the PREDICTED "
                       "ones (matrix[true, predicted])")
    if array.sum() != expected.sum():
        raise Mismatch(f"expected the counts to sum to {expected.sum()} (one per image), got {array.sum():g}")
    if not np.array_equal(array, expected):
        i, j = (int(v) for v in np.argwhere(array != expected)[0])
        raise Mismatch(f"expected matrix[{i}, {j}] (true {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}) = "
                       f"{expected[i, j]}, got {array[i, j]:g}")
    if not integer:
        raise Mismatch(f"the counts are right but stored as {got.dtype}; counts are integers "
                       f"(torch.zeros(10, 10, dtype=torch.long), or bincount's result)")
    return (f"(10, 10) counts of 600 fixed labels/predictions equal scikit-learn's confusion_matrix exactly "
            f"(rows true; {CLASS_NAMES[NEVER_TRUE]} never true, {CLASS_NAMES[NEVER_PREDICTED]} never predicted)")


@exercise("5.4", "precision_recall_f1",
          "precision = TP / column sum, recall = TP / row sum, F1 = 2·P·R / (P + R); "
          "return 0 for 0/0 (scikit-learn's zero_division=0)")
def check_precision_recall_f1(precision_recall_f1) -> str:
    expect_callable(precision_recall_f1, "a function precision_recall_f1(matrix, class_id)")
    labels, predicted = fixed_inputs(54, never_true=(NEVER_TRUE,), never_predicted=(NEVER_PREDICTED,))
    matrix = torch.as_tensor(sk_confusion_matrix(labels.numpy(), predicted.numpy(), labels=range(N_CLASSES)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels.numpy(), predicted.numpy(), labels=range(N_CLASSES), zero_division=0)
    zero_division = {NEVER_PREDICTED: "is never predicted, so its precision is 0/0",
                     NEVER_TRUE: "never occurs, so its recall is 0/0"}
    for k in range(N_CLASSES):
        call = f"precision_recall_f1(matrix, {k})"
        answer = precision_recall_f1(matrix.clone(), k)
        if isinstance(answer, (torch.Tensor, np.ndarray)):
            answer = list(answer.tolist()) if answer.ndim == 1 else answer
        if not isinstance(answer, (tuple, list)) or len(answer) != 3:
            length = f" of length {len(answer)}" if isinstance(answer, (tuple, list)) else ""
            raise Mismatch(f"expected {call} to return three numbers (precision, recall, f1), "
                           f"got {type(answer).__name__}{length}")
        got = [_number(v, f"{name} of {call}") for v, name in zip(answer, ("precision", "recall", "f1"))]
        want = [float(precision[k]), float(recall[k]), float(f1[k])]
        if any(math.isnan(v) or math.isinf(v) for v in got):
            why = zero_division.get(k, "has a 0/0 somewhere")
            raise Mismatch(f"{CLASS_NAMES[k]} (class {k}) {why}: expected (precision, recall, f1) = "
                           f"({want[0]:.4f}, {want[1]:.4f}, {want[2]:.4f}) with 0 for 0/0 as scikit-learn's "
                           f"zero_division=0, got ({got[0]:.4g}, {got[1]:.4g}, {got[2]:.4g})")
        if all(abs(a - b) <= 1e-6 for a, b in zip(got, want)):
            continue
        where = f"{CLASS_NAMES[k]} (class {k})"
        if want[0] != want[1] and abs(got[0] - want[1]) <= 1e-6 and abs(got[1] - want[0]) <= 1e-6:
            raise Mismatch(f"for {where} precision and recall are swapped (got {got[0]:.4f}, {got[1]:.4f}): "
                           f"precision divides TP by the COLUMN sum (all predicted {k}), recall by the ROW "
                           f"sum (all truly {k})")
        for index, name in enumerate(("precision", "recall")):
            if abs(got[index] - want[index]) > 1e-6:
                raise Mismatch(f"expected the {name} of {where} = {want[index]:.4f}, got {got[index]:.4g}")
        if abs(got[2] - (want[0] + want[1]) / 2) <= 1e-6:
            raise Mismatch(f"the F1 of {where} is the arithmetic mean of precision and recall ({got[2]:.4f}); "
                           f"F1 is their harmonic mean, 2·P·R / (P + R) = {want[2]:.4f}")
        raise Mismatch(f"expected the F1 of {where} = {want[2]:.4f}, got {got[2]:.4g}")
    return (f"(precision, recall, F1) of all 10 classes match scikit-learn's within 1e-6, including 0 for 0/0 "
            f"({CLASS_NAMES[NEVER_PREDICTED]} never predicted, {CLASS_NAMES[NEVER_TRUE]} never true)")
