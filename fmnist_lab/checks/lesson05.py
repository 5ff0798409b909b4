"""Lesson 05 · Evaluation: accuracy, per-class accuracy, the confusion matrix, precision/recall/F1.

Every check feeds the learner's function fixed, seeded labels and predictions (never the trained
model) and compares the result with scikit-learn's on the same inputs. The inputs include a class
that is never predicted and, where it matters, a class that never occurs, so a missing `minlength`
or an unhandled 0/0 shows up.

Beyond the values, every check passes copies of its tensors and names any that the answer changes in
place, runs a second, odd-sized input (37 images: a count written into the function shows up), and
gives NaN or infinity its own message; a layer, a class or a computed result passed instead of the
function is named too. Decided (the contested cases):

- a float64 result passes: these are summary numbers, not inputs to a next layer, and scikit-learn
  computes them in float64 too; counts (5.3) must be integers;
- 5.3 is built by hand, as the lesson says: `sklearn.metrics.confusion_matrix` and the package's
  `evaluate.confusion_matrix` are ruled out; a name bound to them before the check runs is not seen
  (the limit of `forbid_call`). 5.1, 5.2 and 5.4 may use any library: the text rules nothing out;
- the device is not checked: `bincount` and boolean indexing, the tools of this lesson, do not run on
  PyTorch's `meta` device, the only stand-in for a GPU on a machine without one.
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import Tensor

from fmnist_lab import evaluate
from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk
from fmnist_lab.data import CLASS_NAMES

N_CLASSES = len(CLASS_NAMES)
NEVER_PREDICTED = 7  # Sneaker: no prediction is ever this class (confusion matrix, precision/recall/F1)
NEVER_CORRECT = 9  # Ankle boot: never predicted in 5.2's inputs (a bincount of correct labels needs minlength)
NEVER_TRUE = 9  # Ankle boot: no label is ever this class (confusion matrix, precision/recall/F1)
ODD_SIZE = 37  # the second input's number of images: a count written into the function shows up
FIRST = "the first labels/predictions"
SECOND = f"{ODD_SIZE} other labels/predictions"
BY_HAND = (
    "build the matrix by hand, as the exercise asks (a loop or torch.bincount); "
    "sklearn.metrics.confusion_matrix comes right after it, to compare with"
)


def call_on_copies(function, labels: Tensor, predicted: Tensor):
    """The learner's function on copies of (labels, predicted), Mismatch if it changes either in place."""
    return tk.call_unmodified(function, labels, predicted, names=("labels", "predicted"))


def wrong_on_second(what: str) -> Mismatch:
    """The answer was right on the first input and wrong on the odd-sized one: a size written into it."""
    return Mismatch(
        f"{what} is right on the first input but wrong on {ODD_SIZE} images: do not write the number of "
        "images into your function; take it from the input (len(labels))"
    )


def fixed_inputs(
    seed: int, n: int = 600, never_true: tuple[int, ...] = (), never_predicted: tuple[int, ...] = ()
) -> tuple[Tensor, Tensor]:
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


def _with_a_missing_class(seed: int, n: int = 600) -> tuple[Tensor, Tensor, np.ndarray]:
    """Seeded (labels, predicted) in which Ankle boot is never true and Sneaker never predicted, and scikit-learn's
    (10, 10) confusion matrix of them (rows true, columns predicted, every class kept)."""
    labels, predicted = fixed_inputs(seed, n, never_true=(NEVER_TRUE,), never_predicted=(NEVER_PREDICTED,))
    return labels, predicted, sk_confusion_matrix(labels.numpy(), predicted.numpy(), labels=range(N_CLASSES))


def _scores(labels: Tensor, predicted: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (0 where undefined), as scikit-learn computes them."""
    y_true, y_pred = labels.numpy(), predicted.numpy()
    return precision_recall_fscore_support(y_true, y_pred, labels=range(N_CLASSES), zero_division=0)[:3]


@exercise(
    "5.1",
    "accuracy",
    "the mean of (predicted == labels): the number of correct predictions divided by the number of images",
)
def check_accuracy(accuracy) -> str:
    tk.expect_plain_function(accuracy, "a function accuracy(labels, predicted)")
    labels, predicted = fixed_inputs(51, n=500)
    expected = accuracy_score(labels.numpy(), predicted.numpy())
    correct = int((labels == predicted).sum())
    what, answer = "accuracy(labels, predicted)", call_on_copies(accuracy, labels, predicted)
    tk.expect_finite(answer, what)
    got = tk.as_number(answer, what)
    mistakes = [
        (
            f"expected a fraction, {expected:.4f}, got {got:g}: that is the number of correct predictions; "
            f"divide it by the number of images ({len(labels)})",
            correct,
        ),
        (f"expected a fraction in [0, 1], {expected:.4f}, got {got:g}, a percentage", 100 * expected),
        (f"expected {expected:.4f}, got {got:.4f}, the error rate (the fraction of mistakes)", 1 - expected),
    ]
    otherwise = f"expected accuracy = {expected:.4f} ({correct} correct of {len(labels)}), got {got:.6g}"
    tk.expect_same(got, expected, what, mistakes, atol=1e-6, close=1e-4, found="", otherwise=otherwise)
    all_right = tk.as_number(call_on_copies(accuracy, labels, labels), "accuracy(labels, labels)")
    if not abs(all_right - 1.0) <= 1e-6:
        raise Mismatch(f"expected accuracy(labels, labels) = 1.0 (every prediction right), got {all_right:.6g}")
    few_labels, few_predicted = fixed_inputs(510, n=ODD_SIZE)
    with tk.other_input(FIRST, SECOND):
        second = call_on_copies(accuracy, few_labels, few_predicted)
    tk.expect_finite(second, f"accuracy on {ODD_SIZE} images")
    if not abs(tk.as_number(second, "accuracy") - accuracy_score(few_labels.numpy(), few_predicted.numpy())) <= 1e-6:
        raise wrong_on_second("accuracy")
    return (
        f"{expected:.4f} on 500 fixed labels/predictions ({correct} correct) and 1.0 when all are right, "
        f"as scikit-learn's accuracy_score (within 1e-6)"
    )


def _per_class_values(answer, what: str, why: str) -> np.ndarray:
    """The learner's 10 per-class accuracies (a tensor, array, list, or dict in class order) as float64."""
    return tk.as_array(list(answer.values()) if isinstance(answer, dict) else answer, what, N_CLASSES, why=why)


@exercise(
    "5.2",
    "per_class_accuracy",
    "for each class k: among the images whose TRUE label is k, the fraction predicted k "
    "(count with torch.bincount(..., minlength=10))",
)
def check_per_class_accuracy(per_class_accuracy) -> str:
    tk.expect_plain_function(per_class_accuracy, "a function per_class_accuracy(labels, predicted)")
    labels, predicted = fixed_inputs(52, never_predicted=(NEVER_CORRECT,))
    precision, recall, _ = _scores(labels, predicted)
    why = " (one per class, even for a class that is never predicted: bincount needs minlength=10)"
    what = "per_class_accuracy(labels, predicted)"
    got = _per_class_values(call_on_copies(per_class_accuracy, labels, predicted), what, why)
    if tk.is_close(got, recall, atol=1e-6):
        few_labels, few_predicted = fixed_inputs(520, n=ODD_SIZE, never_predicted=(NEVER_CORRECT,))
        with tk.other_input(FIRST, SECOND):
            second = call_on_copies(per_class_accuracy, few_labels, few_predicted)
        second = _per_class_values(second, f"per_class_accuracy on {ODD_SIZE} images", why)
        if not tk.is_close(second, _scores(few_labels, few_predicted)[1], atol=1e-6):
            raise wrong_on_second("per_class_accuracy")
        return (
            f"10 values match scikit-learn's per-class recall within 1e-6 on 600 fixed labels/predictions "
            f"(from {recall.max():.3f} for {CLASS_NAMES[int(recall.argmax())]} down to 0 for "
            f"{CLASS_NAMES[NEVER_CORRECT]}, which is never predicted)"
        )
    overall = float((labels == predicted).double().mean())
    mistakes = [
        ("expected fractions in [0, 1], got percentages (each value is 100 times too large)", 100 * recall),
        (
            "these are the precisions: you divided by how often each class was PREDICTED; divide by how many "
            "images truly belong to each class (the counts of `labels`)",
            precision,
        ),
        (f"all ten values equal the overall accuracy {overall:.4f}; compute one accuracy per true class", overall),
    ]
    if reason := tk.diagnose(np.nan_to_num(got), mistakes, close=1e-4):
        raise Mismatch(reason)
    if np.isnan(got).any():
        name = CLASS_NAMES[int(np.flatnonzero(np.isnan(got))[0])]
        raise Mismatch(f"got nan for {name}; every class occurs among these labels, so no value should be nan")
    tk.expect_finite(got, what)
    k = int(np.flatnonzero(np.abs(got - recall) > 1e-6)[0])
    raise Mismatch(
        f"expected {CLASS_NAMES[k]} (class {k}) = {recall[k]:.4f}, got {got[k]:.4g}"
        + (" (this class is never predicted, so its accuracy is 0)" if k == NEVER_CORRECT else "")
    )


def _count_matrix(function, labels: Tensor, predicted: Tensor, what: str) -> tuple[object, np.ndarray]:
    """The learner's matrix (as returned, and as float64 values) built by hand, of shape (10, 10)."""
    with tk.forbid_calls(((sklearn.metrics, "confusion_matrix"), (evaluate, "confusion_matrix")), BY_HAND):
        got = call_on_copies(function, labels, predicted)
    array = tk.as_array(got, what, lists=False)
    if array.shape != (N_CLASSES, N_CLASSES):
        raise Mismatch(
            f"expected {what} of shape (10, 10), got {array.shape}; keep a row for every class, even one that "
            "never occurs"
        )
    return got, array


@exercise(
    "5.3",
    "confusion_matrix",
    "a (10, 10) integer count: matrix[true, predicted] += 1 for each image, e.g. "
    "torch.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)",
)
def check_confusion_matrix(confusion_matrix) -> str:
    tk.expect_plain_function(confusion_matrix, "a function confusion_matrix(labels, predicted)")
    labels, predicted, expected = _with_a_missing_class(53)
    what = "confusion_matrix(labels, predicted)"
    got, array = _count_matrix(confusion_matrix, labels, predicted, what)
    tk.expect_finite(array, what)
    if not np.array_equal(array, expected):
        if np.array_equal(array, expected.T):
            raise Mismatch(
                "the matrix is transposed: rows must be the TRUE classes and columns the PREDICTED "
                "ones (matrix[true, predicted])"
            )
        if array.sum() != expected.sum():
            raise Mismatch(f"expected the counts to sum to {expected.sum()} (one per image), got {array.sum():g}")
        i, j = (int(v) for v in np.argwhere(array != expected)[0])
        raise Mismatch(
            f"expected matrix[{i}, {j}] (true {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}) = "
            f"{expected[i, j]}, got {array[i, j]:g}"
        )
    if not str(got.dtype).removeprefix("torch.").startswith(("int", "uint")):
        raise Mismatch(
            f"the counts are right but stored as {got.dtype}; counts are integers "
            f"(torch.zeros(10, 10, dtype=torch.long), or bincount's result)"
        )
    few_labels, few_predicted, few_expected = _with_a_missing_class(530, n=ODD_SIZE)
    with tk.other_input(FIRST, SECOND):
        _, second = _count_matrix(confusion_matrix, few_labels, few_predicted, f"the matrix of {ODD_SIZE} images")
    if not np.array_equal(second, few_expected):
        raise wrong_on_second("confusion_matrix")
    return (
        f"(10, 10) counts of 600 fixed labels/predictions equal scikit-learn's confusion_matrix exactly "
        f"(rows true; {CLASS_NAMES[NEVER_TRUE]} never true, {CLASS_NAMES[NEVER_PREDICTED]} never predicted)"
    )


@exercise(
    "5.4",
    "precision_recall_f1",
    "precision = TP / column sum, recall = TP / row sum, F1 = 2·P·R / (P + R); "
    "return 0 for 0/0 (scikit-learn's zero_division=0)",
)
def check_precision_recall_f1(precision_recall_f1) -> str:
    tk.expect_plain_function(precision_recall_f1, "a function precision_recall_f1(matrix, class_id)")
    labels, predicted, matrix = _with_a_missing_class(54)
    matrix = torch.as_tensor(matrix)
    scores = np.stack(_scores(labels, predicted), axis=1)  # (class, [precision, recall, f1])
    zero_division = {
        NEVER_PREDICTED: "is never predicted, so its precision is 0/0",
        NEVER_TRUE: "never occurs, so its recall is 0/0",
    }
    names = ("precision", "recall", "F1")
    for k, want in enumerate(scores):
        call, where = f"precision_recall_f1(matrix, {k})", f"{CLASS_NAMES[k]} (class {k})"
        answer = tk.call_unmodified(precision_recall_f1, matrix, k, names=("matrix",))
        answer = tk.as_tuple(answer, call, 3, "three numbers (precision, recall, f1)")
        got = np.array([tk.as_number(v, f"{name} of {call}") for v, name in zip(answer, ("precision", "recall", "f1"))])
        if not np.isfinite(got).all():
            raise Mismatch(
                f"{where} {zero_division.get(k, 'has a 0/0 somewhere')}: expected (precision, recall, "
                f"f1) = ({want[0]:.4f}, {want[1]:.4f}, {want[2]:.4f}) with 0 for 0/0 as scikit-learn's "
                f"zero_division=0, got ({got[0]:.4g}, {got[1]:.4g}, {got[2]:.4g})"
            )
        if tk.is_close(got, want, atol=1e-6):
            continue
        mistakes = [
            (
                f"for {where} precision and recall are swapped (got {got[0]:.4f}, {got[1]:.4f}): precision divides "
                f"TP by the COLUMN sum (all predicted {k}), recall by the ROW sum (all truly {k})",
                np.array([want[1], want[0], got[2]]) if want[0] != want[1] else None,  # whatever its F1
            ),
            (
                f"the F1 of {where} is the arithmetic mean of precision and recall ({got[2]:.4f}); F1 is their "
                f"harmonic mean, 2·P·R / (P + R) = {want[2]:.4f}",
                np.array([want[0], want[1], want[:2].mean()]),
            ),
            (f"expected fractions in [0, 1] for {where}, got percentages (100 times too large)", 100 * want),
        ]
        i = int(np.flatnonzero(np.abs(got - want) > 1e-6)[0])
        otherwise = f"expected the {names[i]} of {where} = {want[i]:.4f}, got {got[i]:.4g}"
        tk.name_the_mistake(got, mistakes, 1e-6, otherwise=otherwise)
    return (
        f"(precision, recall, F1) of all 10 classes match scikit-learn's within 1e-6, including 0 for 0/0 "
        f"({CLASS_NAMES[NEVER_PREDICTED]} never predicted, {CLASS_NAMES[NEVER_TRUE]} never true)"
    )
