"""Lesson 07 · Going further: the checks of the five tricks the learner writes by hand.

Each check runs the learner's function on small fixed, seeded inputs and compares its behaviour with
the reference in `fmnist_lab.recipes`: the augmentation by invariants (every output image is a shifted,
possibly mirrored copy of its input, shifts cover the whole range, the generator decides everything),
the rest by values within a stated tolerance. Plausible mistakes get a message naming them.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fmnist_lab import recipes
from fmnist_lab.checks import Mismatch, exercise, expect_callable, expect_tensor


def _tensor(value: Any, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The learner's tensor, of the expected shape, detached as float64."""
    return expect_tensor(value, what, shape).detach().cpu().double()


def _number(value: Any, what: str) -> float:
    """The learner's number (float, int or one-element tensor) as a float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Mismatch(f"expected {what} to be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Mismatch(f"expected {what} to be a number, got {type(value).__name__}")
    return float(value)


# --- 7.3 random_crop_flip -----------------------------------------------------------------------

def _views(image: torch.Tensor, padding: int) -> torch.Tensor:
    """All (2p+1)² shifts of one (C, H, W) image, zero-filled, and their mirror images: (2·(2p+1)², C, H, W)."""
    _, h, w = image.shape
    padded = F.pad(image, (padding,) * 4)
    shifts = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    stacked = torch.stack(shifts)
    return torch.cat([stacked, stacked.flip(-1)])


def _match(out: torch.Tensor, images: torch.Tensor, padding: int) -> tuple[list[int], list[tuple[int, int]]]:
    """For each output image: whether it is mirrored (1/0) and its shift (dy, dx); Mismatch if it is no view."""
    side = 2 * padding + 1
    flips, shifts = [], []
    for i in range(len(images)):
        views = _views(images[i], padding)
        distance = (views - out[i]).abs().flatten(1).amax(1)
        best = int(distance.argmin())
        if distance[best] > 1e-6:
            raise Mismatch(
                f"output image {i} is not its input shifted by at most {padding} pixels (zeros filling in) "
                f"and possibly mirrored left-right: the closest such view differs by {float(distance[best]):.3g}")
        flips.append(int(best >= side * side))
        cell = best % (side * side)
        shifts.append((cell // side - padding, cell % side - padding))
    return flips, shifts


@exercise("7.3", "random_crop_flip",
          "pad each image with `padding` zeros (F.pad), draw a per-image offset in [0, 2·padding] for rows "
          "and columns with torch.randint(..., generator=generator), cut an H×W window, then flip a random "
          "half with .flip(-1); every random number must come from `generator`")
def check_random_crop_flip(random_crop_flip) -> str:
    expect_callable(random_crop_flip, "a function random_crop_flip(images, padding, generator)")
    source = torch.rand(200, 1, 10, 12, generator=torch.Generator().manual_seed(71))
    images = source.clone()
    padding = 2
    out = random_crop_flip(images, padding, torch.Generator().manual_seed(0))
    if not torch.equal(images, source):
        raise Mismatch("your function changed its input batch in place; return a new tensor")
    out = _tensor(out, "random_crop_flip(images, 2, generator) on a (200, 1, 10, 12) batch",
                  tuple(images.shape))
    flips, shifts = _match(out, images.double(), padding)
    flipped = sum(flips)
    if flipped == 0:
        raise Mismatch("no image of 200 was mirrored: flip a random half of them (.flip(-1), the width axis)")
    if flipped == len(flips):
        raise Mismatch("all 200 images were mirrored: flip each one with probability 1/2")
    if not 60 <= flipped <= 140:
        raise Mismatch(f"{flipped} of 200 images were mirrored; expected about half (each with probability 1/2)")
    distinct = set(shifts)
    if len(distinct) == 1:
        raise Mismatch(f"every image got the same shift {shifts[0]}: draw one offset per image, not one per batch")
    rows, cols = {s[0] for s in shifts}, {s[1] for s in shifts}
    if rows != set(range(-padding, padding + 1)) or cols != set(range(-padding, padding + 1)):
        raise Mismatch(f"the shifts should cover every offset from -{padding} to {padding} in both directions; "
                       f"rows got {sorted(rows)}, columns got {sorted(cols)} over 200 images")
    again = random_crop_flip(images.clone(), padding, torch.Generator().manual_seed(0))
    if not isinstance(again, torch.Tensor) or not torch.equal(again.detach().double().cpu(), out):
        raise Mismatch("two calls with generators seeded alike gave different batches: draw every random "
                       "number from `generator` (pass generator=generator to torch.randint / torch.rand)")
    other = random_crop_flip(images.clone(), padding, torch.Generator().manual_seed(1))
    if isinstance(other, torch.Tensor) and torch.equal(other.detach().double().cpu(), out):
        raise Mismatch("generators with different seeds gave the same batch: use `generator` for the random numbers")
    still = random_crop_flip(images.clone(), 0, torch.Generator().manual_seed(2))
    still = _tensor(still, "random_crop_flip(images, 0, generator)", tuple(images.shape))
    flips0, shifts0 = _match(still, images.double(), 0)
    if set(shifts0) != {(0, 0)}:
        raise Mismatch("with padding 0 nothing may shift")
    return (f"200 images (1×10×12): each output is its input shifted within ±{padding} px (zero fill) "
            f"and mirrored or not; {flipped} mirrored, {len(distinct)} of 25 shifts seen, same seed → "
            f"same batch, padding 0 → only flips")


# --- 7.2 label_smoothing_loss --------------------------------------------------------------------

@exercise("7.2", "label_smoothing_loss",
          "target q = (1 − ε)·one-hot + ε/K over ALL K classes; loss = mean over the batch of "
          "−Σ_k q_k·log_softmax(z)_k")
def check_label_smoothing_loss(label_smoothing_loss) -> str:
    expect_callable(label_smoothing_loss, "a function label_smoothing_loss(logits, targets, smoothing)")
    generator = torch.Generator().manual_seed(72)
    logits = torch.randn(64, 10, generator=generator) * 3
    targets = torch.randint(0, 10, (64,), generator=generator)
    log_probs = F.log_softmax(logits.double(), 1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    for smoothing in (0.1, 0.0, 0.3):
        expected = F.cross_entropy(logits.double(), targets, label_smoothing=smoothing).item()
        got = _number(label_smoothing_loss(logits.clone(), targets.clone(), smoothing),
                      f"label_smoothing_loss(logits, targets, {smoothing})")
        if abs(got - expected) <= 1e-5:
            continue
        other = log_probs.clone()
        other.scatter_(1, targets[:, None], 0.0)
        k_minus_1 = ((1 - smoothing) * nll - smoothing * other.sum(1) / 9).mean().item()
        if abs(got - k_minus_1) <= 1e-5:
            raise Mismatch(f"ε = {smoothing}: expected {expected:.5f}, got {got:.5f}: you spread ε over the 9 "
                           f"wrong classes; PyTorch's convention spreads it over all 10 (ε/K each, the true "
                           f"class gets 1 − ε + ε/K)")
        if abs(got - expected * len(targets)) <= 1e-3:
            raise Mismatch(f"ε = {smoothing}: expected the MEAN over the batch, {expected:.5f}, got the sum {got:.4f}")
        plain = nll.mean().item()
        if smoothing and abs(got - plain) <= 1e-5:
            raise Mismatch(f"ε = {smoothing}: expected {expected:.5f}, got {got:.5f}, the plain cross-entropy: "
                           f"the smoothing is not applied")
        raise Mismatch(f"ε = {smoothing}: expected {expected:.5f} (F.cross_entropy with label_smoothing="
                       f"{smoothing}), got {got:.6g}")
    return ("equals F.cross_entropy(logits, targets, label_smoothing=ε) within 1e-5 for ε = 0.1, 0 and 0.3 "
            "on 64 fixed logits")


# --- 7.1 one_cycle_lr ------------------------------------------------------------------------------

CYCLES = ((100, 0.1), (1000, 0.4), (50, 1.0))


@exercise("7.1", "one_cycle_lr",
          "with W = 0.3·T: before W, lr = lo + (max − lo)·(1 − cos(π·t/W))/2 with lo = max/25; from W on, "
          "lr = end + (max − end)·(1 + cos(π·(t − W)/(T − W)))/2 with end = lo/10⁴")
def check_one_cycle_lr(one_cycle_lr) -> str:
    expect_callable(one_cycle_lr, "a function one_cycle_lr(step, total_steps, max_lr)")
    for total, max_lr in CYCLES:
        peak = int(0.3 * total)
        for step in sorted({0, 1, peak // 2, peak - 1, peak, peak + 1, (peak + total) // 2, total - 1, total}):
            expected = recipes.one_cycle_lr(step, total, max_lr)
            got = _number(one_cycle_lr(step, total, max_lr), f"one_cycle_lr({step}, {total}, {max_lr})")
            if abs(got - expected) <= 1e-9 + 1e-6 * max_lr:
                continue
            where = f"one_cycle_lr({step}, {total}, {max_lr})"
            if step == 0 and abs(got) <= 1e-12:
                raise Mismatch(f"{where}: expected {expected:.6g} (max_lr / 25), got 0: the warm-up starts at max_lr/25")
            if step == 0 and abs(got - max_lr) <= 1e-9:
                raise Mismatch(f"{where}: expected {expected:.6g}, got max_lr: warm up from max_lr/25 first")
            phase = "warm-up (before 30% of the steps)" if step < peak else "annealing (after 30% of the steps)"
            raise Mismatch(f"{where}, in the {phase}: expected {expected:.6g}, got {got:.6g}")
    return (f"matches the reference within 1e-6·max_lr at the start, middle, peak and end of 3 cycles "
            f"(T = {', '.join(str(t) for t, _ in CYCLES)})")


# --- 7.4 ema_update ------------------------------------------------------------------------------------

def _small_model(seed: int) -> nn.Module:
    """A tiny conv net with batch norm (float buffers) and seeded weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def _with_statistics(model: nn.Module, seed: int) -> nn.Module:
    """The model after one training-mode forward pass, so its running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(seed)))
    return model


@exercise("7.4", "ema_update",
          "for each float entry of state_dict(): ema = decay·ema + (1 − decay)·current, in place under "
          "torch.no_grad(); this includes BatchNorm's running_mean and running_var")
def check_ema_update(ema_update) -> str:
    expect_callable(ema_update, "a function ema_update(ema_model, model, decay)")
    current = _with_statistics(_small_model(1), 1)
    ema = _with_statistics(_small_model(2), 2)
    before_current = copy.deepcopy(current.state_dict())
    expected = copy.deepcopy(ema)
    recipes.ema_update(expected, current, 0.9)
    result = ema_update(ema, current, 0.9)
    for name, value in current.state_dict().items():
        if not torch.equal(value, before_current[name]):
            raise Mismatch(f"the current model's {name} changed: update only the EMA copy")
    got_state = ema.state_dict()
    if result is not None and isinstance(result, nn.Module) and result is not ema:
        got_state = result.state_dict()
    for name, want in expected.state_dict().items():
        if not want.dtype.is_floating_point:
            continue
        got = got_state[name].double()
        if torch.allclose(got, want.double(), atol=1e-6):
            continue
        old = _with_statistics(_small_model(2), 2).state_dict()[name].double()
        new = before_current[name].double()
        if torch.allclose(got, 0.1 * old + 0.9 * new, atol=1e-6):
            raise Mismatch(f"{name}: the weights are swapped: keep decay = 0.9 of the EMA and add 1 − decay = 0.1 "
                           f"of the current model")
        if torch.allclose(got, old, atol=1e-6):
            if "running" in name:
                raise Mismatch(f"{name} was not averaged: average every float entry of state_dict(), "
                               f"batch norm's running statistics included")
            raise Mismatch(f"{name} did not change: update the EMA model's tensors in place")
        if torch.allclose(got, new, atol=1e-6):
            raise Mismatch(f"{name} was copied from the current model; blend it: decay·ema + (1 − decay)·current")
        raise Mismatch(f"{name} differs from 0.9·ema + 0.1·current by up to "
                       f"{(got - want.double()).abs().max().item():.3g} (tolerance 1e-6)")
    target = _with_statistics(_small_model(3), 3)
    copy_of = copy.deepcopy(_small_model(4))
    ema_update(copy_of, target, 0.0)
    for name, value in target.state_dict().items():
        if value.dtype.is_floating_point and not torch.allclose(copy_of.state_dict()[name], value, atol=1e-6):
            raise Mismatch(f"with decay 0 the EMA must become a copy of the model, but {name} differs")
    return ("weights, biases and BatchNorm running statistics of a small conv net equal 0.9·ema + 0.1·current "
            "within 1e-6, the current model unchanged; decay 0 copies")


# --- 7.5 flip_tta_probs ----------------------------------------------------------------------------

class _Lopsided(nn.Module):
    """A small model that is not mirror-symmetric, with batch norm and dropout (so eval mode matters)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(75)
        self.image_size = 8
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@exercise("7.5", "flip_tta_probs",
          "in model.eval() and torch.no_grad(): (softmax(model(x)) + softmax(model(x.flip(-1)))) / 2, "
          "softmax over the classes (dim=1)")
def check_flip_tta_probs(flip_tta_probs) -> str:
    expect_callable(flip_tta_probs, "a function flip_tta_probs(model, images)")
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(75))
    reference = _Lopsided().eval()
    with torch.no_grad():
        plain = reference(images).softmax(1).double()
        mirrored = reference(images.flip(-1)).softmax(1).double()
        logits_mean = ((reference(images) + reference(images.flip(-1))) / 2).softmax(1).double()
        upside = reference(images.flip(-2)).softmax(1).double()
    expected = (plain + mirrored) / 2
    model = _Lopsided().train()
    got = _tensor(flip_tta_probs(model, images.clone()), "flip_tta_probs(model, images) on (32, 1, 8, 8)", (32, 10))
    if torch.allclose(got, expected, atol=1e-5):
        return ("(32, 10) probabilities equal the mean of softmax(model(x)) and softmax(model(x mirrored)) in "
                "eval mode within 1e-5 (a model given in training mode)")
    if torch.allclose(got, plain, atol=1e-5):
        raise Mismatch("these are the probabilities of the images alone: average them with those of the "
                       "mirrored images (images.flip(-1))")
    if torch.allclose(got, logits_mean, atol=1e-5):
        raise Mismatch("you averaged the logits and then took the softmax; average the two softmax "
                       "probabilities instead")
    if torch.allclose(got, (plain + upside) / 2, atol=1e-5):
        raise Mismatch("you flipped the images upside down (dim -2); mirror them left-right: images.flip(-1)")
    sums = got.sum(1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        raise Mismatch(f"each row should be probabilities summing to 1; got sums from {sums.min():.3g} to "
                       f"{sums.max():.3g} (softmax over dim=1)")
    difference = (got - expected).abs().max().item()
    raise Mismatch(f"the probabilities differ from the reference by up to {difference:.3g} (tolerance 1e-5); "
                   f"did you call model.eval() first? (dropout and batch norm act differently in training mode)")
