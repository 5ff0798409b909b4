"""Lesson 05's exercise checks: the reference and other correct answers pass, plausible mistakes fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from check_cases import fails, passes
from conftest import assert_check_fails

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
    passes(exercise_id, answer, fragment=fragment)


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
    fails(exercise_id, answer, fragment=fragment)


def test_missing_minlength_that_crashes_is_an_error_with_the_hint():
    result = run_check("5.2", per_class_accuracy_no_minlength)  # 9 correct counts / 10 totals: a RuntimeError
    assert result.status == "error" and "minlength=10" in result.message


# --- issue 12: in place, other sizes, NaN, forbidden shortcuts, a class or a layer instead of the function ---


def accuracy_hard_coded_count(labels, predicted):
    return (labels == predicted).sum().item() / 500  # the number of images of the first input


def accuracy_subtracts_in_place(labels, predicted):
    return (labels.sub_(predicted) == 0).float().mean().item()


def accuracy_divides_by_no_images(labels, predicted):
    return (labels == predicted).sum() / (labels < 0).sum()  # a count of nothing: 357 / 0


def per_class_accuracy_fixed_buffer(labels, predicted):
    right = torch.zeros(600)  # one flag per image of the first batch it was tried on
    right[:] = (predicted == labels).float()
    return torch.bincount(labels, weights=right, minlength=10) / torch.bincount(labels, minlength=10)


def per_class_accuracy_marks_mistakes_in_place(labels, predicted):
    predicted[predicted != labels] = -1
    correct = torch.bincount(labels[predicted == labels], minlength=10)
    return correct / torch.bincount(labels, minlength=10)


def per_class_accuracy_correct_over_correct(labels, predicted):
    correct = torch.bincount(labels[predicted == labels], minlength=10)
    return correct / torch.bincount(labels[predicted == labels], minlength=10)  # 1, or 0 / 0 = NaN


def confusion_matrix_in_place(labels, predicted):
    return torch.bincount(labels.mul_(10).add_(predicted), minlength=100).reshape(10, 10)


def confusion_matrix_sklearn(labels, predicted):
    import sklearn.metrics

    return sklearn.metrics.confusion_matrix(labels, predicted, labels=range(10))


def confusion_matrix_package(labels, predicted):
    from fmnist_lab import evaluate

    return evaluate.confusion_matrix(labels, predicted)


def confusion_matrix_first_600(labels, predicted):
    matrix = torch.zeros(10, 10, dtype=torch.long)
    for i in range(600):
        matrix[labels[i % len(labels)], predicted[i % len(labels)]] += 1
    return matrix


def confusion_matrix_nan(labels, predicted):
    return confusion_matrix(labels, predicted) / (confusion_matrix(labels, predicted) > 0)  # 0 / 0 = NaN


def precision_recall_f1_false_positives_in_place(matrix, class_id):
    tp = matrix[class_id, class_id].item()
    matrix.fill_diagonal_(0)  # the mistakes only, then TP + FP = column + TP
    predicted_k, true_k = matrix[:, class_id].sum().item() + tp, matrix[class_id].sum().item() + tp
    precision, recall = (tp / predicted_k if predicted_k else 0.0), (tp / true_k if true_k else 0.0)
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def precision_recall_f1_percent(matrix, class_id):
    return tuple(100 * v for v in precision_recall_f1(matrix, class_id))


def precision_recall_f1_plus_one(matrix, class_id):
    tp = matrix[class_id, class_id].item()
    precision = tp / (matrix[:, class_id].sum().item() + 1)  # "avoids" 0/0
    recall = tp / (matrix[class_id].sum().item() + 1)
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def precision_recall_f1_diagonal_sum(matrix, class_id):
    tp = matrix.diagonal().sum().item()  # all correct predictions, not this class's
    return precision_recall_f1(matrix, class_id)[:2] + (tp,)


LAYER = "got a Identity layer (an instance): write the function"
CLASS = "got the class Identity: pass your function"


@pytest.mark.parametrize(
    "exercise_id,answer,fragment",
    [
        ("5.1", accuracy_hard_coded_count, "accuracy is right on the first input but wrong on 37 images"),
        ("5.1", accuracy_subtracts_in_place, "your function changed its input labels in place"),
        ("5.1", accuracy_divides_by_no_images, "holds 1 infinite value (of 1): look for a division by zero"),
        ("5.1", torch.nn.Identity(), LAYER),
        ("5.1", torch.nn.Identity, CLASS),
        ("5.1", 0.714, "(something callable), got float, a result: pass the function"),
        ("5.2", per_class_accuracy_marks_mistakes_in_place, "your function changed its input predicted in place"),
        (
            "5.2",
            per_class_accuracy_fixed_buffer,
            "works on the first labels/predictions but fails on 37 other labels/predictions",
        ),
        ("5.2", per_class_accuracy_correct_over_correct, "got nan for Ankle boot; every class occurs"),
        ("5.2", torch.nn.Identity(), LAYER),
        ("5.3", confusion_matrix_in_place, "your function changed its input labels in place"),
        ("5.3", confusion_matrix_sklearn, "build the matrix by hand, as the exercise asks"),
        ("5.3", confusion_matrix_package, "sklearn.metrics.confusion_matrix comes right after it"),
        ("5.3", confusion_matrix_first_600, "confusion_matrix is right on the first input but wrong on 37 images"),
        ("5.3", confusion_matrix_nan, "holds 30 NaN values (of 100): look for a division by zero"),
        ("5.3", torch.nn.Identity, CLASS),
        ("5.4", precision_recall_f1_false_positives_in_place, "your function changed its input matrix in place"),
        ("5.4", precision_recall_f1_percent, "got percentages (100 times too large)"),
        ("5.4", precision_recall_f1_plus_one, "expected the precision of T-shirt/top (class 0) = "),
        ("5.4", precision_recall_f1_diagonal_sum, "expected the F1 of T-shirt/top (class 0) = "),
        ("5.4", torch.nn.Identity(), LAYER),
    ],
)
def test_more_mistakes_fail_and_name_the_cause(exercise_id, answer, fragment):
    assert_check_fails(exercise_id, answer, fragment)


@pytest.mark.parametrize("exercise_id", ["5.1", "5.2", "5.3", "5.4"])
def test_a_correct_answer_leaves_its_inputs_and_the_libraries_alone(exercise_id):
    import sklearn.metrics

    from fmnist_lab import evaluate

    before = (sklearn.metrics.confusion_matrix, evaluate.confusion_matrix)
    answer = {"5.1": accuracy, "5.2": per_class_accuracy, "5.3": confusion_matrix, "5.4": precision_recall_f1}
    assert run_check(exercise_id, answer[exercise_id]).status == "passed"
    assert (sklearn.metrics.confusion_matrix, evaluate.confusion_matrix) == before
