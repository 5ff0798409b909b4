"""fmnist_lab.recipes: the split, normalisation, augmentations, loss, schedules, EMA, TTA and the loop."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fmnist_lab import evaluate, recipes
from fmnist_lab.data import InMemoryBatches
from fmnist_lab.engine import DetailedEpochRecord
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNNBatch, count_parameters
from fmnist_lab.original import ORIGINAL
from fmnist_lab.train import seed_everything


def test_train_val_split_is_seeded_disjoint_and_complete():
    images = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1, 1)
    labels = torch.arange(100) % 10
    (ti, tl), (vi, vl) = recipes.train_val_split(images, labels, val_size=20, seed=3)
    assert len(vi) == len(vl) == 20 and len(ti) == len(tl) == 80
    train_ids, val_ids = set(ti.flatten().long().tolist()), set(vi.flatten().long().tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(100))
    assert torch.equal(vl, vi.flatten().long() % 10)  # labels stay with their images
    (_, _), (again, _) = recipes.train_val_split(images, labels, val_size=20, seed=3)
    (_, _), (other, _) = recipes.train_val_split(images, labels, val_size=20, seed=4)
    assert torch.equal(again, vi) and not torch.equal(other, vi)
    with pytest.raises(FmnistLabError, match="val_size"):
        recipes.train_val_split(images, labels, val_size=100)


def test_normalized_wrapper_standardises_inputs_and_adds_no_parameters():
    images = torch.rand(500, 1, 16, 16) * 0.5 + 0.2
    mean, std = recipes.channel_stats(images)
    assert mean == pytest.approx(images.mean().item()) and std == pytest.approx(images.std().item())
    seen = {}
    inner = CNNBatch()
    inner.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    model = recipes.Normalized(inner, mean, std)
    model.eval()(images)
    assert seen["x"].mean().item() == pytest.approx(0, abs=1e-5)
    assert seen["x"].std().item() == pytest.approx(1, abs=1e-4)
    assert count_parameters(model) == 18_494 and model.image_size == 16
    with pytest.raises(FmnistLabError, match="std"):
        recipes.Normalized(inner, 0.5, 0.0)


def test_random_crop_flip_shifts_mirrors_and_is_seeded():
    images = torch.rand(64, 2, 8, 9, generator=torch.Generator().manual_seed(0))
    out = recipes.random_crop_flip(images, 1, torch.Generator().manual_seed(5))
    assert out.shape == images.shape
    padded = F.pad(images, (1, 1, 1, 1))
    flipped = 0
    for i in range(len(images)):
        views = [padded[i, :, dy : dy + 8, dx : dx + 9] for dy in range(3) for dx in range(3)]
        plain = any(torch.equal(out[i], v) for v in views)
        mirror = any(torch.equal(out[i], v.flip(-1)) for v in views)
        assert plain or mirror
        flipped += mirror and not plain
    assert 10 < flipped < 54
    assert torch.equal(out, recipes.random_crop_flip(images, 1, torch.Generator().manual_seed(5)))
    assert torch.equal(recipes.random_crop_flip(images, 0, None, flip=False), images)


def test_random_erasing_blanks_one_rectangle_in_about_p_of_the_images():
    images = torch.ones(400, 1, 28, 28)
    out = recipes.random_erasing(images, p=0.5, generator=torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).sum(1)
    assert 140 < (erased > 0).sum().item() < 260
    for i in torch.nonzero(erased).flatten()[:20].tolist():
        ys, xs = torch.nonzero(out[i, 0] == 0, as_tuple=True)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert h * w == erased[i]  # one filled rectangle
        assert 0.01 * 784 <= erased[i] <= 0.3 * 784
    assert torch.equal(images, torch.ones(400, 1, 28, 28))  # input untouched


def test_label_smoothing_loss_equals_pytorch():
    logits, targets = torch.randn(32, 10), torch.randint(0, 10, (32,))
    for eps in (0.0, 0.1, 0.25):
        assert recipes.label_smoothing_loss(logits, targets, eps).item() == pytest.approx(
            F.cross_entropy(logits, targets, label_smoothing=eps).item(), abs=1e-6
        )


def test_one_cycle_and_cosine_schedules():
    total, peak_lr = 1000, 0.4
    lrs = [recipes.one_cycle_lr(s, total, peak_lr) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(peak_lr / 25)
    assert max(lrs) == pytest.approx(peak_lr) and lrs.index(max(lrs)) == 300
    assert lrs[-1] == pytest.approx(peak_lr / 25 / 1e4)
    assert all(a <= b for a, b in zip(lrs[:300], lrs[1:301]))
    assert all(a >= b for a, b in zip(lrs[300:], lrs[301:]))
    # torch's OneCycleLR follows the same curve (its phases are one step apart from ours)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, peak_lr, total_steps=total + 1, pct_start=0.3)
    theirs = []
    for _ in range(total + 1):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(abs(a - b) for a, b in zip(lrs, theirs)) < 0.01 * peak_lr
    assert recipes.cosine_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert recipes.cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert recipes.cosine_lr(10, 10, 0.1) == pytest.approx(0.0, abs=1e-12)


def test_recipe_settings_and_bad_values():
    assert recipes.BASELINE.lr_at(123, 1000) == 0.1
    assert recipes.Recipe(schedule="onecycle").lr_at(300, 1000) == pytest.approx(0.1)
    assert recipes.BASELINE.but(flip=True).augments() and not recipes.BASELINE.augments()
    assert recipes.BASELINE.to_dict()["batch_size"] == 100
    with pytest.raises(FmnistLabError, match="schedule"):
        recipes.Recipe(schedule="steps")
    with pytest.raises(FmnistLabError, match="Nesterov"):
        recipes.Recipe(nesterov=True)
    with pytest.raises(FmnistLabError, match="optimizer"):
        recipes.Recipe(optimizer="adam")
    for name, changes in recipes.TRICKS.items():
        assert recipes.BASELINE.but(**changes) != recipes.BASELINE, name
    baseline = recipes.BASELINE
    assert (baseline.epochs, baseline.batch_size, baseline.lr, baseline.optimizer) == (
        ORIGINAL.epochs,
        ORIGINAL.batch_size,
        ORIGINAL.lr,
        ORIGINAL.optimizer.lower(),
    )


def test_dropout_hook_only_while_training():
    torch.manual_seed(0)
    model = recipes.add_dropout(nn.Sequential(nn.Linear(50, 50), nn.Linear(50, 3)), 0.5)
    x = torch.ones(4, 50)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
    assert count_parameters(model) == 50 * 50 + 50 + 50 * 3 + 3
    with pytest.raises(FmnistLabError, match="no Linear"):
        recipes.add_dropout(nn.Conv2d(1, 1, 3), 0.1)


def test_ema_update_and_warm_up():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.train()(torch.randn(8, 3))
    ema = recipes.EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # first update: decay min(0.9, 2/11)
    d = 2 / 11
    for name, value in ema.model.state_dict().items():
        if value.dtype.is_floating_point:
            expected = d * start[name] + (1 - d) * model.state_dict()[name]
            assert torch.allclose(value, expected), name
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training


def test_flip_tta_probs_averages_the_two_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    model.image_size = 4
    images = torch.rand(6, 1, 4, 4)
    probs = recipes.flip_tta_probs(model.train(), images, batch_size=4)
    expected = (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2
    assert torch.allclose(probs, expected.detach(), atol=1e-6)
    assert model.training  # mode restored
    symmetric = torch.ones(3, 1, 4, 4)
    assert torch.allclose(recipes.flip_tta_probs(model, symmetric), model(symmetric).softmax(1).detach())
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    assert evaluate.accuracy(model, images, labels, tta=True) == (probs.argmax(1) == labels).sum().item() / 6
    assert recipes.recipe_accuracy(model, images, labels, tta=True) == evaluate.accuracy(
        model, images, labels, tta=True
    )


@pytest.fixture(scope="module")
def small(train16):
    """2,000 training and 500 validation images at 16×16."""
    images, labels = train16
    return recipes.train_val_split(images[:2500], labels[:2500], val_size=500)


def _train(small, recipe, seed=0):
    seed_everything(seed)
    return recipes.train_recipe(CNNBatch(), *small, recipe, seed=seed, device="cpu")


EVERY_TRICK = recipes.Recipe(
    epochs=2,
    batch_size=50,
    lr=0.05,
    momentum=0.9,
    nesterov=True,
    schedule="onecycle",
    label_smoothing=0.1,
    normalize=True,
    crop_padding=1,
    flip=True,
    erasing=0.2,
    dropout=0.1,
    weight_decay=5e-4,
    ema_decay=0.9,
    tta=True,
)
"""Two short epochs on 2,000 images with every trick on."""


def test_train_recipe_learns_and_records_history(small):
    result = _train(small, EVERY_TRICK)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert list(result.history[0]) == list(DetailedEpochRecord.__annotations__)
    assert all(r["mean_loss"] == r["cost"] / 40 for r in result.history)  # 2,000 images: 40 batches of 50
    assert result.history[-1]["val_accuracy"] > 0.5 and result.history[-1]["val_accuracy_raw"] > 0.5
    assert result.history[-1]["lr"] == pytest.approx(recipes.one_cycle_lr(79, 80, 0.05))
    assert result.train_seconds > 0 and result.wall_seconds >= result.train_seconds
    assert isinstance(result.model, recipes.Normalized) and result.final is result.ema_model
    assert count_parameters(result.model) == 18_494
    assert result.accuracy(*small[1]) == pytest.approx(result.history[-1]["val_accuracy"])


def test_train_recipe_is_deterministic(small):
    recipe = recipes.Recipe(epochs=1, batch_size=100, crop_padding=1, flip=True, ema_decay=0.9)
    a, b = _train(small, recipe), _train(small, recipe)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]
    for x, y in zip(a.final.state_dict().values(), b.final.state_dict().values()):
        assert torch.equal(x, y)
    c = _train(small, recipe, seed=1)
    assert c.history[0]["mean_loss"] != a.history[0]["mean_loss"]


def test_baseline_recipe_matches_the_original_loop(small):
    """With no tricks a recipe is the package's `train`: the same batches, SGD steps, cost and accuracy."""
    from fmnist_lab.train import train

    result = _train(small, recipes.BASELINE.but(epochs=1))
    seed_everything(0)
    model = CNNBatch()
    history = train(model, *small, epochs=1, seed=0, progress=False, device="cpu")
    for x, y in zip(result.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(x, y)
    assert [{k: r[k] for k in history[0] if k != "seconds"} for r in result.history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in history
    ]


def _reference_loop(model: nn.Module, train_data, val_data, recipe: recipes.Recipe, seed: int = 0):
    """Lesson 07's loop written out step by step, on the CPU: the weights, the EMA and each epoch's accuracy."""
    images, labels = train_data
    if recipe.normalize:
        model = recipes.Normalized(model, *recipes.channel_stats(images))
    if recipe.dropout > 0:
        recipes.add_dropout(model, recipe.dropout)
    model.to(memory_format=torch.channels_last)
    batches = InMemoryBatches(images, labels, batch_size=recipe.batch_size, shuffle=True, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": recipe.weight_decay},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.SGD(groups, lr=recipe.lr_at(0, 1), momentum=recipe.momentum, nesterov=recipe.nesterov)
    ema = recipes.EMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    total, step, accuracies = recipe.epochs * len(batches), 0, []
    for _ in range(recipe.epochs):
        model.train()
        for x, y in batches:
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(step, total)
            if recipe.augments():
                x = recipes.augment(x, recipe, generator)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = recipes.label_smoothing_loss(logits.float(), y, recipe.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
        accuracies.append(evaluate.accuracy(ema.model if ema else model, *val_data, tta=recipe.tta))
    return model, ema, accuracies


def test_the_flip_tta_trick_trains_the_baselines_weights_so_lesson_07_reuses_them(small):
    baseline = recipes.BASELINE.but(epochs=1)
    plain, with_tta = _train(small, baseline), _train(small, baseline.but(**recipes.TRICKS["flip TTA"]))
    for x, y in zip(plain.model.state_dict().values(), with_tta.model.state_dict().values()):
        assert torch.equal(x, y)  # TTA changes no training step
    reused = recipes.Candidate("trained", tta=True).accuracy(plain, *small[1])
    assert reused == with_tta.history[-1]["val_accuracy"]  # the score the lesson would have trained for


@pytest.mark.parametrize(
    "recipe",
    [
        recipes.CNN_BATCH_RECIPE.but(epochs=1),
        EVERY_TRICK.but(schedule="cosine", normalize=False),
        EVERY_TRICK.but(epochs=1, bf16=True),
    ],
    ids=["CNN_BATCH_RECIPE, 1 epoch", "every trick", "every trick, bf16 autocast"],
)
def test_train_recipe_takes_the_steps_of_the_loop_written_out(small, recipe):
    """`train_recipe` on 2,000 images against lesson 07's loop written out: bit-identical weights, EMA, accuracies."""
    result = _train(small, recipe)
    seed_everything(0)
    model, ema, accuracies = _reference_loop(CNNBatch(), *small, recipe)
    for (name, ours), theirs in zip(result.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(ours, theirs), name
    for (name, ours), theirs in zip(result.ema_model.state_dict().items(), ema.model.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert [r["val_accuracy"] for r in result.history] == accuracies


def test_bf16_runs_the_training_forward_pass_in_bfloat16_and_keeps_the_weights_float32(small):
    seen = []
    seed_everything(0)
    model = CNNBatch()
    model.cnn1.register_forward_hook(lambda module, inputs, output: seen.append((module.training, output.dtype)))
    result = recipes.train_recipe(model, small[0], small[1], recipes.BASELINE.but(epochs=1, bf16=True), device="cpu")
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}  # every training step
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation stays float32
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    fp32 = _train(small, recipes.BASELINE.but(epochs=1))
    assert fp32.history[0]["cost"] != result.history[0]["cost"]
    assert fp32.history[0]["cost"] == pytest.approx(result.history[0]["cost"], rel=0.02)


def test_train_recipe_rejects_wrong_image_size(small):
    from fmnist_lab.resnet import ResNet

    with pytest.raises(FmnistLabError, match="28×28"):
        recipes.train_recipe(ResNet(), *small, recipes.BASELINE, device="cpu")


def test_ema_and_schedule_functions_agree_with_math():
    assert recipes.one_cycle_lr(150, 1000, 1.0) == pytest.approx(0.04 + 0.96 * (1 - math.cos(math.pi / 2)) / 2)


def test_final_fit_on_train_and_validation_reuses_the_validated_choice(small):
    train, val = small
    everything = recipes.combine(train, val)
    assert len(everything[1]) == len(train[1]) + len(val[1])
    assert torch.equal(everything[0][len(train[1]) :], val[0])
    recipe = recipes.Recipe(epochs=1, batch_size=100, ema_decay=0.9)
    validated = _train(small, recipe)
    chosen, scores = recipes.select_on_validation(validated, *val)
    assert chosen in scores and list(scores) == list(recipes.CANDIDATES)
    assert [c.label for c in scores] == [
        "trained weights",
        "trained weights + flip TTA",
        "EMA weights",
        "EMA weights + flip TTA",
    ]
    assert scores[chosen] == max(scores.values())
    assert scores[recipes.Candidate("ema", tta=True)] == evaluate.accuracy(validated.ema_model, *val, tta=True)
    seed_everything(0)
    final = recipes.train_recipe(CNNBatch(), everything, None, recipe, seed=0, device="cpu")
    assert final.history[-1]["val_accuracy"] is None and final.history[-1]["val_accuracy_raw"] is None
    model, final_tta = recipes.candidate(final, chosen)
    assert final_tta == chosen.tta and model is (final.ema_model if chosen.weights == "ema" else final.model)
    assert recipes.candidate(final, recipes.Candidate("trained", tta=True)) == (final.model, True)
    without_ema = _train(small, recipes.Recipe(epochs=1, batch_size=100))
    assert list(recipes.select_on_validation(without_ema, *val)[1]) == list(recipes.CANDIDATES[:2])
    with pytest.raises(FmnistLabError, match="ema_decay 0"):
        recipes.Candidate("ema").model(without_ema)
    with pytest.raises(FmnistLabError, match="unknown weights 'best'"):
        recipes.Candidate("best")
    with pytest.raises(FmnistLabError, match="at least one split"):
        recipes.combine()


@pytest.mark.process
def test_importing_the_package_leaves_tqdm_auto_alone():
    """tqdm.auto is imported only when a bar is shown: importing it prints a notice in notebooks without ipywidgets."""
    code = (
        "import sys, fmnist_lab.engine, fmnist_lab.train, fmnist_lab.recipes, fmnist_lab.cli; "
        "print(sorted(m for m in sys.modules if m in ('tqdm.auto', 'tqdm.autonotebook', 'tqdm.notebook')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_speed_runs_are_the_resnet_recipe_for_more_epochs_in_float32_and_bf16_for_a_larger_budget():
    budgets = list(recipes.SPEED_RUN_RECIPES)
    assert budgets == sorted(budgets) and len(budgets) == 2
    for precision in (0, 1):  # float32, then bf16: more epochs in a larger budget
        epochs = [recipes.SPEED_RUN_RECIPES[b][precision].epochs for b in budgets]
        assert epochs == sorted(epochs) and epochs[0] < epochs[1]
    for fp32, bf16 in recipes.SPEED_RUN_RECIPES.values():  # bf16's faster epochs: more of them in the same budget
        assert fp32 == recipes.RESNET_RECIPE.but(epochs=fp32.epochs) and not fp32.bf16
        assert bf16 == recipes.RESNET_RECIPE.but(epochs=bf16.epochs, bf16=True) and bf16.epochs > fp32.epochs
