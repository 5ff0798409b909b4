"""Lesson 06 · Error analysis: confused pairs, expected calibration error, occlusion and saliency maps.

Every check runs the learner's function on fixed inputs (a hand-made confusion matrix, synthetic
confidences, a seeded random `CNNBatch` in eval mode and a synthetic 16×16 image, never the trained
model) and compares the result with the reference in `fmnist_lab.interpret`. Where a plausible
mistake is recognisable (diagonal included, rows and columns swapped, unweighted bins, logits instead
of probabilities, a missing absolute value, …) the message names it.

Beyond the values: every tensor argument, and the model's weights and buffers, must come back unchanged
(6.4 must not set `requires_grad` on the image it is given either); the model must be left in the eval
mode it was given; 6.3 and 6.4 also run on a 12×12 image and model (a size written into the function
shows up); NaN and infinity get their own message; a layer or a class passed instead of the function
is named. Decided (the contested cases):

- a float64 map passes: a map is drawn, not fed to a next layer, and its values are the same;
- the map may come back on the CPU whatever the model's device (the lesson's answer does, to plot it),
  so the device is not checked;
- the package's own answers (`fmnist_lab.interpret.most_confused_pairs`, `expected_calibration_error`,
  `calibration_bins`, `occlusion_map`, `saliency_map`) are ruled out: the exercise is to write them.
  A name bound to them before the check runs is not seen (the limit of `forbid_call`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fmnist_lab import interpret
from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk

# The test-set confusion matrix of the seed-0 original run (rows true, columns predicted).
SEED0_MATRIX = np.array(
    [
        [914, 2, 11, 18, 2, 1, 48, 0, 4, 0],
        [5, 972, 0, 18, 3, 0, 1, 0, 1, 0],
        [32, 1, 770, 8, 108, 0, 80, 0, 1, 0],
        [33, 1, 10, 899, 31, 0, 23, 0, 2, 1],
        [4, 1, 56, 30, 812, 1, 95, 0, 1, 0],
        [1, 0, 0, 0, 0, 971, 0, 8, 1, 19],
        [196, 3, 48, 27, 57, 0, 663, 0, 6, 0],
        [0, 0, 0, 0, 0, 30, 0, 930, 2, 38],
        [4, 0, 3, 3, 2, 2, 6, 3, 977, 0],
        [1, 0, 0, 0, 0, 3, 0, 28, 0, 968],
    ],
    dtype=np.int64,
)


MODEL_ADVICE = "leave the model's weights and batch-norm statistics alone"


def shuffled_matrix() -> np.ndarray:
    """A 10×10 matrix whose 90 off-diagonal counts are 0…89 in a seeded order; some diagonals are small."""
    rng, diagonal, matrix = np.random.default_rng(61), np.eye(10, dtype=bool), np.zeros((10, 10), dtype=np.int64)
    matrix[~diagonal], matrix[diagonal] = rng.permutation(90), rng.integers(0, 200, 10)
    return matrix


# --------------------------------------------------------------------------------------------- 6.1


def _pairs(value: Any, k: int) -> list[tuple[str, str, int]]:
    """A learner's list of (true name, predicted name, count) as plain tuples, or a Mismatch."""
    if not isinstance(value, (list, tuple)):
        raise Mismatch(f"expected a list of (true name, predicted name, count) tuples, got {type(value).__name__}")
    if len(value) != k:
        raise Mismatch(f"expected {k} pairs for k={k}, got {len(value)}")
    pairs = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise Mismatch(f"expected each pair to be a tuple (true name, predicted name, count), got {item!r:.60}")
        true, predicted, count = item
        if not isinstance(true, str) or not isinstance(predicted, str):
            raise Mismatch(f"expected class names (strings from CLASS_NAMES), got {item!r:.60}")
        try:
            count = tk.as_number(count, "the count")
        except Mismatch:
            count = None
        if count is None or not count.is_integer():
            raise Mismatch(f"expected the count to be a whole number, got {item!r:.60}")
        pairs.append((true, predicted, int(count)))
    return pairs


def _same_pairs(got: list[tuple[str, str, int]], expected: list[tuple[str, str, int]]) -> bool:
    """Same counts in the same order and the same pairs (ties may come in any order)."""
    return [c for *_, c in got] == [c for *_, c in expected] and sorted(got) == sorted(expected)


@exercise(
    "6.1",
    "most_confused_pairs",
    "skip the diagonal (i == j), rank the cells matrix[true, predicted] by count, largest first, "
    "and return (CLASS_NAMES[true], CLASS_NAMES[predicted], count)",
)
def check_most_confused_pairs(most_confused_pairs) -> str:
    tk.expect_plain_function(most_confused_pairs, "a function most_confused_pairs(matrix, k)")
    for matrix, k, what in (
        (SEED0_MATRIX, 5, "the seed-0 model's confusion matrix, k=5"),
        (shuffled_matrix(), 8, "a shuffled matrix with small diagonals, k=8"),
    ):
        given = matrix.copy()
        with tk.without_package(interpret, "most_confused_pairs"):
            answer = most_confused_pairs(given, k)
        got = _pairs(answer, k)
        if not np.array_equal(given, matrix):
            raise Mismatch(f"{what}: your function changed the matrix it was given; work on a copy")
        expected = interpret.most_confused_pairs(matrix, k)
        if _same_pairs(got, expected):
            continue
        diagonal, counts = [p for p in got if p[0] == p[1]], [c for *_, c in got]
        if diagonal:
            reason = (
                f"your list holds {diagonal[0]}, a correct prediction from the diagonal; a confusion is an "
                "off-diagonal cell"
            )
        elif _same_pairs(got, [(b, a, c) for a, b, c in expected]):
            reason = (
                f"expected first {expected[0]}, got {got[0]}: rows are the true class, columns the predicted "
                "class (matrix[true, predicted])"
            )
        elif counts != sorted(counts, reverse=True):
            reason = f"expected the largest counts first {[c for *_, c in expected]}, got counts {counts}"
        else:
            reason = f"expected {expected}, got {got}"
        raise Mismatch(f"{what}: {reason}")
    top = interpret.most_confused_pairs(SEED0_MATRIX, 1)[0]
    return (
        f"top 5 of the seed-0 matrix (first {top[0]} → {top[1]}, {top[2]}) and top 8 of a shuffled "
        "matrix match the reference"
    )


# --------------------------------------------------------------------------------------------- 6.2


TWO_GROUP_MISTAKES = [  # (explanation, the ECE it gives) on 300 predictions at 0.95 and 100 at 0.45
    ("that is |mean confidence − accuracy| over all predictions; take the gap within each bin, then average", 0.0375),
    ("that is the plain mean of the bins' gaps; weight each bin by its share of the predictions (n_b / N)", 0.175),
    ("that is the largest gap (the maximum calibration error); ECE averages them", 0.3),
]
# (groups of (confidence, n, right): n predictions at one confidence, the first `right` correct; what they are,
# their ECE, the mistakes that give a known value)
ECE_CASES = [
    (
        ((0.95, 300, 270), (0.45, 100, 75)),
        "300 predictions at 0.95 (90% right) and 100 at 0.45 (75% right)",
        0.1125,
        TWO_GROUP_MISTAKES,
    ),
    (
        ((0.65, 20, 13), (0.85, 40, 34), (0.25, 4, 1)),
        "calibrated predictions (65% right at 0.65, 85% at 0.85, 25% at 0.25)",
        0.0,
        [],
    ),
    (
        ((1.0, 50, 40), (0.62, 50, 31)),
        "50 predictions at confidence 1.0 (80% right) and 50 at 0.62 (62% right)",
        0.1,
        [("predictions with confidence exactly 1.0 belong to the last bin", 0.0)],
    ),
]


def random_predictions(n: int = 2000) -> tuple[Tensor, Tensor]:
    """Seeded predictions right with probability confidence + 0.15·sin(9·confidence): the ECE depends on the bins."""
    generator = torch.Generator().manual_seed(62)
    confidence = 0.1 + 0.9 * torch.rand(n, generator=generator)
    correct = torch.rand(n, generator=generator) < (confidence + 0.15 * torch.sin(9 * confidence)).clamp(0, 1)
    return confidence, correct


@exercise(
    "6.2",
    "expected_calibration_error",
    "split [0, 1] into n_bins equal bins; in each non-empty bin take |accuracy − mean confidence|, "
    "weighted by the bin's share of all predictions (n_b / N), and add them up",
)
def check_expected_calibration_error(expected_calibration_error) -> str:
    tk.expect_plain_function(
        expected_calibration_error, "a function expected_calibration_error(confidences, correct, n_bins)"
    )

    def learner_ece(confidences: Tensor, correct: Tensor, n_bins: int) -> float:
        """The learner's ECE: inputs unchanged, no package shortcut, a finite number."""
        with tk.without_package(interpret, "expected_calibration_error", "calibration_bins"):
            value = tk.call_unmodified(
                expected_calibration_error, confidences, correct, n_bins, names=("confidences", "correct")
            )
        tk.expect_finite(value, f"the ECE with {n_bins} bins")
        return tk.as_number(value, "the ECE")

    for groups, what, ece, mistakes in ECE_CASES:
        confidences = torch.cat([torch.full((n,), confidence) for confidence, n, _ in groups])
        correct = torch.cat([torch.arange(n) < right for _, n, right in groups])
        got = learner_ece(confidences, correct, 10)
        shown = f"expected ECE {ece:g} (± 1e-5) for {what}, got {got:.4g}"
        tk.expect_same(got, ece, what, mistakes, atol=1e-5, close=1e-4, found=shown + ": ", otherwise=shown)
    confidence, correct = random_predictions()
    for given, n_bins, what in [
        *((confidence, n, f"ECE of 2,000 seeded predictions with {n} bins") for n in (5, 10, 15)),
        (confidence.double(), 10, "ECE of the same predictions with float64 confidences"),
    ]:
        expected = interpret.expected_calibration_error(confidence, correct, n_bins)
        tk.expect_number(learner_ece(given, correct, n_bins), expected, what, 1e-5)
    ece10 = interpret.expected_calibration_error(confidence, correct, 10)
    return (
        f"0.1125 on the two-group example, 0 on calibrated data, 0.1 with confidences of 1.0, and "
        f"{ece10:.4f} (10 bins) on 2,000 seeded predictions, with 5, 10, 15 bins, within 1e-5"
    )


# --------------------------------------------------------------------------------------- 6.3 and 6.4


def seeded_image() -> Tensor:
    """A synthetic (1, 16, 16) image in [0, 1] whose five left columns are 0 (background)."""
    image = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(60))
    image[:, :, :5] = 0
    return image


def _map(function: Any, model: nn.Module, image: Tensor, *rest: Any, what: str, package: str) -> Tensor:
    """The learner's map for (model, a copy of image, *rest), a finite (H, W) tensor; the inputs left as they were."""
    given = image.clone()
    with tk.without_package(interpret, package), tk.watch_module(model, "model", MODEL_ADVICE):
        got = function(model, given, *rest)
        tk.expect_mode_restored(model, False, what)  # before the weights: a .train() changes the statistics too
    if not torch.equal(given.detach(), image):
        raise Mismatch(f"{what} changed the image it was given; work on a copy (image.clone())")
    if given.requires_grad:
        raise Mismatch(
            f"{what} set requires_grad on the image it was given: make a copy that requires the gradient "
            "(image.clone().requires_grad_(True)) and leave the caller's image as it was"
        )
    got = tk.expect_tensor(got, what, tuple(image.shape[1:]))
    tk.expect_finite(got, what)
    return got


def _expect_maps(function: Any, package: str, cases: list[dict], small: dict, mistakes: Any, close: float) -> list:
    """The reference maps after each case's map equals them (or names its mistake) and the 12×12 `small` case runs."""
    reference, model, image, maps = getattr(interpret, package), tk.random_cnn_batch(6), seeded_image(), []
    for arguments in cases:
        what = f"{package}(model, image, " + ", ".join(f"{k}={v}" for k, v in arguments.items()) + ")"
        got = _map(function, model, image, *arguments.values(), what=what, package=package)
        maps.append(expected := reference(model, image, *arguments.values()))
        tk.expect_same(got, expected, what, mistakes(model, image, expected, **arguments), close=close)
    model, image = tk.random_cnn_batch(6, image_size=12), seeded_image()[:, :12, :12].clone()
    what = f"{package} on a 12×12 image and model (" + ", ".join(f"{k}={v}" for k, v in small.items()) + ")"
    with tk.other_input("a 16×16 image", what):
        got = _map(function, model, image, *small.values(), what=what, package=package)
    tk.expect_close(got, reference(model, image, *small.values()), what, atol=1e-5)
    return maps


@torch.no_grad()
def _occlusion_variant(
    model: nn.Module, image: Tensor, label: int, patch: int, centred: bool = True, logits: bool = False
) -> Tensor:
    """The reference occlusion map, or a plausible mistake (patch anchored at its top-left, logits)."""
    _, height, width = image.shape
    half = patch // 2 if centred else 0
    occluded = image.repeat(height * width, 1, 1, 1)
    for i in range(height):
        for j in range(width):
            occluded[i * width + j, :, max(0, i - half) : i - half + patch, max(0, j - half) : j - half + patch] = 0
    scores = model(torch.cat([image.unsqueeze(0), occluded]))
    values = scores if logits else scores.softmax(1)
    return (values[0, label] - values[1:, label]).reshape(height, width)


def _occlusion_mistakes(model: nn.Module, image: Tensor, expected: Tensor, label: int, patch: int) -> list:
    """The maps of the usual slips: the sign, logits instead of probabilities, a patch anchored at its corner."""
    return [
        (
            "has the opposite sign: store p(original) − p(occluded), the drop, so that important regions are positive",
            -expected,
        ),
        (
            "matches a drop in the logit: apply softmax and use the probability",
            lambda: _occlusion_variant(model, image, label, patch, logits=True),
        ),
        (
            f"matches a patch whose top-left corner is at (i, j): centre it on the pixel (rows i − {patch // 2} … "
            f"i + {patch // 2})",
            lambda: _occlusion_variant(model, image, label, patch, centred=False),
        ),
    ]


@exercise(
    "6.3",
    "occlusion_map",
    "for each pixel (i, j), copy the image, set the patch×patch square centred on it "
    "(rows i − patch//2 … i + patch//2, clipped at the borders) to 0, and store "
    "p(label | image) − p(label | occluded) from the softmax of the model's output",
)
def check_occlusion_map(occlusion_map) -> str:
    tk.expect_plain_function(occlusion_map, "a function occlusion_map(model, image, label, patch)")
    cases, small = [{"label": 5, "patch": 3}, {"label": 0, "patch": 5}], {"label": 3, "patch": 3}
    maps = _expect_maps(occlusion_map, "occlusion_map", cases, small, _occlusion_mistakes, close=1e-4)
    return (
        f"(16, 16) maps for patch 3 and 5 match the reference on a seeded CNNBatch within 1e-5 "
        f"(largest drop {maps[0].max().item():.3f}; 0 where the image is background)"
    )


def _gradient(model: nn.Module, image: Tensor, score: Any) -> Tensor:
    """∂ score(logits) / ∂ pixels as (H, W), signed: for the gradients of plausible mistakes."""
    x = image.unsqueeze(0).clone().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(score(model(x)), x)
    return gradient[0, 0]


def _saliency_mistakes(model: nn.Module, image: Tensor, expected: Tensor, label: int) -> list:
    """The maps of the usual slips: the signed gradient, the gradient of the probability or of the loss."""
    score = "differentiate the class's score, the logit model(x)[0, label], before the softmax"
    return [
        (
            "has negative values: take the absolute value of the gradient",
            lambda: _gradient(model, image, lambda logits: logits[0, label]),
        ),
        (
            f"matches the gradient of the probability: {score}",
            lambda: _gradient(model, image, lambda logits: logits.softmax(1)[0, label]).abs(),
        ),
        (
            f"matches the gradient of the loss: {score}",
            lambda: _gradient(model, image, lambda logits: F.cross_entropy(logits, torch.tensor([label]))).abs(),
        ),
    ]


@exercise(
    "6.4",
    "saliency_map",
    "make a copy of the image with requires_grad, take the logit model(x)[0, label] (before the "
    "softmax), backpropagate it to the pixels and return the absolute gradient as (H, W)",
)
def check_saliency_map(saliency_map) -> str:
    tk.expect_plain_function(saliency_map, "a function saliency_map(model, image, label)")
    maps = _expect_maps(
        saliency_map, "saliency_map", [{"label": 5}, {"label": 2}], {"label": 3}, _saliency_mistakes, 1e-5
    )
    return (
        f"(16, 16) maps for two classes match the reference on a seeded CNNBatch within 1e-5 "
        f"(all ≥ 0, largest {maps[0].max().item():.3f})"
    )
