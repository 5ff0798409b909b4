"""Lesson 06's checks: the reference and other correct answers pass, plausible mistakes fail and say why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_cases import fails, passes
from conftest import assert_check_fails

from fmnist_lab.checks import run_check
from fmnist_lab.data import CLASS_NAMES


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Single-image forward passes: one thread avoids thread hand-off costs on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ 6.1 most_confused_pairs


def pairs_reference(matrix, k):
    cells = []
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            if i != j:
                cells.append((matrix[i, j], i, j))
    cells.sort(key=lambda c: c[0], reverse=True)
    return [(CLASS_NAMES[i], CLASS_NAMES[j], int(n)) for n, i, j in cells[:k]]


def pairs_numpy(matrix, k):
    """Differently: mask the diagonal, argsort the flattened counts; numpy counts, lists not tuples."""
    off = np.where(np.eye(len(matrix), dtype=bool), -1, matrix)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    return [[CLASS_NAMES[i // 10], CLASS_NAMES[i % 10], off.flat[i]] for i in order]


def pairs_torch(matrix, k):
    """Differently again: torch.topk, one-element tensors as counts."""
    counts = torch.as_tensor(matrix).clone().fill_diagonal_(-1)
    values, index = counts.flatten().topk(k)
    return [(CLASS_NAMES[int(i) // 10], CLASS_NAMES[int(i) % 10], v) for v, i in zip(values, index)]


def pairs_with_diagonal(matrix, k):
    cells = sorted(((matrix[i, j], i, j) for i in range(10) for j in range(10)), reverse=True)
    return [(CLASS_NAMES[i], CLASS_NAMES[j], int(n)) for n, i, j in cells[:k]]


def pairs_transposed(matrix, k):
    return [(b, a, n) for a, b, n in pairs_reference(matrix, k)]


def pairs_ascending(matrix, k):
    return sorted(pairs_reference(matrix, k), key=lambda p: p[2])


def pairs_ids(matrix, k):
    return [(CLASS_NAMES.index(a), CLASS_NAMES.index(b), n) for a, b, n in pairs_reference(matrix, k)]


def pairs_in_place(matrix, k):
    np.fill_diagonal(matrix, 0)
    return pairs_reference(matrix, k)


@pytest.mark.parametrize("answer", [pairs_reference, pairs_numpy, pairs_torch])
def test_6_1_correct_answers_pass(answer):
    result = passes("6.1", answer)
    assert result.message == (
        "top 5 of the seed-0 matrix (first Shirt → T-shirt/top, 196) and top 8 of a shuffled matrix match the reference"
    )


# ------------------------------------------------------------------------ 6.2 expected_calibration_error


def ece_reference(confidences, correct, n_bins=10):
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidences > lo) & (confidences <= hi)
        if in_bin.any():
            gap = correct[in_bin].float().mean() - confidences[in_bin].mean()
            ece += in_bin.float().mean() * gap.abs()
    return float(ece)


def ece_numpy(confidences, correct, n_bins=10):
    """Differently: NumPy, [lo, hi) bins via floor with 1.0 clamped into the last bin, returns a numpy float."""
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    index = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = index == b
        if mask.sum():
            total += mask.sum() * abs(hits[mask].mean() - conf[mask].mean())
    return np.float64(total / len(conf))


def ece_global(confidences, correct, n_bins=10):
    return float((confidences.mean() - correct.float().mean()).abs())


def ece_unweighted(confidences, correct, n_bins=10):
    edges = torch.linspace(0, 1, n_bins + 1)
    gaps = [
        (correct[m].float().mean() - confidences[m].mean()).abs()
        for lo, hi in zip(edges[:-1], edges[1:])
        if (m := (confidences > lo) & (confidences <= hi)).any()
    ]
    return float(torch.stack(gaps).mean())


def ece_drops_certain(confidences, correct, n_bins=10):
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidences >= lo) & (confidences < hi)  # 1.0 falls in no bin
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].float().mean() - confidences[in_bin].mean()).abs()
    return float(ece)


def ece_fixed_bins(confidences, correct, n_bins=10):
    return ece_reference(confidences, correct, 10)


# ------------------------------------------------------------------------------------ 6.3 occlusion_map


@torch.no_grad()
def occlusion_reference(model, image, label, patch=3):
    _, h, w = image.shape
    half = patch // 2
    p_original = model(image.unsqueeze(0)).softmax(1)[0, label]
    drops = torch.zeros(h, w)
    for i in range(h):
        for j in range(w):
            occluded = image.clone()
            occluded[:, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1] = 0
            drops[i, j] = p_original - model(occluded.unsqueeze(0)).softmax(1)[0, label]
    return drops


@torch.no_grad()
def occlusion_padded(model, image, label, patch=3):
    """Differently: a zero mask built by padding, all occluded images in one batch, float64 result."""
    _, h, w = image.shape
    half = patch // 2
    masks = torch.ones(h * w, 1, h + 2 * half, w + 2 * half)
    for k in range(h * w):
        i, j = divmod(k, w)
        masks[k, :, i : i + patch, j : j + patch] = 0
    batch = image.unsqueeze(0) * masks[:, :, half : half + h, half : half + w]
    p = F.softmax(model(torch.cat([image.unsqueeze(0), batch])), dim=1)[:, label].double()
    return (p[0] - p[1:]).view(h, w)


def occlusion_reversed(model, image, label, patch=3):
    return -occlusion_reference(model, image, label, patch)


@torch.no_grad()
def occlusion_logits(model, image, label, patch=3):
    _, h, w = image.shape
    half = patch // 2
    base = model(image.unsqueeze(0))[0, label]
    out = torch.zeros(h, w)
    for i in range(h):
        for j in range(w):
            occluded = image.clone()
            occluded[:, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1] = 0
            out[i, j] = base - model(occluded.unsqueeze(0))[0, label]
    return out


@torch.no_grad()
def occlusion_top_left(model, image, label, patch=3):
    _, h, w = image.shape
    base = model(image.unsqueeze(0)).softmax(1)[0, label]
    out = torch.zeros(h, w)
    for i in range(h):
        for j in range(w):
            occluded = image.clone()
            occluded[:, i : i + patch, j : j + patch] = 0
            out[i, j] = base - model(occluded.unsqueeze(0)).softmax(1)[0, label]
    return out


@torch.no_grad()
def occlusion_in_place(model, image, label, patch=3):
    base = model(image.unsqueeze(0)).softmax(1)[0, label]
    image[:, -patch:, -patch:] = 0
    return occlusion_reference(model, image, label, patch) * 0 + base


# ------------------------------------------------------------------------------------- 6.4 saliency_map


def saliency_reference(model, image, label):
    x = image.clone().unsqueeze(0).requires_grad_(True)
    model(x)[0, label].backward()
    return x.grad.abs()[0, 0]


def saliency_batched(model, image, label):
    """Differently: a one-hot weighted sum of the logits through autograd.grad, then squeeze."""
    x = image.detach().clone()[None].requires_grad_()
    one_hot = F.one_hot(torch.tensor([label]), 10).float()
    (grad,) = torch.autograd.grad((model(x) * one_hot).sum(), x)
    return grad.squeeze().abs()


def saliency_signed(model, image, label):
    x = image.clone().unsqueeze(0).requires_grad_(True)
    model(x)[0, label].backward()
    return x.grad[0, 0]


def saliency_probability(model, image, label):
    x = image.clone().unsqueeze(0).requires_grad_(True)
    model(x).softmax(1)[0, label].backward()
    return x.grad.abs()[0, 0]


def saliency_loss(model, image, label):
    x = image.clone().unsqueeze(0).requires_grad_(True)
    F.cross_entropy(model(x), torch.tensor([label])).backward()
    return x.grad.abs()[0, 0]


MISTAKES = [
    ("6.1", pairs_with_diagonal, "('Bag', 'Bag', 977), a correct prediction from the diagonal"),
    ("6.1", pairs_transposed, "got ('T-shirt/top', 'Shirt', 196): rows are the true class"),
    ("6.1", pairs_ascending, "expected the largest counts first [196, 108, 95, 80, 57], got counts [57, 80"),
    ("6.1", pairs_ids, "expected class names (strings from CLASS_NAMES), got (6, 0, 196)"),
    ("6.1", pairs_in_place, "your function changed the matrix it was given"),
    ("6.1", lambda matrix, k: pairs_reference(matrix, k - 1), "expected 5 pairs for k=5, got 4"),
    ("6.1", lambda matrix, k: {"Shirt": "T-shirt/top"}, "expected a list of (true name, predicted name, count)"),
    ("6.2", ece_global, "got 0.0375: that is |mean confidence − accuracy| over all predictions"),
    ("6.2", ece_unweighted, "got 0.175: that is the plain mean of the bins' gaps"),
    ("6.2", ece_drops_certain, "predictions with confidence exactly 1.0 belong to the last bin"),
    ("6.2", ece_fixed_bins, "ECE of 2,000 seeded predictions with 5 bins"),
    ("6.2", lambda c, k, n=10: "0.1", "expected the ECE to be a number, got str"),
    ("6.3", occlusion_reversed, "has the opposite sign"),
    ("6.3", occlusion_logits, "matches a drop in the logit: apply softmax"),
    ("6.3", occlusion_top_left, "matches a patch whose top-left corner is at (i, j): centre it"),
    ("6.3", occlusion_in_place, "changed the image it was given"),
    (
        "6.3",
        lambda m, x, label, patch: occlusion_reference(m, x, label, patch).unsqueeze(0),
        "expected occlusion_map(model, image, label=5, patch=3) of shape (16, 16), got (1, 16, 16)",
    ),
    (
        "6.3",
        lambda m, x, label, patch: occlusion_reference(m, x, label, 3),
        "occlusion_map(model, image, label=0, patch=5) differs from the reference by up to",
    ),
    ("6.4", saliency_signed, "has negative values: take the absolute value"),
    ("6.4", saliency_probability, "matches the gradient of the probability: differentiate the class's score"),
    ("6.4", saliency_loss, "matches the gradient of the loss"),
    ("6.4", lambda m, x, label: saliency_reference(m, x, label)[None], "of shape (16, 16), got (1, 16, 16)"),
    ("6.4", lambda m, x, label: saliency_reference(m, x, 0), "saliency_map(model, image, label=5) differs"),
    ("6.4", lambda m, x, label: saliency_reference(m, x, label).tolist(), "to be a torch.Tensor, got list"),
]


@pytest.mark.parametrize("exercise_id,answer,fragment", MISTAKES)
def test_mistakes_fail_and_say_why(exercise_id, answer, fragment):
    fails(exercise_id, answer, fragment=fragment)


ECE_START = "0.1125 on the two-group example, 0 on calibrated data, 0.1 with confidences of 1.0, and 0."
ECE_END = "on 2,000 seeded predictions, with 5, 10, 15 bins, within 1e-5"
OCCLUSION_START = (
    "(16, 16) maps for patch 3 and 5 match the reference on a seeded CNNBatch within 1e-5 (largest drop 0."
)
SALIENCY_START = (
    "(16, 16) maps for two classes match the reference on a seeded CNNBatch within 1e-5 (all ≥ 0, largest 0."
)
CORRECT = [  # (exercise, answer, how its message starts, how it ends)
    ("6.2", ece_reference, ECE_START, ECE_END),
    ("6.2", ece_numpy, ECE_START, ECE_END),
    ("6.3", occlusion_reference, OCCLUSION_START, ""),
    ("6.3", occlusion_padded, OCCLUSION_START, ""),
    ("6.4", saliency_reference, SALIENCY_START, ""),
    ("6.4", saliency_batched, SALIENCY_START, ""),
]


@pytest.mark.parametrize("exercise_id,answer,start,end", CORRECT)
def test_correct_answers_pass(exercise_id, answer, start, end):
    message = passes(exercise_id, answer).message
    assert message.startswith(start) and message.endswith(end), message


# --- issue 12: the package's answer, in place, the mode, other sizes, NaN, a class or a layer instead ------


def pairs_package(matrix, k):
    from fmnist_lab import interpret

    return interpret.most_confused_pairs(matrix, k)


def pairs_always_five(matrix, k):
    return pairs_reference(matrix, 5)


def ece_every_bin(confidences, correct, n_bins=10):
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.tensor(0.0)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidences > lo) & (confidences <= hi)  # an empty bin gives 0 / 0 = NaN
        ece += in_bin.float().mean() * (correct[in_bin].float().mean() - confidences[in_bin].mean()).abs()
    return float(ece)


def ece_bins_in_place(confidences, correct, n_bins=10):
    index = confidences.mul_(n_bins).ceil().long().clamp(1, n_bins) - 1  # scales the caller's confidences
    total = 0.0
    for b in range(n_bins):
        mask = index == b
        if mask.any():
            total += mask.sum().item() * abs(correct[mask].float().mean().item() - (confidences[mask] / n_bins).mean())
    return total / len(confidences)


def ece_package(confidences, correct, n_bins=10):
    from fmnist_lab import interpret

    return interpret.expected_calibration_error(confidences, correct, n_bins)


def ece_largest_gap(confidences, correct, n_bins=10):
    edges = torch.linspace(0, 1, n_bins + 1)
    gaps = [
        (correct[m].float().mean() - confidences[m].mean()).abs()
        for lo, hi in zip(edges[:-1], edges[1:])
        if (m := (confidences > lo) & (confidences <= hi)).any()
    ]
    return float(max(gaps))


def ece_per_bin(confidences, correct, n_bins=10):
    edges = torch.linspace(0, 1, n_bins + 1)
    return torch.stack(
        [
            (
                (m := (confidences > lo) & (confidences <= hi)).float().mean()
                * ((correct[m].float().mean() - confidences[m].mean()).abs() if m.any() else 0)
            )
            for lo, hi in zip(edges[:-1], edges[1:])
        ]
    )


def occlusion_package(model, image, label, patch=3):
    from fmnist_lab import interpret

    return interpret.occlusion_map(model, image, label, patch)


def occlusion_in_training_mode(model, image, label, patch=3):
    model.train()  # "so that batch norm works": it normalises the batch of copies with its own statistics
    return occlusion_padded(model, image, label, patch)


def occlusion_sixteen(model, image, label, patch=3):
    out = torch.zeros(16, 16)
    maps = occlusion_reference(model, image, label, patch)
    out[: maps.shape[0], : maps.shape[1]] = maps
    return out


def saliency_in_place(model, image, label):
    image.requires_grad_(True)
    model(image.unsqueeze(0))[0, label].backward()
    return image.grad.abs()[0]


def saliency_package(model, image, label):
    from fmnist_lab import interpret

    return interpret.saliency_map(model, image, label)


def saliency_leaves_training_mode(model, image, label):
    result = saliency_reference(model, image, label)
    model.train()  # "back to training"
    return result


def saliency_sixteen(model, image, label):
    return saliency_reference(model, image, label).reshape(16, 16)


LAYER = "got a Identity layer (an instance): write the function"
CLASS = "got the class Identity: pass your function"
PACKAGE = "is the answer itself: write the function, as the exercise asks"


@pytest.mark.parametrize(
    "exercise_id,answer,fragment",
    [
        ("6.1", pairs_package, "the package's own interpret.most_confused_pairs " + PACKAGE),
        ("6.1", pairs_always_five, "expected 8 pairs for k=8, got 5"),
        ("6.1", torch.nn.Identity(), LAYER),
        ("6.1", torch.nn.Identity, CLASS),
        ("6.2", ece_every_bin, "the ECE with 10 bins holds 1 NaN value (of 1): look for a division by zero"),
        ("6.2", ece_bins_in_place, "your function changed its input confidences in place"),
        ("6.2", ece_package, "the package's own interpret.expected_calibration_error " + PACKAGE),
        ("6.2", ece_largest_gap, "that is the largest gap (the maximum calibration error)"),
        ("6.2", ece_per_bin, "expected the ECE to be one number, got a tensor of shape (10,)"),
        ("6.2", torch.nn.Identity(), LAYER),
        ("6.3", occlusion_package, "the package's own interpret.occlusion_map " + PACKAGE),
        ("6.3", occlusion_in_training_mode, "was given the model in eval mode and left it in training mode"),
        ("6.3", occlusion_sixteen, "on a 12×12 image and model (label=3, patch=3) of shape (12, 12), got (16, 16)"),
        ("6.3", torch.nn.Identity(), LAYER),
        ("6.3", torch.nn.Identity, CLASS),
        ("6.4", saliency_in_place, "set requires_grad on the image it was given: make a copy"),
        ("6.4", saliency_package, "the package's own interpret.saliency_map " + PACKAGE),
        ("6.4", saliency_leaves_training_mode, "was given the model in eval mode and left it in training mode"),
        ("6.4", saliency_sixteen, "works on a 16×16 image but fails on saliency_map on a 12×12 image and model"),
        ("6.4", torch.nn.Identity(), LAYER),
    ],
)
def test_more_mistakes_fail_and_name_the_cause(exercise_id, answer, fragment):
    assert_check_fails(exercise_id, answer, fragment)


def test_a_check_leaves_the_package_as_it_was():
    from fmnist_lab import interpret

    before = (interpret.occlusion_map, interpret.saliency_map, interpret.expected_calibration_error)
    assert run_check("6.3", occlusion_package).status == "failed"
    assert run_check("6.4", saliency_reference).status == "passed"
    assert (interpret.occlusion_map, interpret.saliency_map, interpret.expected_calibration_error) == before
