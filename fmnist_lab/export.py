"""Deployment: export a trained model to ONNX, run it with ONNX Runtime, and prepare drawings for it.

`export_to_onnx` writes one self-contained `.onnx` file whose batch dimension is dynamic, so the same
file classifies one image or 256. `onnx_session` and `onnx_predict` run it with ONNX Runtime on the
CPU, without PyTorch. `preprocess_drawing` turns any RGBA picture (an upload, a canvas drawing) into
the model's input; the live demo (`docs/demo/demo.js`) implements the same steps in JavaScript, and
the browser test checks that both give the same pixels.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fmnist_lab.data import CLASS_NAMES
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.files import record_ours, sigterm_interrupts

if TYPE_CHECKING:  # imported lazily: onnx and onnxruntime are only needed for deployment
    import onnx
    import onnxruntime

INPUT_NAME, OUTPUT_NAME = "image", "logits"
SOURCE_SIZE = 28  # Fashion-MNIST's own size: drawings are brought to 28×28 first, like the originals
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, the weights of PIL's convert("L")
LIGHT_BACKGROUND = 0.5  # a border brighter than this on average means dark-on-light: invert


# --- Export ----------------------------------------------------------------------------------------


def _example_batch(model: nn.Module, image_size: int | None) -> torch.Tensor:
    """A seeded batch of two images at the model's size (two, so the batch size is not specialised to 1)."""
    size = image_size or getattr(model, "image_size", 16)
    return torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))


def export_to_onnx(model: nn.Module, path: str | Path, image_size: int | None = None) -> Path:
    """Write `model` (in eval mode) as one ONNX file with a dynamic batch, checked by onnx.checker."""
    path = Path(path)
    if path.is_dir():
        raise FmnistLabError(f"{path} is a folder; give a file name such as {path / 'model.onnx'}")
    # A CPU copy in eval mode and the default memory layout: the caller's model is left as it was.
    cpu_model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FmnistLabError(f"{path}: cannot write the ONNX file ({exc.strerror or exc})") from None
    # Written under a temporary name in the same folder, then swapped in: a failure or Ctrl-C leaves no
    # half-written file, and an earlier file at `path` stays as it was until the new one is complete.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp.onnx")
    with sigterm_interrupts():
        try:
            _write_onnx(cpu_model, temporary, image_size)
            check_onnx(temporary)
            os.replace(temporary, path)
            record_ours(path)
        except OSError as exc:
            raise FmnistLabError(f"{path}: cannot write the ONNX file ({exc.strerror or exc})") from None
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()
    return path


def _write_onnx(cpu_model: nn.Module, path: Path, image_size: int | None) -> None:
    """Export `cpu_model` to `path` and record the classes, image size and input/output in its metadata."""
    torch.onnx.export(
        cpu_model,
        (_example_batch(cpu_model, image_size),),
        str(path),
        dynamo=True,
        verbose=False,
        external_data=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    import onnx

    proto = onnx.load(str(path))
    size = image_size or getattr(cpu_model, "image_size", 16)
    metadata = {
        "classes": json.dumps(CLASS_NAMES),
        "image_size": str(size),
        "input": f"{INPUT_NAME}: float32 (batch, 1, {size}, {size}) in [0, 1], light garment on dark",
        "output": f"{OUTPUT_NAME}: float32 (batch, {len(CLASS_NAMES)}); softmax gives probabilities",
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file and run onnx.checker on it, so a broken file fails here and not in a browser."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FmnistLabError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors alike become one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FmnistLabError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {first})") from None
    return proto


def describe_onnx(proto: onnx.ModelProto) -> dict:
    """Opset, operators and input/output shapes of an ONNX model (symbolic dimensions by name)."""

    def shape(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "operators": [node.op_type for node in proto.graph.node],
        "inputs": {v.name: shape(v) for v in proto.graph.input},
        "outputs": {v.name: shape(v) for v in proto.graph.output},
        "metadata": {p.key: p.value for p in proto.metadata_props},
    }


# --- Running it with ONNX Runtime ------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on the CPU (`threads` intra-op threads; default: ONNX Runtime's choice)."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise FmnistLabError(f"{path}: no such ONNX file; write one with `fmnist-lab export WEIGHTS`")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any load failure is one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FmnistLabError(f"{path}: ONNX Runtime cannot load it ({first})") from None


def softmax_numpy(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis, stable for large logits (NumPy, no PyTorch)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _as_numpy_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images as a contiguous float32 NumPy array (N, 1, S, S), the dtype ONNX Runtime expects."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1:
        raise FmnistLabError(f"expected images shaped (N, 1, H, W), got {tuple(images.shape)}")
    return images


def onnx_logits(
    session: onnxruntime.InferenceSession, images: torch.Tensor | np.ndarray, batch_size: int = 1000
) -> np.ndarray:
    """The ONNX model's logits for every image, computed in chunks of `batch_size`."""
    images = _as_numpy_images(images)
    name = session.get_inputs()[0].name
    expected = session.get_inputs()[0].shape[-2:]
    if all(isinstance(d, int) for d in expected) and list(images.shape[-2:]) != list(expected):
        raise FmnistLabError(
            f"the ONNX model expects {expected[0]}×{expected[1]} images, got {images.shape[-2]}×{images.shape[-1]}"
        )
    chunks = [session.run(None, {name: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, len(CLASS_NAMES)), np.float32)


def onnx_predict(
    session: onnxruntime.InferenceSession, images: torch.Tensor | np.ndarray, batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class ids and the ten probabilities per image, from ONNX Runtime alone."""
    probabilities = softmax_numpy(onnx_logits(session, images, batch_size))
    return probabilities.argmax(axis=1), probabilities


def compare_with_pytorch(model: nn.Module, session: onnxruntime.InferenceSession, images: torch.Tensor) -> dict:
    """How closely ONNX Runtime reproduces PyTorch: equal predictions and the largest probability gap."""
    from fmnist_lab.evaluate import predict

    torch_predicted, torch_probabilities = predict(model, images)
    onnx_predicted, onnx_probabilities = onnx_predict(session, images)
    gap = np.abs(onnx_probabilities - torch_probabilities.double().numpy())
    return {
        "images": len(images),
        "equal_predictions": int((onnx_predicted == torch_predicted.numpy()).sum()),
        "max_abs_probability_difference": float(gap.max()),
        "mean_abs_probability_difference": float(gap.mean()),
    }


# --- Latency ---------------------------------------------------------------------------------------


def measure_latency(run: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds per call of `run` after `warmup` calls (the median resists a busy machine)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency_table(
    model: nn.Module,
    session: onnxruntime.InferenceSession,
    images: torch.Tensor,
    batch_sizes: tuple[int, ...] = (1, 256),
    repeats: int = 20,
) -> list[dict]:
    """Milliseconds per batch for PyTorch eager and ONNX Runtime on the CPU, one row per batch size."""
    cpu_model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    name = session.get_inputs()[0].name
    rows = []
    for batch in batch_sizes:
        x = images[:batch].detach().cpu().contiguous()
        x_numpy = x.numpy()

        def torch_run() -> object:
            with torch.inference_mode():
                return cpu_model(x)

        torch_seconds = measure_latency(torch_run, repeats)
        onnx_seconds = measure_latency(lambda: session.run(None, {name: x_numpy}), repeats)
        rows.append(
            {
                "batch": batch,
                "pytorch_ms": 1000 * torch_seconds,
                "onnxruntime_ms": 1000 * onnx_seconds,
                "speedup": torch_seconds / onnx_seconds,
            }
        )
    return rows


# --- Preprocessing shared with the live demo --------------------------------------------------------


def to_grayscale(rgba: np.ndarray) -> np.ndarray:
    """Gray levels in [0, 1] from (H, W, 4) RGBA, (H, W, 3) RGB or (H, W) gray bytes; transparency over white."""
    rgba = np.asarray(rgba)
    if rgba.ndim == 2:
        return rgba.astype(np.float64) / 255
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise FmnistLabError(f"expected an image shaped (H, W, 3) or (H, W, 4), got {rgba.shape}")
    channels = rgba.astype(np.float64) / 255
    gray = channels[..., :3] @ np.array(GRAY_WEIGHTS)
    if rgba.shape[2] == 4:
        alpha = channels[..., 3]
        gray = alpha * gray + (1 - alpha)  # over a white sheet: a transparent pixel is paper
    return gray


def is_light_background(gray: np.ndarray) -> bool:
    """True when the one-pixel border is light on average: a drawing on paper, not Fashion-MNIST's black."""
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return bool(border.mean() > LIGHT_BACKGROUND)


def pad_to_square(gray: np.ndarray) -> np.ndarray:
    """Centre the image on a dark square (the longer side kept), as Fashion-MNIST centres its garments."""
    height, width = gray.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float64)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = gray
    return square


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out, in) matrix of PIL's bilinear resize: a triangle filter widened by the scale when shrinking."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle's support is 1, widened by the scale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        taps = np.array([max(0.0, 1 - abs((x - center + 0.5) / filter_scale)) for x in range(first, last)])
        weights[out, first:last] = taps / taps.sum()
    return weights


def resize_image(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a square gray image to size×size with PIL's bilinear filter, in floating point."""
    height, width = gray.shape
    return resize_weights(height, size) @ gray @ resize_weights(width, size).T


def preprocess_drawing(rgba: np.ndarray, image_size: int = 16) -> np.ndarray:
    """The model's (1, 1, S, S) float32 input from a picture: gray, light garment on dark, 28×28, then S×S."""
    gray = to_grayscale(rgba)
    if min(gray.shape) < 2:
        raise FmnistLabError(f"the image is too small to classify: {gray.shape[1]}×{gray.shape[0]} pixels")
    if is_light_background(gray):
        gray = 1 - gray  # Fashion-MNIST garments are light on a black background
    image = resize_image(pad_to_square(gray), SOURCE_SIZE)
    if image_size != SOURCE_SIZE:
        image = resize_image(image, image_size)
    return np.clip(image, 0, 1).astype(np.float32)[None, None]
