"""Lesson 05's exercise checks: the reference and other correct answers pass, plausible mistakes fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmnist_lab.checks import run_check

# --- reference answers (the solution notebook's) ---------------------------------------------------


def accuracy(labels, predicted):
    return (predicted == labels).float().mean().item()


def per_class_accuracy(labels, predicted):
    correct = torch.bincount(labels[predicted == labels], minlength=10)
    total = torch.bincount(labels, minlength=10)
    return correct / total


def confusion_matrix(labels, predicted):
    return torch.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)


def precision_recall_f1(matrix, class_id):
    tp = matrix[class_id, class_id].item()
    predicted_k = matrix[:, class_id].sum().item()
    true_k = matrix[class_id, :].sum().item()
    precision = tp / predicted_k if predicted_k else 0.0
    recall = tp / true_k if true_k else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# --- correct answers written differently --------------------------------------------------------


def accuracy_numpy(labels, predicted):
    return np.mean(np.asarray(labels) == np.asarray(predicted))


def accuracy_tensor(labels, predicted):
    return (labels == predicted).sum() / len(labels)  # a 0-d float tensor


def per_class_accuracy_loop(labels, predicted):
    return [((predicted == labels) & (labels == k)).sum().item() / (labels == k).sum().item() for k in range(10)]


def per_class_accuracy_dict(labels, predicted):
    from fmnist_lab.data import CLASS_NAMES

    return {name: float((predicted[labels == k] == k).double().mean()) for k, name in enumerate(CLASS_NAMES)}


def confusion_matrix_loop(labels, predicted):
    matrix = np.zeros((10, 10), dtype=np.int64)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        matrix[t, p] += 1
    return matrix


def confusion_matrix_index_put(labels, predicted):
    matrix = torch.zeros(10, 10, dtype=torch.int32)
    return matrix.index_put_((labels, predicted), torch.ones_like(labels, dtype=torch.int32), accumulate=True)


def precision_recall_f1_tensor(matrix, class_id):
    m = matrix.double()
    tp = m[class_id, class_id]
    precision = torch.nan_to_num(tp / m[:, class_id].sum())
    recall = torch.nan_to_num(tp / m[class_id].sum())
    f1 = torch.nan_to_num(2 / (1 / precision + 1 / recall), posinf=0.0)
    return torch.stack([precision, recall, f1])


# --- plausible mistakes ---------------------------------------------------------------------------


def per_class_precision(labels, predicted):
    correct = torch.bincount(labels[predicted == labels], minlength=10)
    return correct / torch.bincount(predicted, minlength=10)  # divides by how often each class is predicted


def per_class_accuracy_no_minlength(labels, predicted):
    return torch.bincount(labels[predicted == labels]) / torch.bincount(labels)


def per_class_accuracy_no_minlength_list(labels, predicted):
    correct, total = torch.bincount(labels[predicted == labels]), torch.bincount(labels)
    return [c / t for c, t in zip(correct.tolist(), total.tolist())]


def precision_recall_f1_nan(matrix, class_id):
    m = matrix.double()
    tp = m[class_id, class_id]
    precision, recall = tp / m[:, class_id].sum(), tp / m[class_id].sum()
    return precision, recall, 2 * precision * recall / (precision + recall)


def precision_recall_f1_swapped(matrix, class_id):
    precision, recall, f1 = precision_recall_f1(matrix, class_id)
    return recall, precision, f1


def precision_recall_f1_mean(matrix, class_id):
    precision, recall, _ = precision_recall_f1(matrix, class_id)
    return precision, recall, (precision + recall) / 2


@pytest.mark.parametrize(
    "exercise_id,answer,fragment",
    [
        ("5.1", accuracy, "as scikit-learn's accuracy_score (within 1e-6)"),
        ("5.1", accuracy_numpy, "1.0 when all are right"),
        ("5.1", accuracy_tensor, "correct) and 1.0"),
        ("5.2", per_class_accuracy, "10 values match scikit-learn's per-class recall within 1e-6"),
        ("5.2", per_class_accuracy_loop, "per-class recall"),
        ("5.2", per_class_accuracy_dict, "per-class recall"),
        ("5.3", confusion_matrix, "equal scikit-learn's confusion_matrix exactly"),
        ("5.3", confusion_matrix_loop, "Ankle boot never true, Sneaker never predicted"),
        ("5.3", confusion_matrix_index_put, "rows true"),
        ("5.4", precision_recall_f1, "of all 10 classes match scikit-learn's within 1e-6, including 0 for 0/0"),
        ("5.4", precision_recall_f1_tensor, "including 0 for 0/0"),
    ],
)
def test_correct_answers_pass(exercise_id, answer, fragment):
    result = run_check(exercise_id, answer)
    assert result.status == "passed", result.message
    assert fragment in result.message


def test_reference_messages_give_the_numbers():
    assert run_check("5.1", accuracy).message.startswith("0.7140 on 500 fixed labels/predictions (357 correct)")
    assert "down to 0 for Ankle boot, which is never predicted" in run_check("5.2", per_class_accuracy).message


@pytest.mark.parametrize(
    "exercise_id,answer,fragment",
    [
        (
            "5.1",
            lambda labels, predicted: (labels == predicted).sum().item(),
            "that is the number of correct predictions; divide it by the number of images (500)",
        ),
        ("5.1", lambda labels, predicted: 100 * accuracy(labels, predicted), "a percentage"),
        ("5.1", lambda labels, predicted: 1 - accuracy(labels, predicted), "the error rate"),
        (
            "5.1",
            lambda labels, predicted: (labels == predicted).sum() // len(labels),
            "expected accuracy = 0.7140 (357 correct of 500), got 0",
        ),
        ("5.1", lambda labels, predicted: [accuracy(labels, predicted)], "to be a number, got list"),
        ("5.2", per_class_precision, "these are the precisions"),
        ("5.2", per_class_accuracy_no_minlength_list, "expected 10 values (one per class, even for a class"),
        (
            "5.2",
            lambda labels, predicted: torch.full((10,), accuracy(labels, predicted)),
            "all ten values equal the overall accuracy",
        ),
        ("5.2", lambda labels, predicted: 100 * per_class_accuracy(labels, predicted), "got percentages"),
        ("5.2", lambda labels, predicted: accuracy(labels, predicted), "to be a tensor, array or list of 10 numbers"),
        (
            "5.3",
            lambda labels, predicted: confusion_matrix(predicted, labels),
            "the matrix is transposed: rows must be the TRUE classes",
        ),
        (
            "5.3",
            lambda labels, predicted: confusion_matrix(labels, predicted).float(),
            "the counts are right but stored as torch.float32",
        ),
        (
            "5.3",
            lambda labels, predicted: torch.bincount(labels * 10 + predicted).reshape(9, 10),
            "expected confusion_matrix(labels, predicted) of shape (10, 10), got (9, 10)",
        ),
        (
            "5.3",
            lambda labels, predicted: confusion_matrix(labels[1:], predicted[1:]),
            "expected the counts to sum to 600 (one per image), got 599",
        ),
        (
            "5.3",
            lambda labels, predicted: confusion_matrix(labels, predicted).tolist(),
            "to be a torch tensor or NumPy array, got list",
        ),
        ("5.4", precision_recall_f1_nan, "Sneaker (class 7) is never predicted, so its precision is 0/0"),
        ("5.4", precision_recall_f1_nan, "with 0 for 0/0 as scikit-learn's zero_division=0"),
        ("5.4", precision_recall_f1_swapped, "precision and recall are swapped"),
        ("5.4", precision_recall_f1_mean, "is the arithmetic mean of precision and recall"),
        (
            "5.4",
            lambda matrix, class_id: precision_recall_f1(matrix, class_id)[:2],
            "to return three numbers (precision, recall, f1), got tuple of length 2",
        ),
    ],
)
def test_plausible_mistakes_fail_and_say_what_differs(exercise_id, answer, fragment):
    result = run_check(exercise_id, answer)
    assert result.status == "failed", result.message
    assert fragment in result.message
    assert "— hint: " in result.message


def test_missing_minlength_that_crashes_is_an_error_with_the_hint():
    result = run_check("5.2", per_class_accuracy_no_minlength)  # 9 correct counts / 10 totals: a RuntimeError
    assert result.status == "error" and "minlength=10" in result.message
