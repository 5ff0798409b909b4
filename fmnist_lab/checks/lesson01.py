"""Checks of lesson 01 (the data): raw bytes to tensors, class counts, pixel statistics, class means, resizing."""

from __future__ import annotations

import numpy as np
import torch

from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks.toolkit import (
    as_pair,
    call_unmodified,
    expect_callable,
    expect_close,
    expect_number,
    expect_tensor,
    max_difference,
)

GREY_LEVEL = 1 / 255


def _test_images(count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` test images (N, 1, 28, 28) in [0, 1] and their labels."""
    from fmnist_lab import data

    images, labels = data.load("test", 28)
    return (images, labels) if count is None else (images[:count], labels[:count])


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) floats in [0, 1] back to the file's (N, H, W) uint8 grey levels (a writable copy)."""
    return (images[:, 0] * 255).round().to(torch.uint8).numpy().copy()


@exercise(
    "1.1",
    "to_batch",
    "convert to float32, divide by 255, and add a channel axis with unsqueeze(1): (N, H, W) → (N, 1, H, W)",
)
def check_to_batch(to_batch) -> str:
    expect_callable(to_batch, "a function to_batch(images_uint8)")
    small = torch.randint(0, 256, (3, 5, 7), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    small[0, 0, 0], small[0, 0, 1] = 0, 255
    images, _ = _test_images(1000)
    for array, expected, what in (
        (small.numpy(), small.float().div(255).unsqueeze(1), "to_batch(a (3, 5, 7) uint8 array)"),
        (_as_uint8(images), images, "to_batch(1,000 test images)"),
    ):
        got = call_unmodified(to_batch, array, names=("images_uint8",))
        expect_close(expect_tensor(got, what, tuple(expected.shape), torch.float32), expected, what, atol=1e-6)
    return (
        "(N, 28, 28) uint8 → (N, 1, 28, 28) float32 in [0, 1], equal to data.load('test') on 1,000 "
        "images (and on a (3, 5, 7) array) within 1e-6"
    )


def _expect_counts(value, expected: torch.Tensor, what: str) -> torch.Tensor:
    got = expect_tensor(value, what, tuple(expected.shape))
    if not torch.equal(got.detach().cpu().double(), expected.double()):
        shown = [int(v) if float(v).is_integer() else float(v) for v in got.detach().cpu().double().tolist()]
        raise Mismatch(f"expected {what} = {expected.tolist()}, got {shown}")
    return got


@exercise("1.2", "class_counts", "torch.bincount(labels, minlength=10) counts every class, even one that never appears")
def check_class_counts(class_counts) -> str:
    expect_callable(class_counts, "a function class_counts(labels)")
    # An uneven set in which class 9 never appears: bincount without minlength returns only 9 counts.
    uneven = torch.tensor([0] * 5 + [1] * 1 + [2] * 7 + [3] * 2 + [4] * 4 + [5] * 3 + [6] * 8 + [7] * 6 + [8] * 1)
    uneven = uneven[torch.randperm(len(uneven), generator=torch.Generator().manual_seed(0))]
    for labels, what in (
        (uneven, "class_counts of 37 labels in which class 9 never appears"),
        (_test_images()[1], "class_counts(test labels)"),
    ):
        got = _expect_counts(
            call_unmodified(class_counts, labels, names=("labels",)), torch.bincount(labels, minlength=10), what
        )
    return (
        f"10 counts, {int(got.sum()):,} test labels ({int(got[0]):,} per class), and "
        f"{torch.bincount(uneven, minlength=10).tolist()} on an uneven set without class 9"
    )


@exercise(
    "1.3",
    "pixel_mean_std",
    "one mean and one std over ALL pixels of all images at once, on the [0, 1] scale (images.mean(), images.std())",
)
def check_pixel_mean_std(pixel_mean_std) -> str:
    expect_callable(pixel_mean_std, "a function pixel_mean_std(images)")
    tolerance = 1e-4
    # Large inputs, so the biased and the unbiased std agree far below the tolerance.
    random = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for images, of_mean, of_std in (
        (random, "the mean of 200 uniform random images", "the std of 200 uniform random images"),
        (_test_images()[0], "the mean pixel of the test set", "the pixel std of the test set"),
    ):
        mean, std = as_pair(
            call_unmodified(pixel_mean_std, images, names=("images",)),
            "pixel_mean_std(images)",
            "two numbers (mean, std)",
        )
        mean = expect_number(mean, images.double().mean().item(), of_mean, tolerance)
        std = expect_number(std, images.double().std().item(), of_std, tolerance)
    return f"test set mean {mean:.4f}, std {std:.4f} (and 200 random images) match the reference within {tolerance:g}"


@exercise(
    "1.4",
    "mean_image_per_class",
    "for each class c, average images[labels == c] over the images, drop the channel axis, "
    "and stack the 10 results into (10, H, W)",
)
def check_mean_image_per_class(mean_image_per_class) -> str:
    expect_callable(mean_image_per_class, "a function mean_image_per_class(images, labels)")
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(50, 1, 6, 8, generator=generator)
    small_labels = torch.arange(10).repeat(5)[torch.randperm(50, generator=generator)]
    for (images, labels), what in (
        ((small, small_labels), "mean_image_per_class of 50 random (1, 6, 8) images"),
        (_test_images(), "mean_image_per_class(test images, test labels)"),
    ):
        expected = torch.stack([images[labels == c, 0].mean(0) for c in range(10)])
        got = call_unmodified(mean_image_per_class, images, labels, names=("images", "labels"))
        expect_close(got, expected, what, atol=1e-5)
    return "(10, 28, 28) class means of the 10,000 test images (and of 50 random 6×8 images) within 1e-5"


@exercise(
    "1.5",
    "resize_batch",
    "bilinear interpolation WITH antialiasing, like PIL: "
    "F.interpolate(images, size=(size, size), mode='bilinear', antialias=True)",
)
def check_resize_batch(resize_batch) -> str:
    from fmnist_lab import data

    expect_callable(resize_batch, "a function resize_batch(images, size)")
    images, _ = _test_images(200)
    tolerance = GREY_LEVEL + 1e-6
    for size in (16, 20):
        expected = torch.tensor(data.resize_images(_as_uint8(images), size)).float().div(255).unsqueeze(1)
        what = f"resize_batch(200 test images, {size})"
        got = expect_tensor(call_unmodified(resize_batch, images, size, names=("images",)), what, (200, 1, size, size))
        if not got.is_floating_point():
            raise Mismatch(f"expected {what} to hold floats in [0, 1], got dtype {got.dtype}")
        if not (difference := max_difference(got, expected)) <= tolerance:
            raise Mismatch(
                f"{what} differs from PIL's Resize(({size}, {size})) by up to "
                f"{difference * 255:.3g} grey levels (tolerance: 1 grey level = 1/255)"
            )
    return "(200, 1, 16, 16) and (200, 1, 20, 20) within one grey level (1/255) of PIL's bilinear Resize"
