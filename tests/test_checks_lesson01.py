"""The checks of lesson 01: the reference and a differently written answer pass, plausible mistakes fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fmnist_lab.checks import run_check

# 1.1 to_batch ---------------------------------------------------------------------------------------


def to_batch(images_uint8):
    return torch.tensor(images_uint8, dtype=torch.float32).div(255).unsqueeze(1)


def to_batch_numpy(images_uint8):  # written differently: NumPy first, reshape instead of unsqueeze
    scaled = np.asarray(images_uint8, dtype=np.float64) / 255.0
    return torch.from_numpy(scaled.reshape(len(scaled), 1, *scaled.shape[1:]).astype(np.float32))


def test_1_1_reference_and_alternative_pass():
    for answer in (to_batch, to_batch_numpy):
        result = run_check("1.1", answer)
        assert result.status == "passed", result.message
        assert "(N, 1, 28, 28) float32" in result.message and "within 1e-6" in result.message


@pytest.mark.parametrize(
    "wrong,fragment",
    [
        (lambda a: torch.tensor(a, dtype=torch.float32).div(255), "of shape (3, 1, 5, 7), got (3, 5, 7)"),
        (lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1), "differs from the reference by up to 254"),
        (
            lambda a: torch.tensor(a, dtype=torch.float64).div(255).unsqueeze(1),
            "dtype torch.float32, got torch.float64",
        ),
        (lambda a: (a / 255.0)[:, None], "to be a torch.Tensor, got ndarray"),
    ],
)
def test_1_1_mistakes_fail_saying_what_differs(wrong, fragment):
    result = run_check("1.1", wrong)
    assert result.status == "failed"
    assert fragment in result.message and "hint:" in result.message


# 1.2 class_counts -----------------------------------------------------------------------------------


def class_counts(labels):
    return torch.bincount(labels, minlength=10)


def class_counts_loop(labels):  # written differently: a comparison per class, float result
    return torch.stack([(labels == c).sum() for c in range(10)]).float()


def test_1_2_reference_and_alternative_pass():
    for answer in (class_counts, class_counts_loop):
        result = run_check("1.2", answer)
        assert result.status == "passed", result.message
        assert "10,000 test labels (1,000 per class)" in result.message


def test_1_2_mistakes_fail_saying_what_differs():
    result = run_check("1.2", lambda labels: torch.bincount(labels))  # no minlength
    assert result.status == "failed"
    assert "of shape (10,), got (9,)" in result.message and "minlength=10" in result.message
    result = run_check("1.2", lambda labels: torch.tensor([(labels == c).sum().item() for c in range(1, 11)]))
    assert result.status == "failed" and "expected class_counts of 37 labels" in result.message
    result = run_check("1.2", lambda labels: torch.bincount(labels, minlength=10).tolist())
    assert result.status == "failed" and "got list" in result.message


# 1.3 pixel_mean_std ---------------------------------------------------------------------------------


def pixel_mean_std(images):
    return images.mean().item(), images.std().item()


def pixel_mean_std_by_hand(images):  # written differently: float64 sums, biased variance, a tensor pair
    x = images.double().flatten()
    mean = x.sum() / x.numel()
    return torch.stack([mean, ((x - mean) ** 2).mean().sqrt()])


def test_1_3_reference_and_alternative_pass():
    for answer in (pixel_mean_std, pixel_mean_std_by_hand):
        result = run_check("1.3", answer)
        assert result.status == "passed", result.message
        assert "test set mean 0.2868, std 0.3524" in result.message and "within 0.0001" in result.message


@pytest.mark.parametrize(
    "wrong,fragment",
    [
        (
            lambda x: (x.mean(dim=(1, 2, 3)).mean(), x.std(dim=(1, 2, 3)).mean()),
            "expected the pixel std of the test set",
        ),
        (lambda x: ((x * 255).mean(), (x * 255).std()), "expected the mean of 200 uniform random images = 0.5"),
        (lambda x: (x.mean(), x.var()), "expected the std of 200 uniform random images"),
        (lambda x: x.mean(), "to return two numbers (mean, std), got Tensor"),
        (lambda x: (x.mean(), x.std(), x.max()), "got tuple of length 3"),
    ],
)
def test_1_3_mistakes_fail_saying_what_differs(wrong, fragment):
    result = run_check("1.3", wrong)
    assert result.status == "failed"
    assert fragment in result.message


# 1.4 mean_image_per_class ---------------------------------------------------------------------------


def mean_image_per_class(images, labels):
    return torch.stack([images[labels == c].mean(dim=0)[0] for c in range(10)])


def mean_image_per_class_onehot(images, labels):  # written differently: one matrix product
    one_hot = F.one_hot(labels, 10).T.float()
    flat = images.flatten(1)
    means = one_hot @ flat / one_hot.sum(dim=1, keepdim=True)
    return means.reshape(10, *images.shape[-2:])


def test_1_4_reference_and_alternative_pass():
    for answer in (mean_image_per_class, mean_image_per_class_onehot):
        result = run_check("1.4", answer)
        assert result.status == "passed", result.message
        assert "(10, 28, 28)" in result.message and "within 1e-5" in result.message


def test_1_4_mistakes_fail_saying_what_differs():
    keeps_channel = lambda x, y: torch.stack([x[y == c].mean(dim=0) for c in range(10)])  # noqa: E731
    result = run_check("1.4", keeps_channel)
    assert result.status == "failed" and "of shape (10, 6, 8), got (10, 1, 6, 8)" in result.message
    sums = lambda x, y: torch.stack([x[y == c, 0].sum(dim=0) for c in range(10)])  # noqa: E731
    result = run_check("1.4", sums)
    assert result.status == "failed" and "differs from the reference by up to" in result.message


# 1.5 resize_batch -----------------------------------------------------------------------------------


def resize_batch(images, size):
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def resize_batch_pil(images, size):  # written differently: PIL image by image, as the original did
    out = []
    for image in images:
        grey = Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy(), mode="L")
        out.append(torch.tensor(np.array(grey.resize((size, size), Image.BILINEAR)), dtype=torch.float32))
    return torch.stack(out).div(255).unsqueeze(1)


def test_1_5_reference_and_alternative_pass():
    for answer in (resize_batch, resize_batch_pil):
        result = run_check("1.5", answer)
        assert result.status == "passed", result.message
        assert "within one grey level (1/255)" in result.message


@pytest.mark.parametrize(
    "wrong,fragment",
    [
        (lambda x, s: F.interpolate(x, size=(s, s), mode="bilinear"), "grey levels (tolerance: 1 grey level"),
        (lambda x, s: F.interpolate(x, size=(s, s), mode="nearest"), "differs from PIL's Resize((16, 16))"),
        (
            lambda x, s: F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True),
            "of shape (200, 1, 20, 20), got (200, 1, 16, 16)",
        ),
        (
            lambda x, s: (F.interpolate(x, size=(s, s), mode="bilinear", antialias=True) * 255).round().to(torch.uint8),
            "floats in [0, 1], got dtype torch.uint8",
        ),
    ],
)
def test_1_5_mistakes_fail_saying_what_differs(wrong, fragment):
    result = run_check("1.5", wrong)
    assert result.status == "failed"
    assert fragment in result.message
