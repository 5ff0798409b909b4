"""fmnist_lab.evaluate: predictions, accuracy, per-class accuracy, confusion matrix and report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fmnist_lab import evaluate
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNNBatch

LABELS = torch.tensor([0, 0, 1, 1, 6, 6, 6, 9])
PREDICTED = torch.tensor([0, 6, 1, 1, 0, 6, 6, 7])


def test_predictions_are_the_argmax_of_probabilities_that_sum_to_one(test16):
    torch.manual_seed(0)
    model = CNNBatch().train()
    predicted, probabilities = evaluate.predict(model, test16[0][:300], batch_size=64)
    assert probabilities.shape == (300, 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(300), atol=1e-5)
    assert torch.equal(predicted, probabilities.argmax(1))
    assert model.training  # the caller's mode is restored


def test_accuracy_counts_correct_predictions(test16):
    torch.manual_seed(0)
    model = CNNBatch()
    images, labels = test16[0][:500], test16[1][:500]
    predicted, _ = evaluate.predict(model, images)
    assert evaluate.accuracy(model, images, labels) == (predicted == labels).sum().item() / 500
    assert evaluate.accuracy(model, images, evaluate.predict(model, images)[0]) == 1.0


def test_confusion_matrix_rows_are_true_classes():
    matrix = evaluate.confusion_matrix(LABELS, PREDICTED)
    assert matrix.shape == (10, 10) and matrix.sum() == 8
    assert matrix[0, 6] == 1 and matrix[6, 0] == 1 and matrix[6, 6] == 2 and matrix[9, 7] == 1


def test_confusion_matrix_equals_scikit_learns_and_refuses_unknown_ids():
    generator = np.random.default_rng(0)
    labels, predicted = generator.integers(0, 10, 5000), generator.integers(0, 10, 5000)
    expected = sk_confusion_matrix(labels, predicted, labels=range(10))
    assert np.array_equal(evaluate.confusion_matrix(labels, predicted), expected)
    assert np.array_equal(evaluate.confusion_matrix(torch.tensor(labels), torch.tensor(predicted)), expected)
    assert evaluate.confusion_matrix([], []).sum() == 0
    with pytest.raises(FmnistLabError, match="class ids must be 0 … 9"):
        evaluate.confusion_matrix([0, 10], [0, 1])


def test_per_class_accuracy_by_class_name():
    per_class = evaluate.per_class_accuracy(LABELS, PREDICTED)
    assert per_class["T-shirt/top"] == 0.5 and per_class["Trouser"] == 1.0
    assert per_class["Shirt"] == pytest.approx(2 / 3) and per_class["Ankle boot"] == 0.0
    assert np.isnan(per_class["Bag"])  # no bags among the labels: undefined, not zero


def test_classification_report_names_the_classes():
    report = evaluate.classification_report(LABELS, PREDICTED)
    assert "T-shirt/top" in report and "Ankle boot" in report
    as_dict = evaluate.classification_report(LABELS, PREDICTED, output_dict=True)
    assert as_dict["Trouser"]["precision"] == 1.0 and as_dict["Shirt"]["recall"] == pytest.approx(2 / 3)


def test_images_of_the_wrong_size_get_a_clear_message():
    with pytest.raises(FmnistLabError, match="expects 16×16 images, got 28×28; load the data with image_size=16"):
        evaluate.predict(CNNBatch(), torch.rand(4, 1, 28, 28))
    with pytest.raises(FmnistLabError, match=r"shaped \(N, 1, H, W\), got \(4, 16, 16\)"):
        evaluate.predict(CNNBatch(), torch.rand(4, 16, 16))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_eval_batch_size_changes_no_logit_in_either_layout(test16, layout):
    torch.manual_seed(0)
    model = CNNBatch().to(memory_format=layout)
    for bn in (model.conv1_bn, model.conv2_bn, model.bn_fc1):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)  # eval mode uses these
    images = test16[0][:1000]
    reference = evaluate.predict_logits(model, images, batch_size=1000)
    for batch_size in (evaluate.EVAL_BATCH_SIZE, 64):
        assert torch.equal(evaluate.predict_logits(model, images, batch_size=batch_size), reference), batch_size


def test_predicted_classes_with_and_without_flip_tta(test16):
    torch.manual_seed(0)
    model = CNNBatch()
    images, labels = test16[0][:300], test16[1][:300]
    plain = evaluate.predicted_classes(model, images)
    assert torch.equal(plain, evaluate.predict(model, images)[0])
    flipped = evaluate.predicted_classes(model, images, tta=True)
    assert torch.equal(flipped, evaluate.flip_tta_probs(model, images).argmax(1))
    assert evaluate.fraction_right(flipped, labels) == evaluate.accuracy(model, images, labels, tta=True)
