"""Lesson 04's checks: the reference and other correct answers pass, classic mistakes fail and say why."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from fmnist_lab.checks import run_check
from fmnist_lab.models import CNNBatch

# --- 4.1 train_one_epoch -------------------------------------------------------------------------


def train_one_epoch(model, batches, optimizer, criterion):
    """The reference answer."""
    model.train()
    cost = 0.0
    for images, labels in batches:
        optimizer.zero_grad()
        logits = model(images)
        loss = criterion(logits, labels)
        loss.backward()
        optimizer.step()
        cost += loss.item()
    return cost


def train_one_epoch_other(model, batches, optimizer, criterion):
    """Correct too: zero_grad after the step, set_to_none, a tensor total, losses collected in a list."""
    model.train(True)
    losses = []
    for batch in batches:
        loss = criterion(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses).sum()


def _loop(model, batches, optimizer, criterion, *, train=True, zero=True, step=True, total="sum"):
    if train:
        model.train()
    losses = []
    for x, y in batches:
        if zero:
            optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if step:
            optimizer.step()
        losses.append(loss.item())
    return {
        "sum": sum(losses),
        "mean": sum(losses) / len(losses),
        "last": losses[-1],
        "per_image": sum(losses) * len(batches[0][1]),
    }[total]


@pytest.mark.parametrize("answer", [train_one_epoch, train_one_epoch_other])
def test_4_1_correct_answers_pass(answer):
    result = run_check("4.1", answer)
    assert result.status == "passed", result.message
    assert "sum of 5 batch losses" in result.message and "within 1e-05" in result.message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"zero": False}, "without optimizer.zero_grad()"),
        ({"train": False}, "call model.train() first"),
        ({"step": False}, "the weights did not change"),
        ({"total": "mean"}, "that is the mean batch loss"),
        ({"total": "per_image"}, "× the batch size 12"),
        ({"total": "last"}, "the last batch's loss"),
    ],
)
def test_4_1_mistakes_fail_and_say_what_differs(options, fragment):
    result = run_check("4.1", lambda *args: _loop(*args, **options))
    assert result.status == "failed"
    assert fragment in result.message


def test_4_1_a_list_instead_of_a_number_fails():
    result = run_check("4.1", lambda model, batches, opt, crit: [train_one_epoch(model, batches, opt, crit)])
    assert result.status == "failed"
    assert "expected the returned cost to be a number, got list" in result.message


# --- 4.2 mean_loss_from_cost ---------------------------------------------------------------------


def mean_loss_from_cost(cost, n_images, batch_size):
    """The reference answer."""
    return cost / math.ceil(n_images / batch_size)


def test_4_2_reference_and_other_correct_answer_pass():
    result = run_check("4.2", mean_loss_from_cost)
    assert result.status == "passed"
    assert "297.99 over 600 batches = 0.4967" in result.message
    # Ceiling division by negating floor division, returned as a tensor: also correct.
    other = run_check("4.2", lambda cost, n, b: torch.tensor(cost, dtype=torch.float64) / -(-n // b))
    assert other.status == "passed", other.message


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (lambda cost, n, b: cost / n, "you divided by the number of images"),
        (lambda cost, n, b: cost / (n // b), "make 11 batches, the last one smaller"),
        (lambda cost, n, b: cost / (n / b), "make 11 batches, the last one smaller"),
        (lambda cost, n, b: cost * math.ceil(n / b), "expected mean_loss_from_cost(297.99, 60000, 100) = 0.49665"),
    ],
)
def test_4_2_mistakes_fail(answer, fragment):
    result = run_check("4.2", answer)
    assert result.status == "failed"
    assert fragment in result.message


# --- 4.3 evaluate_accuracy -----------------------------------------------------------------------


def evaluate_accuracy(model, images, labels):
    """The reference answer."""
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return (predicted == labels).float().mean().item()


def evaluate_accuracy_other(model, images, labels):
    """Correct too: chunks of 64 under inference_mode, torch.max, a count divided by len, training mode restored."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            _, predicted = torch.max(model(images[start : start + 64]), 1)
            correct += int((predicted == labels[start : start + 64]).sum())
    model.train(was_training)
    return correct / len(labels)


@pytest.mark.parametrize("answer", [evaluate_accuracy, evaluate_accuracy_other])
def test_4_3_correct_answers_pass(answer):
    result = run_check("4.3", answer)
    assert result.status == "passed", result.message
    assert "75.00% on 300 images" in result.message


def _without_eval(model, images, labels):
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def _without_eval_chunked(model, images, labels):
    with torch.no_grad():
        return sum(
            (model(images[i : i + 100]).argmax(1) == labels[i : i + 100]).sum().item()
            for i in range(0, len(images), 100)
        ) / len(labels)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (_without_eval, "call model.eval() first"),
        (_without_eval_chunked, "call model.eval() first"),
        (lambda m, x, y: 100 * evaluate_accuracy(m, x, y), "return a fraction, not a percentage"),
        (lambda m, x, y: evaluate_accuracy(m, x, y) * len(y), "that is the number of correct predictions"),
        (lambda m, x, y: 1 - evaluate_accuracy(m, x, y), "expected accuracy 0.7500 on 300 images, got 0.2500"),
    ],
)
def test_4_3_mistakes_fail(answer, fragment):
    result = run_check("4.3", answer)
    assert result.status == "failed"
    assert fragment in result.message


def test_4_3_a_tensor_of_predictions_fails():
    result = run_check("4.3", lambda m, x, y: m.eval()(x).argmax(1))
    assert result.status == "failed"
    assert "expected the returned accuracy to be one number, got a tensor of shape (300,)" in result.message


# --- 4.4 save_and_load ---------------------------------------------------------------------------


def save_and_load(model, path):
    """The reference answer."""
    torch.save(model.state_dict(), path)
    fresh = CNNBatch()
    fresh.load_state_dict(torch.load(path, map_location="cpu"))
    return fresh


def save_and_load_other(model, path):
    """Correct too: a str path, a CPU copy of each tensor, the image size taken from the model."""
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, str(path))
    state = torch.load(str(path), map_location=torch.device("cpu"), weights_only=True)
    fresh = CNNBatch(image_size=model.image_size)
    fresh.load_state_dict(state, strict=True)
    return fresh.eval()


@pytest.mark.parametrize("answer", [save_and_load, save_and_load_other])
def test_4_4_correct_answers_pass(answer):
    result = run_check("4.4", answer)
    assert result.status == "passed", result.message
    assert "state dict of 21 entries" in result.message and "identical logits on 50 images" in result.message


def _whole_model(model, path):
    torch.save(model, path)
    return torch.load(path, weights_only=False)


def _not_loaded(model, path):
    torch.save(model.state_dict(), path)
    return CNNBatch()


def _same_object(model, path):
    torch.save(model.state_dict(), path)
    return model


def _parameters_only(model, path):
    torch.save(dict(model.named_parameters()), path)
    fresh = CNNBatch()
    fresh.load_state_dict(torch.load(path), strict=False)
    return fresh


def _nothing_written(model, path):
    return copy.deepcopy(model)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (_whole_model, "save model.state_dict(), not the model itself"),
        (_not_loaded, "entries differ"),
        (_same_object, "got the very model you saved"),
        (_parameters_only, "missing ['bn_fc1.num_batches_tracked', 'bn_fc1.running_mean'"),
        (_nothing_written, "expected a file at the path you were given, found none"),
    ],
)
def test_4_4_mistakes_fail(answer, fragment):
    result = run_check("4.4", answer)
    assert result.status == "failed"
    assert fragment in result.message


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for exercise_id, answer in (("4.1", train_one_epoch), ("4.3", evaluate_accuracy)):
        run_check(exercise_id, answer)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_a_wrong_loss_does_not_crash_the_check():
    def wrong_criterion(model, batches, optimizer, criterion):
        return train_one_epoch(model, batches, optimizer, nn.MSELoss())

    result = run_check("4.1", wrong_criterion)
    assert result.status in {"failed", "error"}
