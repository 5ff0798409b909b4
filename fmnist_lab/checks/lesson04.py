"""Checks of lesson 04 (the training loop): one epoch, the summed cost, accuracy in eval mode, save and load.

Decided: the models come from the check, so dtype and device are the check's (float32 on the CPU; a
file saved on a GPU cannot be tested here, so `map_location` is explained, not checked). No tensor
handed over may be changed in place (the batches, the images, the labels, the saved model). 4.1 may leave
the model in either mode but must return a plain number, not a tensor that still holds the graph.
4.3 may return any kind of number, must run the model in eval mode under `torch.no_grad()` (or
`torch.inference_mode()`), must leave a model handed over in eval mode in eval mode, and may use
`fmnist_lab.evaluate.accuracy` (the lesson shows it right after the exercise). 4.4 must not change
the model it saves, its weights or its mode.
"""

from __future__ import annotations

import copy
import functools
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk
from fmnist_lab.models import CNNBatch

ATOL_WEIGHTS, RTOL_COST = 1e-5, 1e-5
_cost_close = functools.partial(tk.is_close, atol=1e-7, rtol=RTOL_COST)


def _max_difference(model_a: nn.Module, model_b: nn.Module, parameters_only: bool = False) -> float:
    """The largest absolute difference between two models' parameters (and float buffers); NaN if any is NaN."""
    names, pairs = dict(model_a.named_parameters()), zip(model_a.state_dict().items(), model_b.state_dict().values())
    kept = [(a, b) for (name, a), b in pairs if a.is_floating_point() and (name in names or not parameters_only)]
    return float(np.max([tk.max_difference(a, b) for a, b in kept], initial=0.0))


def _same_weights(mine: nn.Module, variant: nn.Module) -> bool:
    """Whether two models' weights agree within ATOL_WEIGHTS: how the variant of a known mistake is recognised."""
    return _max_difference(mine, variant) <= ATOL_WEIGHTS


# --- 4.1 train_one_epoch -------------------------------------------------------------------------

N_BATCHES, BATCH = 5, 12


def _epoch_setup() -> tuple[CNNBatch, list[tuple[Tensor, Tensor]]]:
    """A small CNNBatch (8×8 inputs) and five fixed batches of 12 random images with labels."""
    model = tk.seeded(4, lambda: CNNBatch(image_size=8))
    g = torch.Generator().manual_seed(41)
    batches = [
        (torch.rand(BATCH, 1, 8, 8, generator=g), torch.randint(0, 10, (BATCH,), generator=g)) for _ in range(N_BATCHES)
    ]
    return model, batches


def _reference_epoch(
    model: nn.Module, batches, *, train_mode: bool = True, zero_grad: bool = True
) -> tuple[nn.Module, float, list[float]]:
    """One epoch of SGD (lr 0.1) on a copy of `model`, optionally with a classic mistake."""
    model, criterion, losses = copy.deepcopy(model).train(train_mode), nn.CrossEntropyLoss(), []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in batches:
        if zero_grad:
            optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, sum(losses), losses


@exercise(
    "4.1",
    "train_one_epoch",
    "model.train(), then for each batch: optimizer.zero_grad(), logits = model(images), "
    "loss = criterion(logits, labels), loss.backward(), optimizer.step(); add up loss.item()",
)
def check_train_one_epoch(train_one_epoch) -> str:
    """Five batches from an eval-mode CNNBatch: the updated weights, then the summed cost."""
    tk.expect_function(train_one_epoch, "a function train_one_epoch(model, batches, optimizer, criterion)")
    initial, batches = _epoch_setup()
    reference, cost, losses = _reference_epoch(initial, batches)
    learner = copy.deepcopy(initial).eval()  # as after an evaluation: the function must switch to training
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1)
    given = [(x.clone(), y.clone()) for x, y in batches]
    watched = {
        f"{kind} of batch {i}": t for i, pair in enumerate(given, 1) for kind, t in zip(("images", "labels"), pair)
    }
    try:
        with tk.watch(advice="leave the batches as they are (normalise a copy if you must)", **watched):
            result = train_one_epoch(learner, given, optimizer, nn.CrossEntropyLoss())
    except RuntimeError as exc:
        if "does not require grad" not in str(exc):
            raise
        raise Mismatch(
            "loss.backward() found no gradient: the forward pass ran under torch.no_grad() (or its output was "
            "detached); training needs the graph"
        ) from None
    if isinstance(result, Tensor) and result.requires_grad:
        raise Mismatch(
            "you returned a tensor that still holds the graph of every batch: add loss.item() (a Python number) "
            "to the cost, not loss"
        )
    got = tk.as_number(result, "the returned cost")
    where = f"after one epoch of {N_BATCHES} batches (SGD lr 0.1)"
    if not (difference := _max_difference(learner, reference)) <= ATOL_WEIGHTS:
        if _max_difference(learner, initial, parameters_only=True) == 0.0:
            raise Mismatch(
                f"{where} the weights did not change: call loss.backward() and then optimizer.step() for every "
                "batch, with optimizer.zero_grad() before the backward pass, not between it and the step"
            )
        mistakes = [
            (
                "the weights match a loop without optimizer.zero_grad(): the gradients of earlier batches piled up",
                lambda: _reference_epoch(initial, batches, zero_grad=False)[0],
            ),
            (
                "the weights match a model left in eval mode (the check hands you a model in eval mode): call "
                "model.train() first",
                lambda: _reference_epoch(initial, batches, train_mode=False)[0],
            ),
            (
                "the weights match training on the first batch only: loop over every batch",
                lambda: _reference_epoch(initial, batches[:1])[0],
            ),
        ]
        gap = f"the weights differ from the reference's by up to {difference:.3g} (tolerance {ATOL_WEIGHTS:g})"
        tk.name_the_mistake(learner, mistakes, _same_weights, found=f"{where} ", otherwise=f"{where} {gap}")
    if not _cost_close(got, cost):
        mistakes = [
            (": that is the mean batch loss; add the batch losses up instead", cost / N_BATCHES),
            (
                f" (× the batch size {BATCH}): add loss.item() itself, the loss is already a mean over the batch",
                cost * BATCH,
            ),
            (": that is the last batch's loss; add up every batch's loss", losses[-1]),
        ]
        summed = f"expected the summed cost {cost:.4f}"
        otherwise = f"{summed} (the sum of {N_BATCHES} batch losses), got {got:.4f}"
        tk.name_the_mistake(got, mistakes, _cost_close, found=f"{summed}, got {got:.4f}", otherwise=otherwise)
    return (
        f"cost {got:.4f} = sum of {N_BATCHES} batch losses, and the updated weights match the "
        f"reference within {ATOL_WEIGHTS:g}"
    )


# --- 4.2 mean_loss_from_cost ---------------------------------------------------------------------

MEAN_CASES = ((297.99, 60_000, 100), (50.0, 1_050, 100), (12.0, 1_000, 1_000), (7.5, 3, 2))
CLOSE_MEAN = functools.partial(tk.is_close, atol=1e-7, rtol=1e-9)


@exercise(
    "4.2",
    "mean_loss_from_cost",
    "the number of batches is math.ceil(n_images / batch_size) (the last batch may be smaller); divide the cost by it",
)
def check_mean_loss_from_cost(mean_loss_from_cost) -> str:
    """Four (cost, images, batch size) cases, one with a smaller last batch; any kind of number is accepted."""
    tk.expect_function(mean_loss_from_cost, "a function mean_loss_from_cost(cost, n_images, batch_size)")
    for cost, n_images, batch_size in MEAN_CASES:
        n_batches = math.ceil(n_images / batch_size)
        expected = cost / n_batches
        call = f"mean_loss_from_cost({cost}, {n_images}, {batch_size})"
        got = tk.as_number(mean_loss_from_cost(cost, n_images, batch_size), call)
        if tk.is_close(got, expected, atol=1e-12, rtol=1e-9):
            continue
        batches = f": {n_images:,} images in batches of {batch_size:,} make {n_batches:,} batches, the last one smaller"
        mistakes = [
            (": you divided by the number of images, but the cost adds one mean loss per batch", cost / n_images),
            (batches, cost / (n_images / batch_size)),
            (batches, cost / (n_images // batch_size)),
            (
                ": n_images // batch_size + 1 counts one batch too many when the images divide evenly; use "
                "math.ceil(n_images / batch_size)",
                cost / (n_images // batch_size + 1),
            ),
            (": you divided by the batch size; divide by the number of batches", cost / batch_size),
            (": you used // on the cost; divide with /", cost // n_batches),
            (": that is the number of batches; divide the cost by it", n_batches),
        ]
        shown = f"expected {call} = {expected:.6g}, got {got:.6g}"
        tk.name_the_mistake(got, mistakes, CLOSE_MEAN, found=shown, otherwise=shown)
    first = MEAN_CASES[0]
    return (
        f"{first[0]} over {first[1] // first[2]} batches = {first[0] / (first[1] // first[2]):.4f}, "
        f"and {len(MEAN_CASES) - 1} more cases (incl. a smaller last batch) match"
    )


# --- 4.3 evaluate_accuracy -----------------------------------------------------------------------

N_EVAL = 300
_accuracy_close = functools.partial(tk.is_close, atol=1e-7, rtol=1e-6)


def _accuracy_setup() -> tuple[CNNBatch, Tensor, Tensor, float]:
    """An untrained CNNBatch, 300 random images, and labels it gets 75% right in eval mode."""
    model = tk.seeded(0, CNNBatch)
    images = torch.rand(N_EVAL, 1, 16, 16, generator=torch.Generator().manual_seed(43))
    with torch.no_grad():
        labels = model.eval()(images).argmax(dim=1)
    labels[::4] = (labels[::4] + 1) % 10  # every 4th label wrong: 75% in eval mode
    return model.train(), images, labels, 0.75


@exercise(
    "4.3",
    "evaluate_accuracy",
    "model.eval() first (batch norm then uses its running statistics), predictions under "
    "torch.no_grad() with logits.argmax(dim=1), return (predicted == labels).float().mean().item()",
)
def check_evaluate_accuracy(evaluate_accuracy) -> str:
    """A batch-norm model handed over in training mode, then one in eval mode, on 300, 37 and 1 images."""
    tk.expect_function(evaluate_accuracy, "a function evaluate_accuracy(model, images, labels)")
    model, images, labels, expected = _accuracy_setup()
    before = copy.deepcopy(model.state_dict())
    grad_modes: list[bool] = []
    hook = model.register_forward_hook(lambda module, inputs, output: grad_modes.append(torch.is_grad_enabled()))
    answer = tk.call_unmodified(evaluate_accuracy, model, images, labels, names=("model", "images", "labels"))
    hook.remove()
    got = tk.as_number(answer, "the returned accuracy")
    stats_changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    if not _accuracy_close(got, expected):
        shown = f"expected accuracy {expected:.4f} on {N_EVAL} images, got {got:.4f}"
        if stats_changed:
            raise Mismatch(
                f"{shown}: the model ran in training mode (its batch-norm running statistics changed; the "
                "check hands you a model in training mode): call model.eval() first"
            )
        mistakes = [
            ("return a fraction, not a percentage", expected * 100),
            (
                f"that is the number of correct predictions; divide by the number of images ({N_EVAL})",
                expected * N_EVAL,
            ),
            ("that is the error rate, the fraction of wrong predictions; return the correct ones", 1 - expected),
        ]
        found = f"expected a fraction {expected:.4f}, got {got:g}: "
        tk.name_the_mistake(got, mistakes, _accuracy_close, found=found, otherwise=shown)
    if stats_changed:
        raise Mismatch(
            "the accuracy is right but your function changed the batch-norm running statistics: "
            "run the model in eval mode only"
        )
    if any(grad_modes):
        raise Mismatch(
            "the accuracy is right but the model ran with gradients on: wrap the forward pass in torch.no_grad() "
            "(an evaluation needs no graph, and building one costs memory and time)"
        )
    _expect_accuracy_on_other_sizes(evaluate_accuracy, model, images, labels)
    return (
        f"{expected:.2%} on {N_EVAL} images with a batch-norm model handed over in training mode, "
        "running statistics untouched"
    )


def _expect_accuracy_on_other_sizes(evaluate_accuracy, model: nn.Module, images, labels) -> None:
    """37 images and a single one, with the model handed over in eval mode: right, and still in eval mode."""
    with torch.no_grad():
        predicted = model.eval()(images).argmax(dim=1)
    for count in (37, 1):
        expected = (predicted[:count] == labels[:count]).double().mean().item()
        given = f"{count} image{'s' if count > 1 else ''}"
        what = f"the accuracy on {given}"
        with tk.other_input(f"{N_EVAL} images", given):
            got = tk.as_number(evaluate_accuracy(model.eval(), images[:count], labels[:count]), what)
        if not _accuracy_close(got, expected):
            shown = f"expected {what} = {expected:.4f}, got {got:.4f}"
            fewer = f": divide by the number of images you are given, len(labels), not {N_EVAL}"
            tk.name_the_mistake(got, [(fewer, expected * count / N_EVAL)], 1e-7, found=shown, otherwise=shown)
        if model.training:
            raise Mismatch(
                "your function left a model it got in eval mode in training mode: leave it as you found it "
                "(or in eval mode), not model.train() at the end"
            )


# --- 4.4 save_and_load ---------------------------------------------------------------------------


def _saved_model() -> CNNBatch:
    """A CNNBatch whose running statistics are not the defaults (a few training-mode forwards)."""
    model = tk.seeded(7, CNNBatch)
    g = torch.Generator().manual_seed(44)
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(20, 1, 16, 16, generator=g))
    return model.eval()


@exercise(
    "4.4",
    "save_and_load",
    "torch.save(model.state_dict(), path); fresh = CNNBatch(); "
    'fresh.load_state_dict(torch.load(path, map_location="cpu")); return fresh',
)
def check_save_and_load(save_and_load) -> str:
    """The file holds a full state dict; a fresh CNNBatch from it gives identical logits; the saved model unchanged."""
    tk.expect_function(save_and_load, "a function save_and_load(model, path)")
    original = _saved_model()
    given = copy.deepcopy(original)
    expected_state = original.state_dict()
    images = torch.rand(50, 1, 16, 16, generator=torch.Generator().manual_seed(45))
    with tempfile.TemporaryDirectory(prefix="fmnist-lab-4.4-") as tmp:
        path = Path(tmp) / "model_weights.pth"
        returned = save_and_load(given, path)
        if given.training or any(not torch.equal(v, expected_state[k]) for k, v in given.state_dict().items()):
            raise Mismatch(
                "your function changed the model it saved (its weights or its mode): saving and loading "
                "leaves the original model as it was"
            )
        if not path.is_file():
            raise Mismatch("expected a file at the path you were given, found none: save to `path`")
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same mistake
            raise Mismatch(
                "expected the file to hold a state dict (loadable with weights_only=True), "
                f"got something else ({type(exc).__name__}): save model.state_dict(), not the "
                "model itself"
            ) from None
    if not isinstance(stored, dict):
        raise Mismatch(f"expected the file to hold a state dict (a dict of tensors), got {type(stored).__name__}")
    missing, extra = sorted(set(expected_state) - set(stored)), sorted(set(stored) - set(expected_state))
    if missing or extra:
        raise Mismatch(
            f"expected the file to hold the {len(expected_state)} entries of model.state_dict(), "
            f"missing {missing[:3]}, unexpected {extra[:3]}"
        )
    if not isinstance(returned, nn.Module):
        raise Mismatch(f"expected the function to return the reloaded model, got {type(returned).__name__}")
    if returned is given:
        raise Mismatch(
            "expected a fresh model loaded from the file, got the very model you saved: "
            "build a new CNNBatch and load the state dict into it"
        )
    state = returned.state_dict()
    if set(state) != set(expected_state):
        raise Mismatch(
            f"expected the returned model to be a CNNBatch ({len(expected_state)} state entries), "
            f"got a {type(returned).__name__} with {len(state)}"
        )
    differing = [k for k, v in expected_state.items() if not torch.equal(state[k].cpu(), v)]
    if differing:
        raise Mismatch(
            f"expected the returned model to hold the saved weights, but {len(differing)} of "
            f"{len(expected_state)} entries differ (first: {differing[0]}): call "
            "load_state_dict with what torch.load returned"
        )
    with torch.no_grad():
        if not torch.equal(returned.eval().cpu()(images), original(images)):
            raise Mismatch("expected identical logits from the reloaded model in eval mode, got different ones")
    return (
        f"a state dict of {len(expected_state)} entries (incl. running statistics) on disk; the fresh "
        f"CNNBatch reloaded from it gives identical logits on {len(images)} images"
    )
