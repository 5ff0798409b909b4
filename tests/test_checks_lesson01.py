"""The checks of lesson 01: the reference and differently written answers pass, plausible mistakes fail and say why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_cases import fails, passes
from PIL import Image

# 1.1 to_batch ---------------------------------------------------------------------------------------


def to_batch(images_uint8):
    return torch.tensor(images_uint8, dtype=torch.float32).div(255).unsqueeze(1)


def to_batch_numpy(images_uint8):  # written differently: NumPy first, reshape instead of unsqueeze
    scaled = np.asarray(images_uint8, dtype=np.float64) / 255.0
    return torch.from_numpy(scaled.reshape(len(scaled), 1, *scaled.shape[1:]).astype(np.float32))


def to_batch_from_numpy(images_uint8):  # written differently: shares memory, then a float copy, [:, None]
    return torch.from_numpy(images_uint8)[:, None].to(torch.float32) / 255


def to_batch_in_place(images_uint8):
    images_uint8[images_uint8 > 250] = 255  # "clean up" the near-white pixels of the caller's array
    return to_batch(images_uint8)


@pytest.mark.parametrize("answer", [to_batch, to_batch_numpy, to_batch_from_numpy])
def test_1_1_correct_answers_pass(answer):
    message = passes("1.1", answer).message
    assert "(N, 1, 28, 28) float32" in message and "within 1e-6" in message, message


MISTAKES_1_1 = [
    (
        lambda a: torch.tensor(a, dtype=torch.float32).div(255),
        "of shape (1000, 1, 28, 28), got (1000, 28, 28): add the channel axis with unsqueeze(1)",
    ),
    (lambda a: torch.tensor(a, dtype=torch.float32).div(255).unsqueeze(0), "unsqueeze(1), not unsqueeze(0)"),
    (lambda a: torch.tensor(a, dtype=torch.float32).div(255).unsqueeze(-1), "got (1000, 28, 28, 1)"),
    (lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1), "differs from the reference by up to 254"),
    (lambda a: torch.tensor(a, dtype=torch.float32).div(256).unsqueeze(1), "you divided by 256"),
    (lambda a: torch.tensor(a, dtype=torch.float64).div(255).unsqueeze(1), "dtype torch.float32, got torch.float64"),
    (lambda a: torch.tensor(a).unsqueeze(1) // 255, "dtype torch.float32, got torch.uint8"),
    (lambda a: (a / 255.0)[:, None], "to be a torch.Tensor, got ndarray"),
    (
        lambda a: torch.tensor(a, dtype=torch.float32).div(255).reshape(-1, 1, 28, 28),
        "works on 1,000 test images (1000, 28, 28) but fails on a (3, 5, 7) array",
    ),
    (to_batch_in_place, "changed its input images_uint8 in place"),
    (to_batch(np.zeros((2, 28, 28), dtype=np.uint8)), "got Tensor, a result: pass the function or class itself"),
]


@pytest.mark.parametrize("wrong,fragment", MISTAKES_1_1)
def test_1_1_mistakes_fail_saying_what_differs(wrong, fragment):
    fails("1.1", wrong, fragment=fragment)


# 1.2 class_counts -----------------------------------------------------------------------------------


def class_counts(labels):
    return torch.bincount(labels, minlength=10)


def class_counts_loop(labels):  # written differently: a comparison per class, float result
    return torch.stack([(labels == c).sum() for c in range(10)]).float()


def class_counts_one_hot(labels):  # written differently: one-hot rows added up
    return F.one_hot(labels, num_classes=10).sum(dim=0)


@pytest.mark.parametrize("answer", [class_counts, class_counts_loop, class_counts_one_hot])
def test_1_2_correct_answers_pass(answer):
    passes("1.2", answer, fragment="10,000 test labels (1,000 per class)")


def _sorted_in_place(labels):
    labels.copy_(labels.sort().values)  # sorted to count runs, in the caller's tensor
    return torch.bincount(labels, minlength=10)


MISTAKES_1_2 = [
    (lambda labels: torch.bincount(labels), "of shape (10,), got (9,): a class that never appears needs its 0"),
    (
        lambda labels: torch.tensor([(labels == c).sum().item() for c in range(1, 11)]),
        "expected class_counts of 37 labels",
    ),
    (lambda labels: torch.bincount(labels, minlength=10).tolist(), "to be a torch.Tensor, got list"),
    (lambda labels: torch.unique(labels, return_counts=True), "torch.unique(..., return_counts=True) returns"),
    (lambda labels: torch.unique(labels, return_counts=True)[1], "got (9,)"),
    (lambda labels: torch.bincount(labels, minlength=10) / len(labels), "to be counts, got fractions"),
    (
        lambda labels: torch.histc(labels.float(), bins=10),
        "expected class_counts of 37 labels in which class 9 never appears = [5, 1, 7, 2, 4, 3, 8, 6, 1, 0]",
    ),
    (_sorted_in_place, "changed its input labels in place"),
    (
        lambda labels: torch.bincount(labels[1:], minlength=10),
        "never appears = [5, 1, 7, 2, 4, 3, 8, 6, 1, 0], got [5, 1, 7, 2, 4, 2",
    ),
    (
        lambda labels: torch.bincount(labels.squeeze(), minlength=10) if len(labels) > 1 else labels.squeeze(),
        "of a single label, tensor([3]) of shape (10,), got ()",
    ),
]


@pytest.mark.parametrize("wrong,fragment", MISTAKES_1_2)
def test_1_2_mistakes_fail_saying_what_differs(wrong, fragment):
    fails("1.2", wrong, fragment=fragment)


# 1.3 pixel_mean_std ---------------------------------------------------------------------------------


def pixel_mean_std(images):
    return images.mean().item(), images.std().item()


def pixel_mean_std_by_hand(images):  # written differently: float64 sums, biased variance, a tensor pair
    x = images.double().flatten()
    mean = x.sum() / x.numel()
    return torch.stack([mean, ((x - mean) ** 2).mean().sqrt()])


def pixel_mean_std_numpy(images):  # written differently: NumPy, a list
    pixels = images.numpy()
    return [np.mean(pixels), np.std(pixels, ddof=1)]


@pytest.mark.parametrize("answer", [pixel_mean_std, pixel_mean_std_by_hand, pixel_mean_std_numpy])
def test_1_3_correct_answers_pass(answer):
    message = passes("1.3", answer).message
    assert "test set mean 0.2868, std 0.3524" in message and "within 0.0001" in message, message


def _centred_in_place(images):
    images -= images.mean()
    return 0.5 + images.mean(), images.std()


MISTAKES_1_3 = [
    (lambda x: (x.mean(dim=(1, 2, 3)).mean(), x.std(dim=(1, 2, 3)).mean()), "expected the pixel std of the test set"),
    (lambda x: ((x * 255).mean(), (x * 255).std()), "expected the mean of 200 uniform random images = 0.5"),
    (lambda x: (x.mean(), x.var()), "expected the std of 200 uniform random images"),
    (lambda x: x.mean(), "to return two numbers (mean, std), got Tensor"),
    (lambda x: (x.mean(), x.std(), x.max()), "got tuple of length 3"),
    (lambda x: (x.mean(), x.std(dim=0).mean()), "expected the std of 200 uniform random images"),
    (lambda x: (x[0].mean(), x[0].std()), "expected the mean of 200 uniform random images"),
    (lambda x: (x.median(), x.std()), "expected the mean of 200 uniform random images"),
    (lambda x: (x.mean(dim=0), x.std(dim=0)), "to be one number, got a tensor of shape (1, 28, 28)"),
    (lambda x: (x.sum() / (200 * 28 * 28), x.std()), "expected the mean of 37 random images in [0, 0.5] = 0.25"),
    (_centred_in_place, "changed its input images in place"),
]


@pytest.mark.parametrize("wrong,fragment", MISTAKES_1_3)
def test_1_3_mistakes_fail_saying_what_differs(wrong, fragment):
    fails("1.3", wrong, fragment=fragment)


# 1.4 mean_image_per_class ---------------------------------------------------------------------------


def mean_image_per_class(images, labels):
    return torch.stack([images[labels == c].mean(dim=0)[0] for c in range(10)])


def mean_image_per_class_onehot(images, labels):  # written differently: one matrix product
    one_hot = F.one_hot(labels, 10).T.float()
    flat = images.flatten(1)
    means = one_hot @ flat / one_hot.sum(dim=1, keepdim=True)
    return means.reshape(10, *images.shape[-2:])


def mean_image_per_class_index_add(images, labels):  # written differently: index_add_ into a new tensor, float64
    sums = images.new_zeros(10, *images.shape[-2:], dtype=torch.float64)
    sums.index_add_(0, labels, images[:, 0].double())
    return sums / torch.bincount(labels, minlength=10).view(10, 1, 1)


def _new_cpu_tensor(images, labels):
    sums = torch.zeros(10, *images.shape[-2:]).index_add_(0, labels, images[:, 0])  # no device=images.device
    return sums / torch.bincount(labels, minlength=10).view(10, 1, 1)


@pytest.mark.parametrize("answer", [mean_image_per_class, mean_image_per_class_onehot, mean_image_per_class_index_add])
def test_1_4_correct_answers_pass(answer):
    message = passes("1.4", answer).message
    assert "(10, 28, 28)" in message and "within 1e-5" in message, message


def _squeezed_in_place(images, labels):
    images.squeeze_(1)
    return torch.stack([images[labels == c].mean(dim=0) for c in range(10)])


MISTAKES_1_4 = [
    (lambda x, y: torch.stack([x[y == c].mean(dim=0) for c in range(10)]), "of shape (10, 6, 8), got (10, 1, 6, 8)"),
    (lambda x, y: torch.stack([x[y == c, 0].sum(dim=0) for c in range(10)]), "you added the images up"),
    (
        lambda x, y: torch.stack([x[y == c, 0].sum(dim=0) / len(x) for c in range(10)]),
        "you divided by the number of all images",
    ),
    (lambda x, y: x[:, 0].mean(dim=0).expand(10, -1, -1), "differs from the reference by up to"),
    (lambda x, y: torch.stack([x[y == c, 0].mean(dim=0) for c in range(1, 11)]), "holds 48 NaN values (of 480)"),
    (lambda x, y: torch.stack([x[y == c, 0].median(dim=0).values for c in range(10)]), "differs from the reference"),
    (
        lambda x, y: torch.stack([x[y == c].squeeze().mean(dim=0) for c in range(10)]),
        "but fails on 13 images (1, 5, 7)",
    ),
    (lambda x, y: torch.stack([x[y == c, 0].mean(dim=0) for c in range(10)]).tolist(), "torch.Tensor, got list"),
    (_squeezed_in_place, "changed its input images in place"),
    (_new_cpu_tensor, "mean_image_per_class fails for inputs on another device"),
    (lambda x, y: torch.stack([x[y == c, 0].mean(dim=0) for c in range(10)]).flatten(1), "got (10, 48)"),
]


@pytest.mark.parametrize("wrong,fragment", MISTAKES_1_4)
def test_1_4_mistakes_fail_saying_what_differs(wrong, fragment):
    fails("1.4", wrong, fragment=fragment)


# 1.5 resize_batch -----------------------------------------------------------------------------------


def resize_batch(images, size):
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def resize_batch_pil(images, size):  # written differently: PIL image by image, as the original did
    out = []
    for image in images:
        grey = Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy(), mode="L")
        out.append(torch.tensor(np.array(grey.resize((size, size), Image.BILINEAR)), dtype=torch.float32))
    return torch.stack(out).div(255).unsqueeze(1)


def resize_batch_int_size(images, size):  # written differently: one int for both sides, torchvision
    from torchvision.transforms.functional import resize

    return resize(images, [size, size], antialias=True)


@pytest.mark.parametrize("answer", [resize_batch, resize_batch_pil, resize_batch_int_size])
def test_1_5_correct_answers_pass(answer):
    passes("1.5", answer, fragment="within one grey level (1/255)")


def _scaled_in_place(images, size):
    images.mul_(255)
    return resize_batch(images, size) / 255


MISTAKES_1_5 = [
    (lambda x, s: F.interpolate(x, size=(s, s), mode="bilinear"), "grey levels (tolerance: 1 grey level"),
    (lambda x, s: F.interpolate(x, size=(s, s), mode="nearest"), "differs from PIL's Resize((16, 16))"),
    (lambda x, s: F.interpolate(x, size=(s, s), mode="bicubic", antialias=True), "differs from PIL's Resize((16, 16))"),
    (lambda x, s: F.interpolate(x, size=(s, s), mode="area"), "differs from PIL's Resize((16, 16))"),
    (
        lambda x, s: F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True),
        "of shape (200, 1, 20, 20), got (200, 1, 16, 16)",
    ),
    (lambda x, s: (resize_batch(x, s) * 255).round().to(torch.uint8), "floats in [0, 1], got dtype torch.uint8"),
    (lambda x, s: resize_batch(x, s).double(), "of dtype torch.float32 like its input, got torch.float64"),
    (lambda x, s: resize_batch(x, s)[:, 0], "of shape (200, 1, 16, 16), got (200, 16, 16)"),
    (
        lambda x, s: torch.stack([resize_batch(x[i : i + 1], s)[0] for i in range(200)]),
        "works on 200 images but fails on 7 images",
    ),
    (_scaled_in_place, "changed its input images in place"),
    (lambda x, s: resize_batch(x, s).log(), "holds"),
]


@pytest.mark.parametrize("wrong,fragment", MISTAKES_1_5)
def test_1_5_mistakes_fail_saying_what_differs(wrong, fragment):
    fails("1.5", wrong, fragment=fragment)
