"""Lesson 07's exercise checks: the reference and other correct answers pass, plausible mistakes fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from check_cases import fails, passes
from conftest import assert_check_fails
from torch.nn import functional as F

from fmnist_lab.checks import run_check
from fmnist_lab.recipes import EMA

# --- reference answers (the solution notebook's) ---------------------------------------------------


def random_crop_flip(images, padding, generator):
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    mirror = torch.rand(n, generator=generator) < 0.5
    return torch.where(mirror[:, None, None, None], out.flip(-1), out)


def label_smoothing_loss(logits, targets, smoothing):
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    return ((1 - smoothing) * nll - smoothing * log_probs.mean(dim=1)).mean()


def one_cycle_lr(step, total_steps, max_lr):
    start, peak = max_lr / 25, 0.3 * total_steps
    end = start / 1e4
    if step < peak:
        return start + (max_lr - start) * (1 - math.cos(math.pi * step / peak)) / 2
    return end + (max_lr - end) * (1 + math.cos(math.pi * (step - peak) / (total_steps - peak))) / 2


def ema_update(ema_model, model, decay):
    with torch.no_grad():
        current = model.state_dict()
        for name, average in ema_model.state_dict().items():
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(current[name], alpha=1 - decay)
            else:
                average.copy_(current[name])


def flip_tta_probs(model, images):
    model.eval()
    with torch.no_grad():
        return (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2


# --- correct answers written differently --------------------------------------------------------


def random_crop_flip_loop(images, padding, generator):
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    padded = F.pad(images, (padding,) * 4)
    for i in range(len(images)):
        top = int(torch.randint(0, 2 * padding + 1, (1,), generator=generator))
        left = int(torch.randint(0, 2 * padding + 1, (1,), generator=generator))
        crop = padded[i, :, top : top + h, left : left + w]
        if torch.rand(1, generator=generator).item() < 0.5:
            crop = torch.flip(crop, dims=[2])
        out[i] = crop
    return out


def random_crop_flip_flip_first_numpy(images, padding, generator):
    flips = torch.randint(0, 2, (len(images),), generator=generator).bool()
    images = torch.where(flips[:, None, None, None], images.flip(3), images)
    shifts = torch.randint(-padding, padding + 1, (len(images), 2), generator=generator).numpy()
    array = np.pad(images.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h, w = images.shape[-2:]
    return torch.from_numpy(
        np.stack(
            [
                array[i, :, padding + dy : padding + dy + h, padding + dx : padding + dx + w]
                for i, (dy, dx) in enumerate(shifts)
            ]
        )
    )


def label_smoothing_loss_targets(logits, targets, smoothing):
    k = logits.shape[1]
    q = torch.full_like(logits, smoothing / k)
    q[torch.arange(len(targets)), targets] += 1 - smoothing
    return (-(q * logits.log_softmax(1)).sum(1)).mean()


def label_smoothing_loss_builtin(logits, targets, smoothing):
    return F.cross_entropy(logits, targets, label_smoothing=smoothing)


def one_cycle_lr_numpy(step, total_steps, max_lr):
    low = max_lr / 25
    warm = int(0.3 * total_steps)
    if step <= warm:
        t = step / warm
        return float(low + (max_lr - low) * 0.5 * (1 - np.cos(np.pi * t)))
    t = (step - warm) / (total_steps - warm)
    return float(low / 1e4 + (max_lr - low / 1e4) * 0.5 * (1 + np.cos(np.pi * t)))


def ema_update_lerp(ema_model, model, decay):
    with torch.no_grad():
        for (name, e), m in zip(ema_model.state_dict().items(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(m, 1 - decay)


def ema_update_params_and_buffers(ema_model, model, decay):
    with torch.no_grad():
        for e, m in zip(ema_model.parameters(), model.parameters()):
            e.copy_(decay * e + (1 - decay) * m)
        for e, m in zip(ema_model.buffers(), model.buffers()):
            if e.dtype.is_floating_point:
                e.copy_(decay * e + (1 - decay) * m)


def flip_tta_probs_functional(model, images):
    was = model.training
    model.train(False)
    with torch.inference_mode():
        both = torch.cat([images, torch.flip(images, dims=[3])])
        probs = F.softmax(model(both), dim=-1)
    model.train(was)
    return probs.view(2, len(images), -1).mean(0)


# --- plausible mistakes ---------------------------------------------------------------------------


def crop_same_shift_for_the_batch(images, padding, generator):
    h, w = images.shape[-2:]
    top, left = (int(v) for v in torch.randint(0, 2 * padding + 1, (2,), generator=generator))
    out = F.pad(images, (padding,) * 4)[:, :, top : top + h, left : left + w]
    mirror = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(mirror[:, None, None, None], out.flip(-1), out)


def crop_with_roll(images, padding, generator):
    shifts = torch.randint(-padding, padding + 1, (len(images), 2), generator=generator)
    out = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(-2, -1)) for img, (dy, dx) in zip(images, shifts)])
    mirror = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(mirror[:, None, None, None], out.flip(-1), out)


def crop_without_generator(images, padding, generator):
    return random_crop_flip(images, padding, None)


def random_crop_flip_noflip(images, padding, generator):
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    return torch.stack([p[:, dy : dy + h, dx : dx + w] for p, (dy, dx) in zip(padded, offsets.tolist())])


def crop_flip_upside_down(images, padding, generator):
    out = random_crop_flip_noflip(images, padding, generator)
    mirror = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(mirror[:, None, None, None], out.flip(-2), out)


def smoothing_over_wrong_classes(logits, targets, smoothing):
    k = logits.shape[1]
    q = torch.full_like(logits, smoothing / (k - 1))
    q[torch.arange(len(targets)), targets] = 1 - smoothing
    return (-(q * logits.log_softmax(1)).sum(1)).mean()


def smoothing_sum(logits, targets, smoothing):
    return F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")


def smoothing_ignored(logits, targets, smoothing):
    return F.cross_entropy(logits, targets)


def one_cycle_from_zero(step, total_steps, max_lr):
    peak = 0.3 * total_steps
    if step < peak:
        return max_lr * (1 - math.cos(math.pi * step / peak)) / 2
    return one_cycle_lr(step, total_steps, max_lr)


def one_cycle_linear(step, total_steps, max_lr):
    start, peak = max_lr / 25, 0.3 * total_steps
    if step < peak:
        return start + (max_lr - start) * step / peak
    return one_cycle_lr(step, total_steps, max_lr)


def ema_swapped(ema_model, model, decay):
    ema_update(ema_model, model, 1 - decay)


def ema_parameters_only(ema_model, model, decay):
    with torch.no_grad():
        for e, m in zip(ema_model.parameters(), model.parameters()):
            e.mul_(decay).add_(m, alpha=1 - decay)


def ema_updates_the_model(ema_model, model, decay):
    ema_update(model, ema_model, decay)


def tta_no_flip(model, images):
    model.eval()
    with torch.no_grad():
        return model(images).softmax(1)


def tta_logits_mean(model, images):
    model.eval()
    with torch.no_grad():
        return ((model(images) + model(images.flip(-1))) / 2).softmax(1)


def tta_upside_down(model, images):
    model.eval()
    with torch.no_grad():
        return (model(images).softmax(1) + model(images.flip(-2)).softmax(1)) / 2


def tta_training_mode(model, images):
    with torch.no_grad():
        return (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2


# --- the tests -------------------------------------------------------------------------------------


CORRECT = [
    ("7.1", one_cycle_lr, "3 cycles"),
    ("7.1", one_cycle_lr_numpy, ""),
    ("7.2", label_smoothing_loss, "F.cross_entropy(logits, targets, label_smoothing=ε) within 1e-5"),
    ("7.2", label_smoothing_loss_targets, ""),
    ("7.2", label_smoothing_loss_builtin, ""),
    ("7.3", random_crop_flip, "each output is its input shifted within ±2 px"),
    ("7.3", random_crop_flip_loop, ""),
    ("7.3", random_crop_flip_flip_first_numpy, ""),
    ("7.4", ema_update, "0.9·ema + 0.1·current"),
    ("7.4", ema_update_lerp, ""),
    ("7.4", ema_update_params_and_buffers, ""),
    ("7.5", flip_tta_probs, "eval mode within 1e-5"),
    ("7.5", flip_tta_probs_functional, ""),
]


@pytest.mark.parametrize("exercise_id,answer,fragment", CORRECT)
def test_correct_answers_pass(exercise_id, answer, fragment):
    passes(exercise_id, answer, fragment=fragment)


MISTAKES = [
    ("7.1", one_cycle_from_zero, "warm-up starts at max_lr/25"),
    ("7.1", one_cycle_linear, "in the warm-up"),
    ("7.2", smoothing_over_wrong_classes, "over the 9 wrong classes"),
    ("7.2", smoothing_sum, "MEAN over the batch"),
    ("7.2", smoothing_ignored, "the smoothing is not applied"),
    ("7.3", crop_same_shift_for_the_batch, "one offset per image"),
    ("7.3", crop_with_roll, "zeros filling in"),
    ("7.3", crop_without_generator, "draw every random number from `generator`"),
    ("7.3", random_crop_flip_noflip, "no image of 200 was mirrored"),
    ("7.3", crop_flip_upside_down, "possibly mirrored left-right"),
    ("7.4", ema_swapped, "swapped"),
    ("7.4", ema_parameters_only, "running statistics included"),
    ("7.4", ema_updates_the_model, "update only the EMA copy"),
    ("7.5", tta_no_flip, "average them with those of the mirrored images"),
    ("7.5", tta_logits_mean, "averaged the logits"),
    ("7.5", tta_upside_down, "upside down"),
    ("7.5", tta_training_mode, "model.eval()"),
]


@pytest.mark.parametrize("exercise_id,answer,fragment", MISTAKES)
def test_mistakes_fail_and_say_why(exercise_id, answer, fragment):
    fails(exercise_id, answer, fragment=fragment)


def test_wrong_types_fail_without_crashing():
    assert run_check("7.3", lambda images, padding, generator: images.tolist()).status == "failed"
    assert run_check("7.2", lambda logits, targets, smoothing: "loss").status == "failed"
    assert run_check("7.1", lambda step, total, max_lr: [max_lr]).status == "failed"
    assert run_check("7.5", lambda model, images: None).status == "failed"


# --- issue 12: the package's answer, in place, other sizes, gradients, dtype, device, mode, NaN, kinds --------

LAYER = "layer (an instance): write the function"
PACKAGE = "is the answer itself: write the function, as the exercise asks"


def one_cycle_package(step, total_steps, max_lr):
    from fmnist_lab import recipes

    return recipes.one_cycle_lr(step, total_steps, max_lr)


def one_cycle_infinite_at_the_end(step, total_steps, max_lr):
    start, peak = max_lr / 25, 0.3 * total_steps
    if step < peak:
        return one_cycle_lr(step, total_steps, max_lr)
    t = np.float64(step - peak) / np.float64(total_steps - step) * (total_steps - step) / (total_steps - peak)
    return float(start / 1e4 + (max_lr - start / 1e4) * (1 + np.cos(np.pi * t)) / 2)


def one_cycle_to_zero(step, total_steps, max_lr):
    peak = 0.3 * total_steps
    if step < peak:
        return one_cycle_lr(step, total_steps, max_lr)
    return max_lr * (1 + math.cos(math.pi * (step - peak) / (total_steps - peak))) / 2


def one_cycle_quarter(step, total_steps, max_lr):
    return (
        one_cycle_lr(step * 0.3 / 0.25, total_steps, max_lr)
        if step < 0.25 * total_steps
        else one_cycle_lr(step, total_steps, max_lr)
    )


def one_cycle_from_a_tenth(step, total_steps, max_lr):
    start, peak = max_lr / 10, 0.3 * total_steps
    if step < peak:
        return start + (max_lr - start) * (1 - math.cos(math.pi * step / peak)) / 2
    return one_cycle_lr(step, total_steps, max_lr)


def one_cycle_thirty_steps(step, total_steps, max_lr):
    start, peak = max_lr / 25, 30  # 30% of the 100 steps it was written for
    end = start / 1e4
    if step < peak:
        return start + (max_lr - start) * (1 - math.cos(math.pi * step / peak)) / 2
    return end + (max_lr - end) * (1 + math.cos(math.pi * (step - peak) / (total_steps - peak))) / 2


def one_cycle_linear_anneal(step, total_steps, max_lr):
    peak = 0.3 * total_steps
    if step < peak:
        return one_cycle_lr(step, total_steps, max_lr)
    return max_lr - (max_lr - max_lr / 25e4) * (step - peak) / (total_steps - peak)


def smoothing_item(logits, targets, smoothing):
    return label_smoothing_loss(logits, targets, smoothing).item()


def smoothing_in_place(logits, targets, smoothing):
    logits -= logits.max(dim=1, keepdim=True).values  # "for stability"
    return label_smoothing_loss(logits, targets, smoothing)


def smoothing_ten_classes(logits, targets, smoothing):
    q = torch.full_like(logits, smoothing / 10)
    q[torch.arange(len(targets)), targets] += 1 - smoothing
    return (-(q * logits.log_softmax(1)).sum(1)).mean()


def smoothing_batch_of_64(logits, targets, smoothing):
    return (
        label_smoothing_loss(logits, targets, smoothing) * len(targets) / 64
        if len(targets) == 64
        else (label_smoothing_loss(logits, targets, smoothing) * len(targets) / 64)
    )


def smoothing_float64(logits, targets, smoothing):
    return label_smoothing_loss(logits.double(), targets, smoothing)


def smoothing_cpu_target(logits, targets, smoothing):
    q = torch.zeros(logits.shape)  # on the CPU, whatever the logits' device
    q[torch.arange(len(targets)), targets] = 1
    q = (1 - smoothing) * q + smoothing / logits.shape[1]
    return (-(q * logits.log_softmax(1)).sum(1)).mean()


def smoothing_package(logits, targets, smoothing):
    from fmnist_lab import recipes

    return recipes.label_smoothing_loss(logits, targets, smoothing)


def smoothing_detached(logits, targets, smoothing):
    return label_smoothing_loss(logits.detach(), targets, smoothing)


def crop_package(images, padding, generator):
    from fmnist_lab import recipes

    return recipes.random_crop_flip(images, padding, generator)


def crop_flips_in_place(images, padding, generator):
    n, _, h, w = images.shape
    mirror = torch.rand(n, generator=generator) < 0.5
    images[mirror] = images[mirror].flip(-1)
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    return torch.stack([p[:, dy : dy + h, dx : dx + w] for p, (dy, dx) in zip(padded, offsets.tolist())])


def crop_first_channel(images, padding, generator):
    return random_crop_flip(images[:, :1], padding, generator)


def crop_into_float32(images, padding, generator):
    out = torch.zeros(images.shape)  # float32, whatever the images' dtype
    out[:] = random_crop_flip(images, padding, generator)
    return out


def ema_package(ema_model, model, decay):
    from fmnist_lab import recipes

    recipes.ema_update(ema_model, model, decay)


def ema_switches_to_eval(ema_model, model, decay):
    ema_update(ema_model, model, decay)
    ema_model.eval()  # "the average is for evaluation"


def ema_without_no_grad(ema_model, model, decay):
    for e, m in zip(ema_model.parameters(), model.parameters()):
        e.mul_(decay).add_(m, alpha=1 - decay)


def ema_fixed_decay(ema_model, model, decay):
    ema_update(ema_model, model, 0.9)


def ema_copies(ema_model, model, decay):
    ema_model.load_state_dict(model.state_dict())


def tta_package(model, images):
    from fmnist_lab import evaluate

    return evaluate.flip_tta_probs(model, images)


def tta_squeezed(model, images):
    return flip_tta_probs(model, images).squeeze()


def tta_with_gradients(model, images):
    model.eval()
    return (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2


def tta_back_to_training(model, images):
    probabilities = flip_tta_probs(model, images)
    model.train()  # "back to training, as it was"
    return probabilities


def tta_float32(model, images):
    return flip_tta_probs(model, images).float()


def tta_cpu_sum(model, images):
    model.eval()
    total = torch.zeros(len(images), 10, dtype=images.dtype)  # on the CPU, whatever the model's device
    with torch.no_grad():
        for view in (images, images.flip(-1)):
            total += model(view).softmax(1)
    return total / 2


def tta_mirrors_in_place(model, images):
    model.eval()
    with torch.no_grad():
        plain = model(images).softmax(1)
        images[:] = images.flip(-1)
        return (plain + model(images).softmax(1)) / 2


@pytest.mark.parametrize(
    "exercise_id,answer,fragment",
    [
        ("7.1", one_cycle_package, "the package's own recipes.one_cycle_lr " + PACKAGE),
        ("7.1", one_cycle_infinite_at_the_end, "one_cycle_lr(100, 100, 0.1) holds 1 NaN value (of 1)"),
        ("7.1", one_cycle_to_zero, "the annealing ends at end = lo/10⁴ = max_lr/250,000, not at 0"),
        ("7.1", one_cycle_quarter, "in the warm-up (before 30% of the steps): expected"),
        (
            "7.1",
            one_cycle_from_a_tenth,
            "one_cycle_lr(0, 100, 0.1), in the warm-up (before 30% of the steps): expected 0.004, got 0.01",
        ),
        ("7.1", one_cycle_thirty_steps, "one_cycle_lr(1, 1000, 0.4), in the warm-up (before 30% of the steps)"),
        ("7.1", one_cycle_linear_anneal, "in the annealing (after 30% of the steps): expected"),
        ("7.1", torch.optim.lr_scheduler.OneCycleLR, "got the class OneCycleLR: pass your function"),
        ("7.1", lambda step, total, max_lr: [max_lr], "to be a number, got list"),
        ("7.2", smoothing_item, "no gradient flows back through label_smoothing_loss(logits, targets, 0.1)"),
        ("7.2", smoothing_detached, "no gradient flows back through label_smoothing_loss"),
        ("7.2", smoothing_in_place, "your function changed its input logits in place"),
        ("7.2", smoothing_ten_classes, "label_smoothing_loss on 7 classes: expected"),
        ("7.2", smoothing_batch_of_64, "label_smoothing_loss on one image: expected"),
        ("7.2", smoothing_float64, "expected label_smoothing_loss(logits, targets, 0.1) of dtype torch.float32"),
        ("7.2", smoothing_cpu_target, "fails for inputs on another device"),
        ("7.2", smoothing_package, "the package's own recipes.label_smoothing_loss " + PACKAGE),
        ("7.2", torch.nn.CrossEntropyLoss(label_smoothing=0.1), "got a CrossEntropyLoss " + LAYER),
        ("7.2", lambda logits, targets, smoothing: "loss", "to be a number, got str"),
        ("7.3", crop_package, "the package's own recipes.random_crop_flip " + PACKAGE),
        ("7.3", crop_flips_in_place, "your function changed its input batch in place; return a new tensor"),
        ("7.3", crop_first_channel, "on a (1, 3, 5, 6) batch of shape (1, 3, 5, 6), got (1, 1, 5, 6)"),
        ("7.3", crop_into_float32, "expected the batch of dtype torch.float64 like its input, got torch.float32"),
        ("7.3", lambda images, padding, generator: images.tolist(), "to be a torch.Tensor, got list"),
        ("7.4", EMA, "got the class EMA: pass your function"),
        ("7.4", ema_package, "the package's own recipes.ema_update " + PACKAGE),
        ("7.4", ema_switches_to_eval, "was given the model in training mode and left it in eval mode"),
        ("7.4", ema_without_no_grad, "which autograd refuses: do it under torch.no_grad()"),
        ("7.4", ema_fixed_decay, "with decay 0 the EMA must become a copy of the model"),
        ("7.4", ema_copies, "was copied from the current model; blend it"),
        ("7.5", tta_package, "the package's own evaluate.flip_tta_probs " + PACKAGE),
        ("7.5", tta_squeezed, "for one image flip_tta_probs returns shape (10,), expected (1, 10)"),
        (
            "7.5",
            tta_with_gradients,
            "returns probabilities that require a gradient: compute them under torch.no_grad()",
        ),
        ("7.5", tta_back_to_training, "was given the model in eval mode and left it in training mode"),
        ("7.5", tta_float32, "expected flip_tta_probs on a float64 model and images of dtype torch.float64"),
        ("7.5", tta_cpu_sum, "returns a tensor on the cpu for inputs on another device"),
        ("7.5", tta_mirrors_in_place, "your function changed its input images in place"),
        ("7.5", torch.nn.Identity(), "got a Identity " + LAYER),
    ],
)
def test_more_mistakes_fail_and_name_the_cause(exercise_id, answer, fragment):
    assert_check_fails(exercise_id, answer, fragment)


def test_the_solution_notebooks_answers_pass_with_their_stored_lines():
    """Lesson 07 is too slow for nbval here: run its exercise cells' code through the checks instead."""
    import json

    from conftest import REPO

    cells = json.loads((REPO / "solutions" / "07_going_further.ipynb").read_text(encoding="utf-8"))["cells"]
    namespace = {"math": math, "np": np, "torch": torch, "F": F, "nn": torch.nn}
    stored = {}
    for cell in cells:
        source = "".join(cell["source"])
        if "### BEGIN SOLUTION" in source:
            exec(source, namespace)  # the course's own solution code
        elif source.startswith('check("7.'):
            exercise_id, name = source.removeprefix('check("').rstrip(")").split('", ')
            text = "".join("".join(output.get("text", "")) for output in cell.get("outputs", []))
            stored[exercise_id] = (name, text.strip())
    assert sorted(stored) == ["7.1", "7.2", "7.3", "7.4", "7.5"]
    for exercise_id, (name, line) in stored.items():
        assert run_check(exercise_id, namespace[name]).line() == line
