"""Checks of lesson 8 (deployment): ONNX export, softmax in NumPy, ONNX Runtime predictions, preprocessing.

Beyond the values: no argument may be changed in place (the model's weights and buffers included); one
image and odd-sized batches are tried (8.1: 1, 3 and 64; 8.2: one row; 8.3: 300 images in chunks of 128
and 7 in chunks of 3, each chunk run at most `batch_size` images); NaN and infinity get their own
message; a layer or a class passed instead of the function is named. Decided (the contested cases):

- 8.2 may return float64 probabilities (NumPy's default; the values are the same). 8.3 may return
  tensors or arrays. 8.4 must return a float32 NumPy array: it is fed to ONNX Runtime, which refuses
  float64 and tensors. 8.3 must feed ONNX Runtime float32, for the same reason;
- 8.2 is written in NumPy, as the lesson says ("without PyTorch you write it in NumPy"): `torch.softmax`,
  `Tensor.softmax`, `F.softmax` and `scipy.special.softmax` are ruled out. The package's own answers
  (`fmnist_lab.export.export_to_onnx`, `softmax_numpy`, `onnx_logits`, `onnx_predict`,
  `preprocess_drawing`) are ruled out everywhere; its helpers `pad_to_square` and `resize_image`, which
  the lesson hands you, are allowed. A name bound to a ruled-out function before the check runs is not
  seen (the limit of `forbid_call`);
- 8.1 may leave the model in eval mode (the lesson's answer calls `model.eval()`); the device is not
  checked (an exported file and NumPy arrays have none).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import scipy.special
import torch
from torch import Tensor
from torch.nn import functional as F

from fmnist_lab import data, export
from fmnist_lab.checks import Mismatch, exercise
from fmnist_lab.checks import toolkit as tk

EXPORT_TOLERANCE = 1e-4  # ONNX Runtime's logits against PyTorch's (float32, different kernels)
PROBABILITY_TOLERANCE = 1e-5
PIXEL_TOLERANCE = 1e-4
SEED = 8  # the reference model of every check: random_cnn_batch(SEED), a CNNBatch in eval mode
NUMPY_ONLY = (
    "write the softmax with NumPy (np.exp, np.sum), as the lesson says: the deployed model has no PyTorch, so "
    "torch.softmax, F.softmax and scipy.special.softmax (and the package's export.softmax_numpy) are ruled out"
)


@exercise(
    "8.1",
    "export_to_onnx",
    "torch.onnx.export(model, (example,), path, dynamo=True, "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)) with an example batch of 2 images",
)
def check_export_to_onnx(export_to_onnx) -> str:
    import onnx
    import onnxruntime

    tk.expect_plain_function(export_to_onnx, "a function export_to_onnx(model, path)")
    reference, given = tk.random_cnn_batch(SEED), tk.random_cnn_batch(SEED)
    with tempfile.TemporaryDirectory(prefix="fmnist_lab_check_8_1_") as folder:
        path = Path(folder) / "model.onnx"
        with tk.without_package(export, "export_to_onnx"), tk.watch_module(given, "model", "export the model as it is"):
            export_to_onnx(given, path)
        if not path.is_file():
            raise Mismatch(
                f"expected export_to_onnx(model, path) to write a file at path, found none "
                f"(in the folder: {sorted(p.name for p in Path(folder).iterdir()) or 'nothing'})"
            )
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # noqa: BLE001 - any checker failure is a wrong answer
            raise Mismatch(f"expected a file that passes onnx.checker, got {tk.first_line(exc, 160)}") from None
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise Mismatch(f"expected ONNX Runtime to load the file, got {tk.first_line(exc, 160)}") from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise Mismatch(f"expected a model with one input (the images), got {len(inputs)}")
        name, declared = inputs[0].name, inputs[0].shape
        for batch, seed in ((1, 1), (3, 2), (64, 3)):
            images = torch.rand(batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
            try:
                got = session.run(None, {name: images.numpy()})[0]
            except Exception as exc:  # noqa: BLE001
                raise Mismatch(
                    f"expected the file to accept a batch of {batch} images, but its input is "
                    f"declared {declared} and ONNX Runtime refused ({tk.first_line(exc, 160)}): "
                    "make the batch dimension dynamic"
                ) from None
            expected = reference(images).detach().numpy()
            tk.expect_finite(got, f"the file's logits for a batch of {batch}")
            if got.shape != expected.shape:
                raise Mismatch(f"expected logits of shape {expected.shape} for a batch of {batch}, got {got.shape}")
            if tk.max_difference(got, torch.softmax(torch.from_numpy(expected), 1)) <= EXPORT_TOLERANCE:
                raise Mismatch(
                    "the file outputs probabilities, not logits: export the model itself (the softmax is "
                    "applied after ONNX Runtime, in 8.2)"
                )
            if not (gap := tk.max_difference(got, expected)) <= EXPORT_TOLERANCE:
                raise Mismatch(
                    f"on a batch of {batch} images the file's logits differ from PyTorch's in eval "
                    f"mode by up to {gap:.3g} (tolerance {EXPORT_TOLERANCE:g})"
                )
    return "the file passes onnx.checker; batches of 1, 3 and 64 give PyTorch's logits within 1e-4"


@exercise(
    "8.2",
    "softmax_numpy",
    "subtract each row's maximum, np.exp, then divide by the sum over the last axis (keepdims=True)",
)
@np.errstate(all="ignore")  # the learner's overflow (on logits of ±1000) is reported, not warned about
def check_softmax_numpy(softmax_numpy) -> str:
    tk.expect_plain_function(softmax_numpy, "a function softmax_numpy(logits)")
    logits = (torch.randn(5, 10, generator=torch.Generator().manual_seed(82)) * 3).numpy()
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    got = _numpy_softmax(softmax_numpy, logits, "softmax_numpy(logits)")
    if got.shape != expected.shape:
        raise Mismatch(f"expected probabilities of shape {expected.shape}, got {got.shape}")
    sums = got.sum(axis=1)
    if not np.allclose(sums, 1, atol=1e-6):
        raise Mismatch(
            f"expected every row to sum to 1, got row sums {np.round(sums, 3).tolist()}: "
            "normalise over the last axis, one image at a time"
        )
    if not (gap := tk.max_difference(got, expected)) <= 1e-6:
        raise Mismatch(f"your probabilities differ from torch.softmax by up to {gap:.3g} (tolerance 1e-6)")
    one = _numpy_softmax(softmax_numpy, logits[:1], "softmax_numpy(logits of one image)")
    if one.shape != (1, 10):
        raise Mismatch(
            f"for the logits of one image, shape (1, 10), expected probabilities of shape (1, 10), got "
            f"{one.shape}: keep the batch axis (no np.squeeze)"
        )
    large = np.array([[1000.0, 999.0] + [0.0] * 8, [-1000.0] * 9 + [-998.0]], dtype=np.float32)
    expected_large = torch.softmax(torch.from_numpy(large).double(), dim=1).numpy()
    got_large = tk.as_array(softmax_numpy(large.copy()), "softmax_numpy(large logits)", lists=False)
    if got_large.shape != large.shape or not np.isfinite(got_large).all():
        raise Mismatch(
            "on logits of ±1000 your probabilities hold nan or inf (np.exp overflows): "
            "subtract each row's maximum first"
        )
    if not tk.max_difference(got_large, expected_large) <= 1e-6:
        raise Mismatch(
            "on logits of ±1000 your probabilities differ from torch.softmax "
            f"(got {np.round(got_large[0, :2], 4).tolist()} for [1000, 999, 0, …], "
            f"expected {np.round(expected_large[0, :2], 4).tolist()})"
        )
    return "(5, 10) probabilities equal torch.softmax within 1e-6; logits of ±1000 stay finite"


def _numpy_softmax(softmax_numpy, logits: np.ndarray, what: str) -> np.ndarray:
    """The learner's probabilities: NumPy only, `logits` unchanged, a finite NumPy array (as float64)."""
    torch_calls = ((torch, "softmax"), (Tensor, "softmax"), (F, "softmax"), (scipy.special, "softmax"))
    with tk.without_package(export, "softmax_numpy", also=torch_calls, why=NUMPY_ONLY):
        got = tk.call_unmodified(softmax_numpy, logits, names=("logits",))
    if not isinstance(got, np.ndarray):  # the point: no PyTorch where the model is deployed
        raise Mismatch(
            f"expected {what} to return a NumPy array, got {type(got).__name__}: use np.exp and np.sum, not torch"
        )
    tk.expect_finite(got, what)
    return tk.as_array(got, what)


@functools.lru_cache(maxsize=1)
def _reference_session():
    """ONNX Runtime on the reference model, exported once per process by the package."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist_lab_check_8_3_"))
    return export.onnx_session(export.export_to_onnx(tk.random_cnn_batch(SEED), folder / "reference.onnx"))


class RecordingSession:
    """The reference ONNX Runtime session, recording each batch the learner runs and refusing a non-float32 one."""

    def __init__(self, session) -> None:
        self.session, self.sizes = session, []

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def run(self, output_names, feeds, *args, **kwargs):
        """`session.run`, after noting the batch size of every input (a float64 feed is named, not crashed on)."""
        for value in dict(feeds).values():
            dtype = getattr(value, "dtype", type(value).__name__)
            if not isinstance(value, np.ndarray) or value.dtype != np.float32:
                raise Mismatch(
                    f"you fed ONNX Runtime images as {type(value).__name__} of {dtype}; the model takes a float32 "
                    "NumPy array: images.numpy().astype(np.float32)"
                )
            self.sizes.append(len(value))
        return self.session.run(output_names, feeds, *args, **kwargs)


def _predict(onnx_predict, images: Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The learner's (predicted, probabilities) as arrays, each chunk run at most `batch_size` images."""
    what = f"onnx_predict(session, {len(images)} images, batch_size={batch_size})"
    session = RecordingSession(_reference_session())
    with tk.without_package(export, "onnx_predict", "onnx_logits"):
        answer = tk.call_unmodified(onnx_predict, session, images, names=("session", "images"), batch_size=batch_size)
    answer = tk.as_pair(answer, what, "a pair (predicted, probabilities)")
    predicted, probabilities = (
        tk.as_array(a, name, lists=False) for a, name in zip(answer, ("predicted", "probabilities"))
    )
    if session.sizes and max(session.sizes) > batch_size:
        raise Mismatch(
            f"{what} ran ONNX Runtime on {max(session.sizes)} images at once: run it on chunks of at most "
            f"batch_size images, images[i:i + batch_size]"
        )
    tk.expect_finite(probabilities, f"the probabilities of {what}")
    return predicted, probabilities


@exercise(
    "8.3",
    "onnx_predict",
    "loop over chunks images[i:i + batch_size], session.run on each as float32 NumPy, "
    "np.concatenate the logits, softmax them, then argmax over axis 1",
)
def check_onnx_predict(onnx_predict) -> str:
    tk.expect_plain_function(onnx_predict, "a function onnx_predict(session, images, batch_size)")
    all_images = data.load("test", 16)[0]
    model = tk.random_cnn_batch(SEED)
    for images, batch_size, chunks in (
        (all_images[:300], 128, "128 + 128 + 44"),
        (all_images[300:307], 3, "3 + 3 + 1"),
    ):
        expected = torch.softmax(model(images).detach().double(), dim=1).numpy()
        predicted, probabilities = _predict(onnx_predict, images.clone(), batch_size)
        n = len(images)
        if probabilities.shape != expected.shape:
            raise Mismatch(
                f"expected probabilities of shape {expected.shape} for {n} images in batches of {batch_size} "
                f"({chunks}), got {probabilities.shape}"
            )
        if predicted.shape != (n,):
            raise Mismatch(f"expected {n} predicted classes, shape ({n},), got {predicted.shape}")
        if not np.allclose(sums := probabilities.sum(axis=1), 1, atol=1e-5):
            raise Mismatch(
                f"expected each row of probabilities to sum to 1, got sums from {sums.min():.3g} to {sums.max():.3g}: "
                "apply a softmax to the logits"
            )
        if not (gap := tk.max_difference(probabilities, expected)) <= PROBABILITY_TOLERANCE:
            raise Mismatch(
                f"your probabilities differ from PyTorch's by up to {gap:.3g} "
                f"(tolerance {PROBABILITY_TOLERANCE:g}): are the chunks kept in order?"
            )
        wrong = int((predicted != expected.argmax(axis=1)).sum())
        if wrong:
            raise Mismatch(f"expected the predicted class to be each row's most probable one, {wrong} of {n} differ")
    return "300 images in batches of 128: predictions equal PyTorch's, probabilities within 1e-5, rows sum to 1"


def _pictures() -> list[tuple[str, np.ndarray, str]]:
    """Four RGBA pictures with what each tests: (description, rgba, hint on a mismatch)."""
    paper = np.full((280, 280, 4), 255, dtype=np.uint8)  # a dark T-shirt-like outline on white paper
    outline = ((40, 60, 40, 240), (40, 120, 40, 70), (40, 120, 210, 240))  # (top, bottom, left, right): arms
    outline += ((60, 250, 80, 100), (60, 250, 180, 200), (230, 250, 80, 200))  # the two sides and the hem
    for top, bottom, left, right in outline:
        paper[top:bottom, left:right, :3] = 20
    garment = (data.load("test", 28)[0][7, 0].numpy() * 255).round().astype(np.uint8)
    dark = np.dstack([garment, garment, garment, np.full_like(garment, 255)])  # Fashion-MNIST as RGBA
    transparent = np.zeros((120, 120, 4), dtype=np.uint8)  # black strokes on a transparent canvas
    transparent[20:100, 30:50, 3] = transparent[20:100, 70:90, 3] = transparent[20:35, 30:90, 3] = 255  # Π
    colour = np.full((60, 40, 4), (200, 225, 255, 255), dtype=np.uint8)  # a red garment on light blue, taller than wide
    colour[10:50, 8:32] = (180, 30, 40, 255)
    return [
        (
            "a dark drawing on white paper (280×280)",
            paper,
            "the border is light, so the image must be inverted (1 − gray)",
        ),
        ("a Fashion-MNIST image, light on black (28×28)", dark, "the border is dark: do not invert it"),
        (
            "black strokes on a transparent canvas (120×120)",
            transparent,
            "a transparent pixel is white paper: gray = alpha·gray + (1 − alpha), alpha = A / 255",
        ),
        (
            "a red garment on light blue (60×40)",
            colour,
            "gray = 0.299 R + 0.587 G + 0.114 B on [0, 1] values; pad to a square before resizing",
        ),
    ]


@exercise(
    "8.4",
    "preprocess_drawing",
    "gray = alpha·(0.299R + 0.587G + 0.114B)/255 + (1 − alpha); invert if the border's mean > 0.5; "
    "pad_to_square, resize_image to 28 then 16; shape (1, 1, 16, 16)",
)
def check_preprocess_drawing(preprocess_drawing) -> str:
    tk.expect_plain_function(preprocess_drawing, "a function preprocess_drawing(rgba)")
    dtypes = []
    for description, rgba, hint in _pictures():
        expected = export.preprocess_drawing(rgba, 16).astype(np.float64)
        what = f"preprocess_drawing({description})"
        with tk.without_package(export, "preprocess_drawing"):
            answer = tk.call_unmodified(preprocess_drawing, rgba, names=("rgba",))
        if not isinstance(answer, np.ndarray):
            raise Mismatch(
                f"expected {what} to return a NumPy array, got {type(answer).__name__}: ONNX Runtime takes NumPy "
                "arrays (.numpy(), or stay in NumPy)"
            )
        got, dtypes = tk.as_array(answer, what, lists=False), [*dtypes, answer.dtype]
        tk.expect_finite(got, what)
        if got.shape != expected.shape:
            raise Mismatch(f"on {description} expected an input of shape {expected.shape}, got {got.shape}")
        if not (gap := tk.max_difference(got, expected)) <= PIXEL_TOLERANCE:
            raise Mismatch(
                f"on {description} your pixels differ from the reference by up to {gap:.3g} "
                f"(tolerance {PIXEL_TOLERANCE:g}): "
                + ("the pixels go up to 255: divide the bytes by 255 first" if got.max() > 2 else hint)
            )
    if (wrong := {str(dtype) for dtype in dtypes} - {"float32"}) != set():
        raise Mismatch(
            f"your pixels are right but {', '.join(sorted(wrong))}: ONNX Runtime refuses anything but float32 for "
            "this model, so return .astype(np.float32)"
        )
    return (
        "4 pictures (dark on white, light on black, transparent, coloured 60×40) give the reference "
        "(1, 1, 16, 16) input within 1e-4"
    )
