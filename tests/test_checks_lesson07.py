"""Lesson 07's exercise checks: the reference and other correct answers pass, plausible mistakes fail."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from fmnist_lab.checks import run_check

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
    return (-(q * logits.log_softmax(1)).sum(1)).mean().item()


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
    from fmnist_lab.recipes import random_crop_flip as reference

    return reference(images, padding, generator, flip=False)


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


def passes(exercise, answer, fragment=""):
    result = run_check(exercise, answer)
    assert result.status == "passed", result.message
    assert fragment in result.message
    return result


def fails(exercise, answer, fragment):
    result = run_check(exercise, answer)
    assert result.status == "failed", result
    assert fragment in result.message, result.message
    return result


def test_random_crop_flip():
    passes("7.3", random_crop_flip, "each output is its input shifted within ±2 px")
    passes("7.3", random_crop_flip_loop)
    passes("7.3", random_crop_flip_flip_first_numpy)
    fails("7.3", crop_same_shift_for_the_batch, "one offset per image")
    fails("7.3", crop_with_roll, "zeros filling in")
    fails("7.3", crop_without_generator, "draw every random number from `generator`")
    fails("7.3", random_crop_flip_noflip, "no image of 200 was mirrored")
    fails("7.3", crop_flip_upside_down, "possibly mirrored left-right")


def test_label_smoothing_loss():
    passes("7.2", label_smoothing_loss, "F.cross_entropy(logits, targets, label_smoothing=ε) within 1e-5")
    passes("7.2", label_smoothing_loss_targets)
    passes("7.2", label_smoothing_loss_builtin)
    fails("7.2", smoothing_over_wrong_classes, "over the 9 wrong classes")
    fails("7.2", smoothing_sum, "MEAN over the batch")
    fails("7.2", smoothing_ignored, "the smoothing is not applied")


def test_one_cycle_lr():
    passes("7.1", one_cycle_lr, "3 cycles")
    passes("7.1", one_cycle_lr_numpy)
    fails("7.1", one_cycle_from_zero, "warm-up starts at max_lr/25")
    fails("7.1", one_cycle_linear, "in the warm-up")


def test_ema_update():
    passes("7.4", ema_update, "0.9·ema + 0.1·current")
    passes("7.4", ema_update_lerp)
    passes("7.4", ema_update_params_and_buffers)
    fails("7.4", ema_swapped, "swapped")
    fails("7.4", ema_parameters_only, "running statistics included")
    fails("7.4", ema_updates_the_model, "update only the EMA copy")


def test_flip_tta_probs():
    passes("7.5", flip_tta_probs, "eval mode within 1e-5")
    passes("7.5", flip_tta_probs_functional)
    fails("7.5", tta_no_flip, "average them with those of the mirrored images")
    fails("7.5", tta_logits_mean, "averaged the logits")
    fails("7.5", tta_upside_down, "upside down")
    fails("7.5", tta_training_mode, "model.eval()")


def test_wrong_types_fail_without_crashing():
    assert run_check("7.3", lambda images, padding, generator: images.tolist()).status == "failed"
    assert run_check("7.2", lambda logits, targets, smoothing: "loss").status == "failed"
    assert run_check("7.1", lambda step, total, max_lr: [max_lr]).status == "failed"
    assert run_check("7.5", lambda model, images: None).status == "failed"
