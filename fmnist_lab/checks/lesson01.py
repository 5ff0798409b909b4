"""Checks of lesson 01 (the data): raw bytes to tensors, class counts, pixel statistics, class means, resizing."""

from __future__ import annotations

import numpy as np
import torch

from fmnist_lab.checks import Mismatch, exercise, expect_callable, expect_close, expect_number, expect_tensor

GREY_LEVEL = 1 / 255


def _test_images(count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` test images (N, 1, 28, 28) in [0, 1] and their labels."""
    from fmnist_lab import data

    images, labels = data.load("test", 28)
    return (images, labels) if count is None else (images[:count], labels[:count])


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) floats in [0, 1] back to the file's (N, H, W) uint8 grey levels (a writable copy)."""
    return (images[:, 0] * 255).round().to(torch.uint8).numpy().copy()


def _expect_dtype(value: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    if value.dtype != dtype:
        raise Mismatch(f"expected {what} of dtype {dtype}, got {value.dtype}")


@exercise("1.1", "to_batch",
          "convert to float32, divide by 255, and add a channel axis with unsqueeze(1): "
          "(N, H, W) → (N, 1, H, W)")
def check_to_batch(to_batch) -> str:
    expect_callable(to_batch, "a function to_batch(images_uint8)")
    generator = torch.Generator().manual_seed(1)
    small = torch.randint(0, 256, (3, 5, 7), generator=generator, dtype=torch.uint8)
    small[0, 0, 0], small[0, 0, 1] = 0, 255
    expected = small.float().div(255).unsqueeze(1)
    got = expect_tensor(to_batch(small.numpy().copy()), "to_batch(a (3, 5, 7) uint8 array)", (3, 1, 5, 7))
    _expect_dtype(got, torch.float32, "to_batch(a (3, 5, 7) uint8 array)")
    expect_close(got, expected, "to_batch(a (3, 5, 7) uint8 array)", atol=1e-6)
    images, _ = _test_images(1000)
    got = expect_tensor(to_batch(_as_uint8(images)), "to_batch(1,000 test images)", (1000, 1, 28, 28))
    _expect_dtype(got, torch.float32, "to_batch(1,000 test images)")
    expect_close(got, images, "to_batch(1,000 test images)", atol=1e-6)
    return ("(N, 28, 28) uint8 → (N, 1, 28, 28) float32 in [0, 1], equal to data.load('test') on 1,000 "
            "images (and on a (3, 5, 7) array) within 1e-6")


def _expect_counts(value, expected: torch.Tensor, what: str) -> torch.Tensor:
    got = expect_tensor(value, what, tuple(expected.shape))
    if not torch.equal(got.detach().cpu().double(), expected.double()):
        shown = [int(v) if float(v).is_integer() else float(v) for v in got.detach().cpu().double().tolist()]
        raise Mismatch(f"expected {what} = {expected.tolist()}, got {shown}")
    return got


@exercise("1.2", "class_counts",
          "torch.bincount(labels, minlength=10) counts every class, even one that never appears")
def check_class_counts(class_counts) -> str:
    expect_callable(class_counts, "a function class_counts(labels)")
    # An uneven set in which class 9 never appears: bincount without minlength returns only 9 counts.
    uneven = torch.tensor([0] * 5 + [1] * 1 + [2] * 7 + [3] * 2 + [4] * 4 + [5] * 3 + [6] * 8 + [7] * 6 + [8] * 1)
    uneven = uneven[torch.randperm(len(uneven), generator=torch.Generator().manual_seed(0))]
    expected = torch.bincount(uneven, minlength=10)
    what = "class_counts of 37 labels in which class 9 never appears"
    _expect_counts(class_counts(uneven.clone()), expected, what)
    _, labels = _test_images()
    got = _expect_counts(class_counts(labels.clone()), torch.bincount(labels, minlength=10),
                         "class_counts(test labels)")
    return (f"10 counts, {int(got.sum()):,} test labels ({int(got[0]):,} per class), and "
            f"{expected.tolist()} on an uneven set without class 9")


def _two_numbers(result, what: str) -> tuple:
    if isinstance(result, torch.Tensor) and result.numel() == 2:
        result = tuple(result.flatten())
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise Mismatch(f"expected {what} to return two numbers (mean, std), got "
                       f"{type(result).__name__}{' of length ' + str(len(result)) if isinstance(result, (tuple, list)) else ''}")
    return tuple(result)


@exercise("1.3", "pixel_mean_std",
          "one mean and one std over ALL pixels of all images at once, on the [0, 1] scale "
          "(images.mean(), images.std())")
def check_pixel_mean_std(pixel_mean_std) -> str:
    expect_callable(pixel_mean_std, "a function pixel_mean_std(images)")
    tolerance = 1e-4
    # Large inputs, so the biased and the unbiased std agree far below the tolerance.
    random = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    mean, std = _two_numbers(pixel_mean_std(random.clone()), "pixel_mean_std(images)")
    reference = random.double()
    expect_number(mean, reference.mean().item(), "the mean of 200 uniform random images", tolerance)
    expect_number(std, reference.std().item(), "the std of 200 uniform random images", tolerance)
    images, _ = _test_images()
    mean, std = _two_numbers(pixel_mean_std(images.clone()), "pixel_mean_std(images)")
    reference = images.double()
    mean = expect_number(mean, reference.mean().item(), "the mean pixel of the test set", tolerance)
    std = expect_number(std, reference.std().item(), "the pixel std of the test set", tolerance)
    return (f"test set mean {mean:.4f}, std {std:.4f} (and 200 random images) match the reference "
            f"within {tolerance:g}")


@exercise("1.4", "mean_image_per_class",
          "for each class c, average images[labels == c] over the images, drop the channel axis, "
          "and stack the 10 results into (10, H, W)")
def check_mean_image_per_class(mean_image_per_class) -> str:
    expect_callable(mean_image_per_class, "a function mean_image_per_class(images, labels)")
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(50, 1, 6, 8, generator=generator)
    small_labels = torch.arange(10).repeat(5)[torch.randperm(50, generator=generator)]
    expected = torch.stack([small[small_labels == c, 0].mean(0) for c in range(10)])
    what = "mean_image_per_class of 50 random (1, 6, 8) images"
    expect_close(mean_image_per_class(small.clone(), small_labels.clone()), expected, what, atol=1e-5)
    images, labels = _test_images()
    expected = torch.stack([images[labels == c, 0].mean(0) for c in range(10)])
    what = "mean_image_per_class(test images, test labels)"
    expect_close(mean_image_per_class(images.clone(), labels.clone()), expected, what, atol=1e-5)
    return "(10, 28, 28) class means of the 10,000 test images (and of 50 random 6×8 images) within 1e-5"


@exercise("1.5", "resize_batch",
          "bilinear interpolation WITH antialiasing, like PIL: "
          "F.interpolate(images, size=(size, size), mode='bilinear', antialias=True)")
def check_resize_batch(resize_batch) -> str:
    from fmnist_lab import data

    expect_callable(resize_batch, "a function resize_batch(images, size)")
    images, _ = _test_images(200)
    tolerance = GREY_LEVEL + 1e-6
    for size in (16, 20):
        expected = torch.tensor(data.resize_images(_as_uint8(images), size)).float().div(255).unsqueeze(1)
        what = f"resize_batch(200 test images, {size})"
        got = expect_tensor(resize_batch(images.clone(), size), what, (200, 1, size, size))
        if not got.is_floating_point():
            raise Mismatch(f"expected {what} to hold floats in [0, 1], got dtype {got.dtype}")
        difference = (got.detach().double() - expected.double()).abs().max().item()
        if not difference <= tolerance:
            raise Mismatch(f"{what} differs from PIL's Resize(({size}, {size})) by up to "
                           f"{difference * 255:.3g} grey levels (tolerance: 1 grey level = 1/255)")
    return "(200, 1, 16, 16) and (200, 1, 20, 20) within one grey level (1/255) of PIL's bilinear Resize"
