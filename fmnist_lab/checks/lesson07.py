"""Lesson 07 · Going further: the checks of the five tricks the learner writes by hand.

Each check runs the learner's function on small fixed, seeded inputs and compares its behaviour with
the reference in `fmnist_lab.recipes`: the augmentation by invariants (every output image is a shifted,
possibly mirrored copy of its input, shifts cover the whole range, the generator decides everything),
the rest by values within a stated tolerance. Plausible mistakes get a message naming them.

Beyond the values: no tensor argument may change in place (a model's weights and buffers included); the
loss also runs on one image, an odd batch and 7 classes, must let gradients flow back to the logits,
keep the logits' dtype and run on another device (PyTorch's `meta` device stands in for a GPU); the
augmentation also runs on one image and on an odd 3-channel batch, and keeps float64; the averaging
leaves both models in their mode; the test-time augmentation runs on one image and an odd batch, keeps
a model given in eval mode in eval mode, returns no gradient, and keeps the dtype and the device. NaN and
infinity get their own message; a layer or a class passed instead of the function is named (7.4 names
`recipes.EMA`). Decided (the contested cases):

- float64: the loss and the probabilities keep their input's dtype (a float64 result from float32
  fails: it would not fit the next float32 step); a learning rate is a Python number;
- 7.2 must return a tensor that backpropagates (`.item()` fails: a loss is for training). It may use
  `F.cross_entropy`, even with `label_smoothing`: the lesson shows it right after the exercise as the
  check of your formula, and rules nothing out;
- 7.5 may leave a model given in training mode in eval mode (the lesson's answer calls `model.eval()`);
- the package's own answers (`fmnist_lab.recipes.one_cycle_lr`, `label_smoothing_loss`,
  `random_crop_flip`, `ema_update`, `evaluate.flip_tta_probs`) are ruled out: the exercise is to write
  them. A name bound to them before the check runs is not seen (the limit of `forbid_call`);
- 7.3's device is not checked: a seeded `torch.Generator` here is a CPU one, so its offsets are drawn on
  the CPU whatever the images' device.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fmnist_lab import evaluate, recipes
from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk

# --- 7.1 one_cycle_lr ------------------------------------------------------------------------------

CYCLES = ((100, 0.1), (1000, 0.4), (50, 1.0))


def _lr_mistakes(step: int, total: int, max_lr: float, expected: float, got: float) -> list[tuple[str, float]]:
    """The learning rates of the usual slips at this step: starting at 0 or at max_lr, annealing to 0."""
    if step == 0:
        return [
            (f"expected {expected:.6g} (max_lr / 25), got 0: the warm-up starts at max_lr/25", 0.0),
            (f"expected {expected:.6g}, got max_lr: warm up from max_lr/25 first", max_lr),
        ]
    to_zero = max_lr * (1 + math.cos(math.pi * (step - 0.3 * total) / (total - 0.3 * total))) / 2
    ends = f"expected {expected:.8g}, got {got:.8g}: the annealing ends at end = lo/10⁴ = max_lr/250,000, not at 0"
    return [(ends, to_zero)] if step >= int(0.3 * total) else []


@exercise(
    "7.1",
    "one_cycle_lr",
    "with W = 0.3·T: before W, lr = lo + (max − lo)·(1 − cos(π·t/W))/2 with lo = max/25; from W on, "
    "lr = end + (max − end)·(1 + cos(π·(t − W)/(T − W)))/2 with end = lo/10⁴",
)
def check_one_cycle_lr(one_cycle_lr) -> str:
    tk.expect_plain_function(one_cycle_lr, "a function one_cycle_lr(step, total_steps, max_lr)")
    for total, max_lr in CYCLES:
        peak = int(0.3 * total)
        for step in sorted({0, 1, peak // 2, peak - 1, peak, peak + 1, (peak + total) // 2, total - 1, total}):
            where = f"one_cycle_lr({step}, {total}, {max_lr})"
            expected = recipes.one_cycle_lr(step, total, max_lr)
            with tk.without_package(recipes, "one_cycle_lr"):
                answer = one_cycle_lr(step, total, max_lr)
            tk.expect_finite(answer, where)
            got = tk.as_number(answer, where)
            if abs(got - expected) <= 1e-9 + 1e-6 * max_lr:
                continue
            phase = "warm-up (before 30% of the steps)" if step < peak else "annealing (after 30% of the steps)"
            otherwise = f"{where}, in the {phase}: expected {expected:.6g}, got {got:.6g}"
            mistakes = _lr_mistakes(step, total, max_lr, expected, got)
            tk.name_the_mistake(got, mistakes, 1e-12, found=f"{where}: ", otherwise=otherwise)
    return (
        f"matches the reference within 1e-6·max_lr at the start, middle, peak and end of 3 cycles "
        f"(T = {', '.join(str(t) for t, _ in CYCLES)})"
    )


# --- 7.2 label_smoothing_loss --------------------------------------------------------------------


def _loss(label_smoothing_loss, logits: Tensor, targets: Tensor, smoothing: float, what: str) -> tuple[float, float]:
    """The learner's loss as a number (its inputs unchanged, no package shortcut, finite) and F.cross_entropy's."""
    with tk.without_package(recipes, "label_smoothing_loss"):
        loss = tk.call_unmodified(label_smoothing_loss, logits, targets, smoothing, names=("logits", "targets"))
    tk.expect_finite(loss, what)
    return tk.as_number(loss, what), F.cross_entropy(logits.double(), targets, label_smoothing=smoothing).item()


@exercise(
    "7.2",
    "label_smoothing_loss",
    "target q = (1 − ε)·one-hot + ε/K over ALL K classes; loss = mean over the batch of −Σ_k q_k·log_softmax(z)_k",
)
def check_label_smoothing_loss(label_smoothing_loss) -> str:
    tk.expect_plain_function(label_smoothing_loss, "a function label_smoothing_loss(logits, targets, smoothing)")
    generator = torch.Generator().manual_seed(72)
    logits = torch.randn(64, 10, generator=generator) * 3
    targets = torch.randint(0, 10, (64,), generator=generator)
    log_probs = F.log_softmax(logits.double(), 1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    wrong_classes = log_probs.scatter(1, targets[:, None], 0.0).sum(1)  # Σ over the 9 wrong classes
    close = functools.partial(tk.is_close, atol=1e-5, rtol=3e-6)  # about 1e-3 on the sum of 64 losses
    for smoothing in (0.1, 0.0, 0.3):
        what = f"label_smoothing_loss(logits, targets, {smoothing})"
        got, expected = _loss(label_smoothing_loss, logits, targets, smoothing, what)
        if abs(got - expected) <= 1e-5:
            continue
        mistakes = [
            (
                f"expected {expected:.5f}, got {got:.5f}: you spread ε over the 9 wrong classes; PyTorch's "
                f"convention spreads it over all 10 (ε/K each, the true class gets 1 − ε + ε/K)",
                ((1 - smoothing) * nll - smoothing * wrong_classes / 9).mean().item(),
            ),
            (f"expected the MEAN over the batch, {expected:.5f}, got the sum {got:.4f}", expected * len(targets)),
            (
                f"expected {expected:.5f}, got {got:.5f}, the plain cross-entropy: the smoothing is not applied",
                nll.mean().item() if smoothing else None,
            ),
        ]
        otherwise = f"expected {expected:.5f} (F.cross_entropy with label_smoothing={smoothing}), got {got:.6g}"
        tk.name_the_mistake(got, mistakes, close, found=f"ε = {smoothing}: ", otherwise=f"ε = {smoothing}: {otherwise}")
    _loss_beyond_values(label_smoothing_loss, logits, targets)
    return (
        "equals F.cross_entropy(logits, targets, label_smoothing=ε) within 1e-5 for ε = 0.1, 0 and 0.3 "
        "on 64 fixed logits"
    )


def _loss_beyond_values(label_smoothing_loss, logits: Tensor, targets: Tensor) -> None:
    """One image, an odd batch, 7 classes; then gradients, the dtype and the device."""
    generator = torch.Generator().manual_seed(73)
    cases = [
        (logits[:1], targets[:1], "one image"),
        (logits[:7], targets[:7], "an odd batch of 7"),
        (torch.randn(9, 7, generator=generator), torch.randint(0, 7, (9,), generator=generator), "7 classes"),
    ]
    for few_logits, few_targets, what in cases:
        where = f"label_smoothing_loss on {what}"
        with tk.other_input("64 images of 10 classes", where):
            got, expected = _loss(label_smoothing_loss, few_logits, few_targets, 0.1, where)
        if not abs(got - expected) <= 1e-5:
            raise Mismatch(
                f"{where}: expected {expected:.5f}, got {got:.5f}: take the batch size and the number of classes K "
                "from logits.shape, do not write 64 or 10 into the function"
            )
    what = "label_smoothing_loss(logits, targets, 0.1)"
    reference = recipes.label_smoothing_loss  # F.cross_entropy(..., label_smoothing=ε) written out, in float64 here
    tk.expect_gradients(label_smoothing_loss, reference, {"logits": logits[:8]}, targets[:8], 0.1, what=what)
    tk.expect_dtype_kept(tk.expect_tensor(label_smoothing_loss(logits.clone(), targets, 0.1), what), logits, what)
    tk.expect_device_kept(label_smoothing_loss, logits, targets, 0.1, what=what)


# --- 7.3 random_crop_flip -----------------------------------------------------------------------


def _match(out: Tensor, images: Tensor, padding: int) -> tuple[list[int], list[tuple[int, int]]]:
    """For each output image: whether it is mirrored (1/0) and its shift (dy, dx); Mismatch if it is no view."""
    side, (h, w), out = 2 * padding + 1, images.shape[-2:], out.detach().cpu().double()
    flips, shifts = [], []
    for i, padded in enumerate(F.pad(images, (padding,) * 4)):
        views = torch.stack([padded[:, dy : dy + h, dx : dx + w] for dy in range(side) for dx in range(side)])
        distance = (torch.cat([views, views.flip(-1)]) - out[i]).abs().flatten(1).amax(1)  # every shift, mirrored
        best = int(distance.argmin())
        if distance[best] > 1e-6:
            raise Mismatch(
                f"output image {i} is not its input shifted by at most {padding} pixels (zeros filling in) "
                f"and possibly mirrored left-right: the closest such view differs by {float(distance[best]):.3g}"
            )
        flips.append(int(best >= side * side))
        shifts.append(((best % (side * side)) // side - padding, best % side - padding))
    return flips, shifts


def _augment(random_crop_flip, images: Tensor, padding: int, seed: int, what: str) -> Tensor:
    """The learner's augmented batch: the input unchanged, no package shortcut, finite, of the input's shape."""
    with tk.without_package(recipes, "random_crop_flip"):
        generator = torch.Generator().manual_seed(seed)
        out = tk.call_unmodified(
            random_crop_flip, images, padding, generator, names=("batch",), advice="return a new tensor"
        )
    out = tk.expect_tensor(out, f"{what} on a {tuple(images.shape)} batch", tuple(images.shape))
    tk.expect_finite(out, what)
    return out.detach().clone()  # a snapshot, whatever the next calls do


@exercise(
    "7.3",
    "random_crop_flip",
    "pad each image with `padding` zeros (F.pad), draw a per-image offset in [0, 2·padding] for rows "
    "and columns with torch.randint(..., generator=generator), cut an H×W window, then flip a random "
    "half with .flip(-1); every random number must come from `generator`",
)
def check_random_crop_flip(random_crop_flip) -> str:
    tk.expect_plain_function(random_crop_flip, "a function random_crop_flip(images, padding, generator)")
    images, padding = torch.rand(200, 1, 10, 12, generator=torch.Generator().manual_seed(71)), 2
    out = _augment(random_crop_flip, images, padding, 0, "random_crop_flip(images, 2, generator)")
    flips, shifts = _match(out, images, padding)
    flipped, distinct = sum(flips), set(shifts)
    if flipped == 0:
        raise Mismatch("no image of 200 was mirrored: flip a random half of them (.flip(-1), the width axis)")
    if flipped == len(flips):
        raise Mismatch("all 200 images were mirrored: flip each one with probability 1/2")
    if not 60 <= flipped <= 140:
        raise Mismatch(f"{flipped} of 200 images were mirrored; expected about half (each with probability 1/2)")
    if len(distinct) == 1:
        raise Mismatch(f"every image got the same shift {shifts[0]}: draw one offset per image, not one per batch")
    rows, cols = {s[0] for s in shifts}, {s[1] for s in shifts}
    if rows != set(range(-padding, padding + 1)) or cols != set(range(-padding, padding + 1)):
        raise Mismatch(
            f"the shifts should cover every offset from -{padding} to {padding} in both directions; "
            f"rows got {sorted(rows)}, columns got {sorted(cols)} over 200 images"
        )
    if not tk.is_close(random_crop_flip(images.clone(), padding, torch.Generator().manual_seed(0)), out, atol=0):
        raise Mismatch(
            "two calls with generators seeded alike gave different batches: draw every random "
            "number from `generator` (pass generator=generator to torch.randint / torch.rand)"
        )
    if tk.is_close(random_crop_flip(images.clone(), padding, torch.Generator().manual_seed(1)), out, atol=0):
        raise Mismatch("generators with different seeds gave the same batch: use `generator` for the random numbers")
    still = random_crop_flip(images.clone(), 0, torch.Generator().manual_seed(2))
    tk.expect_tensor(still, "random_crop_flip(images, 0, generator)", tuple(images.shape))
    _match(still, images, 0)  # with padding 0, the only views are the image and its mirror
    colour = torch.rand(7, 3, 5, 6, generator=torch.Generator().manual_seed(72))
    for batch, what in ((colour[:1], "one 3×5×6 image"), (colour, "an odd batch of 7 images 3×5×6")):
        where = f"random_crop_flip on {what}, padding 1"
        with tk.other_input("a batch of 200 one-channel images", where):
            got = _augment(random_crop_flip, batch, 1, 3, where)
        _match(got, batch, 1)
    wide = _augment(random_crop_flip, images[:6].double(), padding, 4, "random_crop_flip on float64 images")
    tk.expect_dtype_kept(wide, images.double(), "the batch")
    return (
        f"200 images (1×10×12): each output is its input shifted within ±{padding} px (zero fill) "
        f"and mirrored or not; {flipped} mirrored, {len(distinct)} of 25 shifts seen, same seed → "
        f"same batch, padding 0 → only flips"
    )


# --- 7.4 ema_update ------------------------------------------------------------------------------------


def _small_model(seed: int) -> nn.Module:
    """A tiny conv net with batch norm and seeded weights, after one training-mode batch (running statistics set)."""
    model = tk.seeded(
        seed,
        lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)),
    )
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(seed)))
    return model


@exercise(
    "7.4",
    "ema_update",
    "for each float entry of state_dict(): ema = decay·ema + (1 − decay)·current, in place under "
    "torch.no_grad(); this includes BatchNorm's running_mean and running_var",
)
def check_ema_update(ema_update) -> str:
    tk.expect_plain_function(ema_update, "a function ema_update(ema_model, model, decay)")
    current, ema = _small_model(1), _small_model(2)
    expected, old = copy.deepcopy(ema), copy.deepcopy(ema.state_dict())
    recipes.ema_update(expected, current, 0.9)
    result = _average(ema_update, ema, current, 0.9)
    new = current.state_dict()
    got_state = (result if isinstance(result, nn.Module) and result is not ema else ema).state_dict()
    for name, want in expected.state_dict().items():
        if not want.dtype.is_floating_point or tk.is_close(got_state[name], want, atol=1e-6):
            continue
        mistakes = [
            (
                ": the weights are swapped: keep decay = 0.9 of the EMA and add 1 − decay = 0.1 of the current model",
                0.1 * old[name].double() + 0.9 * new[name].double(),
            ),
            (
                " was not averaged: average every float entry of state_dict(), batch norm's running statistics included"
                if "running" in name
                else " did not change: update the EMA model's tensors in place",
                old[name],
            ),
            (" was copied from the current model; blend it: decay·ema + (1 − decay)·current", new[name]),
        ]
        gap = f" differs from 0.9·ema + 0.1·current by up to {tk.max_difference(got_state[name], want):.3g}"
        tk.name_the_mistake(got_state[name], mistakes, 1e-6, found=name, otherwise=f"{name}{gap} (tolerance 1e-6)")
    target, copy_of = _small_model(3), _small_model(4)
    _average(ema_update, copy_of.eval(), target.eval(), 0.0)
    for name, value in target.state_dict().items():
        if value.dtype.is_floating_point and not tk.is_close(copy_of.state_dict()[name], value, atol=1e-6):
            raise Mismatch(f"with decay 0 the EMA must become a copy of the model, but {name} differs")
    return (
        "weights, biases and BatchNorm running statistics of a small conv net equal 0.9·ema + 0.1·current "
        "within 1e-6, the current model unchanged; decay 0 copies"
    )


def _average(ema_update, ema: nn.Module, model: nn.Module, decay: float):
    """The learner's update: the current model unchanged, both models left in their mode, finite averages."""
    training = ema.training
    try:
        with tk.without_package(recipes, "ema_update"), tk.watch_module(model, "model", "update only the EMA copy"):
            result = ema_update(ema, model, decay)
    except RuntimeError as exc:
        if "leaf variable" not in str(exc).lower():
            raise
        raise Mismatch(
            "your update changes parameters that require gradients in place, which autograd refuses: do it under "
            "torch.no_grad() (or on state_dict()'s tensors)"
        ) from None
    tk.expect_mode_restored(ema, training, "ema_update (on the EMA model)")
    tk.expect_mode_restored(model, training, "ema_update (on the current model)")
    for name, value in ema.state_dict().items():
        tk.expect_finite(value, f"the EMA model's {name}")
    return result


# --- 7.5 flip_tta_probs ----------------------------------------------------------------------------


def _lopsided() -> nn.Module:
    """A small model that is not mirror-symmetric, with batch norm and dropout (so eval mode matters)."""
    layers = (nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model.image_size = 8
    return model


def _tta(flip_tta_probs, model: nn.Module, images: Tensor):
    """The learner's probabilities: the images unchanged, no package shortcut, finite."""
    with tk.without_package(evaluate, "flip_tta_probs"):
        probabilities = tk.call_unmodified(flip_tta_probs, model, images, names=("model", "images"))
    tk.expect_finite(probabilities, "flip_tta_probs(model, images)")
    return probabilities


def _tta_beyond_values(flip_tta_probs, reference: nn.Module, images: Tensor) -> None:
    """A model in eval mode stays so and keeps its weights; one image, an odd batch; no gradient; dtype, device."""
    for batch, what in ((images[:1], "one image"), (images[:7], "an odd batch of 7")):
        where = f"flip_tta_probs(model, images) on {what}"
        model = copy.deepcopy(reference)
        with tk.watch_module(model, "model", "only read the model"), tk.other_input("32 images", where):
            got = _tta(flip_tta_probs, model, batch)
        tk.expect_mode_restored(model, False, "flip_tta_probs")
        if isinstance(got, Tensor) and len(batch) == 1 and tuple(got.shape) == (10,):
            raise Mismatch("for one image flip_tta_probs returns shape (10,), expected (1, 10): keep the batch axis")
        got = tk.expect_tensor(got, where, (len(batch), 10))
        if got.requires_grad:
            raise Mismatch(
                f"{where} returns probabilities that require a gradient: compute them under torch.no_grad(), "
                "as the exercise asks (no graph is kept for test-time predictions)"
            )
        with torch.no_grad():
            expected = (reference(batch).softmax(1) + reference(batch.flip(-1)).softmax(1)) / 2
        if not tk.is_close(got, expected, atol=1e-5):
            raise Mismatch(f"{where} differs from the reference by up to {tk.max_difference(got, expected):.3g}")
    wide, what = copy.deepcopy(reference).double(), "flip_tta_probs on a float64 model and images"
    tk.expect_dtype_kept(tk.expect_tensor(flip_tta_probs(wide, images.double()), what), images.double(), what)
    tk.expect_device_kept(lambda x: flip_tta_probs(tk.on_meta(reference), x), images, what="flip_tta_probs")


@exercise(
    "7.5",
    "flip_tta_probs",
    "in model.eval() and torch.no_grad(): (softmax(model(x)) + softmax(model(x.flip(-1)))) / 2, "
    "softmax over the classes (dim=1)",
)
def check_flip_tta_probs(flip_tta_probs) -> str:
    tk.expect_plain_function(flip_tta_probs, "a function flip_tta_probs(model, images)")
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(75))
    reference = tk.seeded(75, _lopsided).eval()
    with torch.no_grad():
        plain, mirrored, upside = (reference(x).softmax(1) for x in (images, images.flip(-1), images.flip(-2)))
        logits_mean = ((reference(images) + reference(images.flip(-1))) / 2).softmax(1)
    expected = (plain + mirrored) / 2
    # the model is given in training mode: its dropout draws, if any, are seeded and leave the learner's RNG alone
    got = tk.seeded(75, lambda: _tta(flip_tta_probs, _lopsided().train(), images))
    tk.expect_tensor(got, "flip_tta_probs(model, images) on (32, 1, 8, 8)", (32, 10))
    mistakes = [
        (
            "these are the probabilities of the images alone: average them with those of the mirrored images "
            "(images.flip(-1))",
            plain,
        ),
        (
            "you averaged the logits and then took the softmax; average the two softmax probabilities instead",
            logits_mean,
        ),
        ("you flipped the images upside down (dim -2); mirror them left-right: images.flip(-1)", (plain + upside) / 2),
    ]
    sums = got.detach().sum(1)
    otherwise = (
        f"each row should be probabilities summing to 1; got sums from {sums.min():.3g} to "
        f"{sums.max():.3g} (softmax over dim=1)"
        if not tk.is_close(sums, 1.0, atol=1e-4)
        else f"the probabilities differ from the reference by up to {tk.max_difference(got, expected):.3g} "
        "(tolerance 1e-5); did you call model.eval() first? (dropout and batch norm act differently in training mode)"
    )
    tk.expect_same(got, expected, "flip_tta_probs(model, images)", mistakes, atol=1e-5, found="", otherwise=otherwise)
    _tta_beyond_values(flip_tta_probs, reference, images)
    return (
        "(32, 10) probabilities equal the mean of softmax(model(x)) and softmax(model(x mirrored)) in "
        "eval mode within 1e-5 (a model given in training mode)"
    )
