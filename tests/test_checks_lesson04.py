"""Lesson 04's checks: the reference and other correct answers pass, classic mistakes fail and say why."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from check_cases import fails, passes
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


def train_one_epoch_indexed(model, batches, optimizer, criterion):
    """Correct too: indexing instead of unpacking, float() instead of item(), mode set with train(mode=True)."""
    model.train(mode=True)
    total = 0.0
    for index in range(len(batches)):
        optimizer.zero_grad(set_to_none=False)
        loss = criterion(model(batches[index][0]), batches[index][1])
        loss.backward()
        optimizer.step()
        total = total + float(loss)
    return total


def _loop(model, batches, optimizer, criterion, *, train=True, order="zero backward step", total="sum", first=False):
    """The reference loop with one classic mistake: the steps in another `order`, a wrong `total`, one batch."""
    if train:
        model.train()
    losses, actions = [], {"zero": optimizer.zero_grad, "step": optimizer.step}
    for x, y in batches[:1] if first else batches:
        with torch.no_grad() if order == "no_grad" else contextlib.nullcontext():
            loss = criterion(model(x), y)
        for action in order.split():
            loss.backward() if action in ("backward", "no_grad") else actions[action]()
        losses.append(loss if total == "tensor" else loss.item())
    return {
        "sum": sum(losses),
        "tensor": sum(losses),
        "mean": sum(losses) / len(losses),
        "last": losses[-1],
        "per_image": sum(losses) * len(batches[0][1]),
    }[total]


@pytest.mark.parametrize("answer", [train_one_epoch, train_one_epoch_other, train_one_epoch_indexed])
def test_4_1_correct_answers_pass(answer):
    message = passes("4.1", answer).message
    assert "sum of 5 batch losses" in message and "within 1e-05" in message, message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"order": "backward step"}, "without optimizer.zero_grad()"),
        ({"train": False}, "call model.train() first"),
        ({"order": "zero backward"}, "the weights did not change"),
        ({"total": "mean"}, "that is the mean batch loss"),
        ({"total": "per_image"}, "× the batch size 12"),
        ({"total": "last"}, "the last batch's loss"),
        ({"order": "zero step backward"}, "the weights did not change: call loss.backward() and then optimizer.step()"),
        ({"order": "backward zero step"}, "with optimizer.zero_grad() before the backward pass, not between it"),
        ({"order": "no_grad"}, "loss.backward() found no gradient: the forward pass ran under torch.no_grad()"),
        ({"total": "tensor"}, "you returned a tensor that still holds the graph of every batch"),
        ({"first": True}, "the weights match training on the first batch only"),
    ],
)
def test_4_1_mistakes_fail_and_say_what_differs(options, fragment):
    fails("4.1", lambda *args: _loop(*args, **options), fragment=fragment)


def _normalises_in_place(model, batches, optimizer, criterion):
    for images, _ in batches:
        images.sub_(0.5)
    return train_one_epoch(model, batches, optimizer, criterion)


def test_4_1_changing_the_batches_in_place_fails():
    fails(
        "4.1",
        _normalises_in_place,
        fragment="changed its input images of batch 1 in place; leave the batches as they are",
    )


def test_4_1_a_list_instead_of_a_number_fails():
    fails(
        "4.1",
        lambda model, batches, opt, crit: [train_one_epoch(model, batches, opt, crit)],
        fragment="expected the returned cost to be a number, got list",
    )


# --- 4.2 mean_loss_from_cost ---------------------------------------------------------------------


def mean_loss_from_cost(cost, n_images, batch_size):
    """The reference answer."""
    return cost / math.ceil(n_images / batch_size)


def test_4_2_reference_and_other_correct_answer_pass():
    passes("4.2", mean_loss_from_cost, fragment="297.99 over 600 batches = 0.4967")
    # Ceiling division by negating floor division, returned as a tensor: also correct.
    other = run_check("4.2", lambda cost, n, b: torch.tensor(cost, dtype=torch.float64) / -(-n // b))
    assert other.status == "passed", other.message
    # Counting the batches the way a DataLoader makes them, as a NumPy number: also correct.
    counted = run_check("4.2", lambda cost, n, b: np.float64(cost) / len(range(0, n, b)))
    assert counted.status == "passed", counted.message


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (lambda cost, n, b: cost / n, "you divided by the number of images"),
        (lambda cost, n, b: cost / (n // b), "make 11 batches, the last one smaller"),
        (lambda cost, n, b: cost / (n / b), "make 11 batches, the last one smaller"),
        (lambda cost, n, b: cost * math.ceil(n / b), "expected mean_loss_from_cost(297.99, 60000, 100) = 0.49665"),
        (lambda cost, n, b: cost / (n // b + 1), "counts one batch too many when the images divide evenly"),
        (lambda cost, n, b: cost / b, "you divided by the batch size; divide by the number of batches"),
        (lambda cost, n, b: cost // math.ceil(n / b), "you used // on the cost; divide with /"),
        (lambda cost, n, b: math.ceil(n / b), "that is the number of batches; divide the cost by it"),
        (lambda cost, n, b: round(cost / math.ceil(n / b), 2), "= 0.49665, got 0.5"),
        (lambda cost, n, b: f"{cost / math.ceil(n / b):.4f}", "to be a number, got str"),
    ],
)
def test_4_2_mistakes_fail(answer, fragment):
    fails("4.2", answer, fragment=fragment)


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


def evaluate_accuracy_package(model, images, labels):
    """Correct too: the package's own function, which the lesson shows right after the exercise."""
    from fmnist_lab import evaluate

    return evaluate.accuracy(model, images, labels)


@pytest.mark.parametrize("answer", [evaluate_accuracy, evaluate_accuracy_other, evaluate_accuracy_package])
def test_4_3_correct_answers_pass(answer):
    passes("4.3", answer, fragment="75.00% on 300 images")


def _without_eval(model, images, labels):
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def _without_eval_chunked(model, images, labels):
    with torch.no_grad():
        return sum(
            (model(images[i : i + 100]).argmax(1) == labels[i : i + 100]).sum().item()
            for i in range(0, len(images), 100)
        ) / len(labels)


def _with_gradients(model, images, labels):
    model.eval()
    return (model(images).argmax(dim=1) == labels).float().mean().item()


def _back_to_training(model, images, labels):
    accuracy = evaluate_accuracy(model, images, labels)
    model.train()  # "ready for the next epoch"
    return accuracy


def _fixed_count(model, images, labels):
    model.eval()
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).sum().item() / 300


def _squeezed(model, images, labels):
    model.eval()
    with torch.no_grad():
        return (model(images).squeeze().argmax(dim=1) == labels).float().mean().item()


def _normalised_in_place(model, images, labels):
    images.clamp_(0.1, 0.9)
    return evaluate_accuracy(model, images, labels)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (_without_eval, "call model.eval() first"),
        (_without_eval_chunked, "call model.eval() first"),
        (lambda m, x, y: 100 * evaluate_accuracy(m, x, y), "return a fraction, not a percentage"),
        (lambda m, x, y: evaluate_accuracy(m, x, y) * len(y), "that is the number of correct predictions"),
        (lambda m, x, y: 1 - evaluate_accuracy(m, x, y), "got 0.25: that is the error rate"),
        (_with_gradients, "the model ran with gradients on: wrap the forward pass in torch.no_grad()"),
        (_back_to_training, "left a model it got in eval mode in training mode"),
        (_fixed_count, "expected the accuracy on 37 images = "),
        (_squeezed, "works on 300 images but fails on 1 image"),
        (_normalised_in_place, "changed its input images in place"),
        (lambda m, x, y: evaluate_accuracy(m, x, y[torch.randperm(len(y))]), "expected accuracy 0.7500 on 300 images"),
    ],
)
def test_4_3_mistakes_fail(answer, fragment):
    fails("4.3", answer, fragment=fragment)


def test_4_3_a_tensor_of_predictions_fails():
    fails(
        "4.3",
        lambda m, x, y: m.eval()(x).argmax(1),
        fragment="expected the returned accuracy to be one number, got a tensor of shape (300,)",
    )


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


def save_and_load_file_objects(model, path):
    """Correct too: open file objects, and a deep copy of the model as the fresh one, loaded from the file."""
    with open(path, "wb") as stream:
        torch.save(model.state_dict(), stream)
    fresh = copy.deepcopy(model)
    with open(path, "rb") as stream:
        fresh.load_state_dict(torch.load(stream, map_location="cpu", weights_only=True))
    return fresh


@pytest.mark.parametrize("answer", [save_and_load, save_and_load_other, save_and_load_file_objects])
def test_4_4_correct_answers_pass(answer):
    message = passes("4.4", answer).message
    assert "state dict of 21 entries" in message and "identical logits on 50 images" in message, message


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


def _wrapped(model, path):
    torch.save({"model": model.state_dict()}, path)
    fresh = CNNBatch()
    fresh.load_state_dict(torch.load(path)["model"])
    return fresh


def _state_dict_returned(model, path):
    torch.save(model.state_dict(), path)
    return torch.load(path)


def _no_return(model, path):
    torch.save(model.state_dict(), path)
    CNNBatch().load_state_dict(torch.load(path))


def _switches_the_saved_model(model, path):
    model.train()  # "so that the fresh copy matches"
    return save_and_load(model, path)


def _other_file(model, path):
    torch.save(model.state_dict(), "model_weights.pth")
    return save_and_load(model, Path(path).with_name("elsewhere.pth"))


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (_wrapped, "unexpected ['model']"),
        (_state_dict_returned, "expected the function to return the reloaded model, got OrderedDict"),
        (_no_return, "expected the function to return the reloaded model, got NoneType"),
        (_switches_the_saved_model, "your function changed the model it saved (its weights or its mode)"),
        (_other_file, "expected a file at the path you were given, found none"),
        (_whole_model, "save model.state_dict(), not the model itself"),
        (_not_loaded, "entries differ"),
        (_same_object, "got the very model you saved"),
        (_parameters_only, "missing ['bn_fc1.num_batches_tracked', 'bn_fc1.running_mean'"),
        (_nothing_written, "expected a file at the path you were given, found none"),
    ],
)
def test_4_4_mistakes_fail(answer, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a wrong answer may write beside the current folder
    fails("4.4", answer, fragment=fragment)


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
