"""Checks of lesson 01 (the data): raw bytes to tensors, class counts, pixel statistics, class means, resizing.

Decided for the whole lesson: these functions prepare data, so no gradient is required. Results that
feed a network (1.1 to_batch, 1.5 resize_batch) must be float32 (1.5: the input's dtype); counts (1.2)
may be of any numeric dtype, statistics (1.3) any kind of number, and class means (1.4) float32 or
float64. No argument may be changed in place. Every function also runs on an odd-sized second input,
and an error there says that a size was written into the code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk

NO_CHANNEL_AXIS = "add the channel axis with unsqueeze(1)"
CHANNEL_AXIS_SECOND = "the channel axis comes second, (N, 1, H, W): unsqueeze(1), not unsqueeze(0) or unsqueeze(-1)"


def _test_images(count: int | None = None) -> tuple[Tensor, Tensor]:
    """The first `count` test images (N, 1, 28, 28) in [0, 1] and their labels."""
    from fmnist_lab import data

    images, labels = data.load("test", 28)
    return (images, labels) if count is None else (images[:count], labels[:count])


def _as_uint8(images: Tensor) -> np.ndarray:
    """(N, 1, H, W) floats in [0, 1] back to the file's (N, H, W) uint8 grey levels (a writable copy)."""
    return (images[:, 0] * 255).round().to(torch.uint8).numpy().copy()


@exercise(
    "1.1",
    "to_batch",
    "convert to float32, divide by 255, and add a channel axis with unsqueeze(1): (N, H, W) → (N, 1, H, W)",
)
def check_to_batch(to_batch) -> str:
    """Equal to data.load on 1,000 test images, then on a (3, 5, 7) array; the usual scale and axis mistakes named."""
    tk.expect_function(to_batch, "a function to_batch(images_uint8)")
    small = torch.randint(0, 256, (3, 5, 7), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    small[0, 0, 0], small[0, 0, 1] = 0, 255
    images, _ = _test_images(1000)
    first = "1,000 test images (1000, 28, 28)"
    for array, expected, what, size in (
        (_as_uint8(images), images, "to_batch(1,000 test images)", first),
        (small.numpy(), small.float().div(255).unsqueeze(1), "to_batch(a (3, 5, 7) uint8 array)", "a (3, 5, 7) array"),
    ):
        with tk.other_input(first, size):
            got = tk.call_unmodified(to_batch, array, names=("images_uint8",))
        reshaped = isinstance(got, Tensor) and got.numel() == expected.numel()
        axis = (NO_CHANNEL_AXIS if got.ndim == 3 else CHANNEL_AXIS_SECOND) if reshaped else ""
        tk.expect_tensor(got, what, tuple(expected.shape), torch.float32, why=axis)
        scale = [("you divided by 256; the grey levels go from 0 to 255", expected * 255 / 256)]
        tk.expect_same(got, expected, what, scale, atol=1e-6, close=1e-5, found=f"{what} differs from the reference: ")
    return (
        "(N, 28, 28) uint8 → (N, 1, 28, 28) float32 in [0, 1], equal to data.load('test') on 1,000 "
        "images (and on a (3, 5, 7) array) within 1e-6"
    )


MINLENGTH = "a class that never appears needs its 0 too (minlength=10)"


def _expect_counts(value, expected: Tensor, what: str) -> Tensor:
    """Ten counts equal to bincount's; fractions, a (values, counts) pair and a short result named."""
    if isinstance(value, tuple) and len(value) == 2:
        raise Mismatch(
            f"expected {what} to be one tensor of 10 counts, got a pair: torch.unique(..., return_counts=True) "
            "returns (values, counts), and skips a class that never appears"
        )
    short = tk.expect_tensor(value, what).ndim == 1 and len(value) < len(expected)
    got = tk.expect_tensor(value, what, tuple(expected.shape), why=MINLENGTH if short else "")
    if not torch.equal(got.detach().cpu().double(), expected.double()):
        if tk.is_close(got, expected / expected.sum(), atol=1e-6):
            raise Mismatch(f"expected {what} to be counts, got fractions: do not divide by the number of labels")
        shown = [int(v) if float(v).is_integer() else float(v) for v in got.detach().cpu().double().tolist()]
        raise Mismatch(f"expected {what} = {expected.tolist()}, got {shown}")
    return got


@exercise("1.2", "class_counts", "torch.bincount(labels, minlength=10) counts every class, even one that never appears")
def check_class_counts(class_counts) -> str:
    """Counts on 37 labels without class 9, on one label, and on the test labels; any numeric dtype is accepted."""
    tk.expect_function(class_counts, "a function class_counts(labels)")
    # An uneven set in which class 9 never appears: bincount without minlength returns only 9 counts.
    uneven = torch.tensor([0] * 5 + [1] * 1 + [2] * 7 + [3] * 2 + [4] * 4 + [5] * 3 + [6] * 8 + [7] * 6 + [8] * 1)
    uneven = uneven[torch.randperm(len(uneven), generator=torch.Generator().manual_seed(0))]
    first = "37 labels"
    for labels, what, size in (
        (uneven, "class_counts of 37 labels in which class 9 never appears", first),
        (torch.tensor([3]), "class_counts of a single label, tensor([3])", "a single label"),
        (_test_images()[1], "class_counts(test labels)", "the 10,000 test labels"),
    ):
        with tk.other_input(first, size):
            answer = tk.call_unmodified(class_counts, labels, names=("labels",))
        got = _expect_counts(answer, torch.bincount(labels, minlength=10), what)
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
    """Mean and std of 200 and of 37 random images and of the test set; any kind of number is accepted."""
    tk.expect_function(pixel_mean_std, "a function pixel_mean_std(images)")
    tolerance = 1e-4
    # Large inputs, so the biased and the unbiased std agree far below the tolerance.
    generator = torch.Generator().manual_seed(0)
    uniform = torch.rand(200, 1, 28, 28, generator=generator)
    darker = torch.rand(37, 1, 28, 28, generator=generator) * 0.5
    first = "200 images"
    for images, of_mean, of_std, size in (
        (uniform, "the mean of 200 uniform random images", "the std of 200 uniform random images", first),
        (darker, "the mean of 37 random images in [0, 0.5]", "the std of 37 random images in [0, 0.5]", "37 images"),
        (_test_images()[0], "the mean pixel of the test set", "the pixel std of the test set", "the test set"),
    ):
        with tk.other_input(first, size):
            answer = tk.call_unmodified(pixel_mean_std, images, names=("images",))
        mean, std = tk.as_pair(answer, "pixel_mean_std(images)", "two numbers (mean, std)")
        mean = tk.expect_number(mean, images.double().mean().item(), of_mean, tolerance)
        std = tk.expect_number(std, images.double().std().item(), of_std, tolerance)
    return f"test set mean {mean:.4f}, std {std:.4f} (and 200 random images) match the reference within {tolerance:g}"


@exercise(
    "1.4",
    "mean_image_per_class",
    "for each class c, average images[labels == c] over the images, drop the channel axis, "
    "and stack the 10 results into (10, H, W)",
)
def check_mean_image_per_class(mean_image_per_class) -> str:
    """Class means of 50 and of 13 random images (7 classes with one image) and of the test set."""
    tk.expect_function(mean_image_per_class, "a function mean_image_per_class(images, labels)")
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(50, 1, 6, 8, generator=generator)
    small_labels = torch.arange(10).repeat(5)[torch.randperm(50, generator=generator)]
    odd = torch.rand(13, 1, 5, 7, generator=generator)
    odd_labels = torch.cat([torch.arange(10), torch.arange(3)])[torch.randperm(13, generator=generator)]
    first = "50 images (1, 6, 8)"
    for (images, labels), what, size in (
        ((small, small_labels), "mean_image_per_class of 50 random (1, 6, 8) images", first),
        ((odd, odd_labels), "mean_image_per_class of 13 random (1, 5, 7) images", "13 images (1, 5, 7)"),
        (_test_images(), "mean_image_per_class(test images, test labels)", "the test set"),
    ):
        expected = torch.stack([images[labels == c, 0].mean(0) for c in range(10)])
        with tk.other_input(first, size):
            got = tk.call_unmodified(mean_image_per_class, images, labels, names=("images", "labels"))
        tk.expect_tensor(got, what, tuple(expected.shape))
        tk.expect_finite(got, f"{what}, with a mean for each class 0, 1, …, 9,")
        totals = torch.stack([images[labels == c, 0].sum(0) for c in range(10)])
        mistakes = [
            ("you added the images up; divide by the number of images of the class (.mean(dim=0))", totals),
            ("you divided by the number of all images; divide by the number of the class", totals / len(images)),
        ]
        tk.expect_same(got, expected, what, mistakes, found=f"{what} differs from the reference: ")
    tk.expect_device_kept(mean_image_per_class, small, small_labels, what="mean_image_per_class")
    return "(10, 28, 28) class means of the 10,000 test images (and of 50 random 6×8 images) within 1e-5"


@exercise(
    "1.5",
    "resize_batch",
    "bilinear interpolation WITH antialiasing, like PIL: "
    "F.interpolate(images, size=(size, size), mode='bilinear', antialias=True)",
)
def check_resize_batch(resize_batch) -> str:
    """Within one grey level of PIL's bilinear Resize on 200 and on 7 test images; float32 in, float32 out."""
    from fmnist_lab import data

    tk.expect_function(resize_batch, "a function resize_batch(images, size)")
    images, _ = _test_images(200)
    tolerance = 1 / 255 + 1e-6  # one grey level
    first = "200 images"
    for batch, size, where in ((images, 16, first), (images, 20, first), (images[:7], 16, "7 images")):
        expected = torch.tensor(data.resize_images(_as_uint8(batch), size)).float().div(255).unsqueeze(1)
        what = f"resize_batch({len(batch)} test images, {size})"
        with tk.other_input(first, where):
            got = tk.call_unmodified(resize_batch, batch, size, names=("images",))
        got = tk.expect_tensor(got, what, (len(batch), 1, size, size))
        if not got.is_floating_point():
            raise Mismatch(f"expected {what} to hold floats in [0, 1], got dtype {got.dtype}")
        tk.expect_dtype_kept(got, batch, what)
        tk.expect_finite(got, what)
        if not (difference := tk.max_difference(got, expected)) <= tolerance:
            raise Mismatch(
                f"{what} differs from PIL's Resize(({size}, {size})) by up to "
                f"{difference * 255:.3g} grey levels (tolerance: 1 grey level = 1/255)"
            )
    tk.expect_device_kept(resize_batch, images[:7], 16, what="resize_batch")
    return "(200, 1, 16, 16) and (200, 1, 20, 20) within one grey level (1/255) of PIL's bilinear Resize"
