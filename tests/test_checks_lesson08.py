"""The checks of lesson 8: the reference passes, a different correct answer passes, plausible mistakes fail."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fmnist_lab.checks import run_check
from fmnist_lab.export import pad_to_square, resize_image


def legacy_export(model, path, dynamic=True):
    """The TorchScript exporter (dynamo=False): another correct way when the batch axis is dynamic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.rand(2, 1, 16, 16),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic else None,
        )


# --- 8.1 export_to_onnx -----------------------------------------------------------------------------


def export_reference(model, path):
    model = model.eval()
    example = torch.rand(2, 1, model.image_size, model.image_size)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        verbose=False,
        external_data=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )


def test_8_1_reference_passes():
    result = run_check("8.1", export_reference)
    assert result.status == "passed", result.message
    assert "passes onnx.checker" in result.message and "1, 3 and 64" in result.message


def test_8_1_the_torchscript_exporter_with_dynamic_axes_passes():
    result = run_check("8.1", legacy_export)
    assert result.status == "passed", result.message


def test_8_1_a_fixed_batch_fails():
    result = run_check("8.1", lambda model, path: legacy_export(model, path, dynamic=False))
    assert result.status == "failed"
    assert "accept a batch of 1 images" in result.message and "make the batch dimension dynamic" in result.message


def test_8_1_no_file_written_fails():
    result = run_check("8.1", lambda model, path: None)
    assert result.status == "failed" and "write a file at path" in result.message


def test_8_1_a_file_that_is_not_onnx_fails():
    result = run_check("8.1", lambda model, path: torch.save(model.state_dict(), path))
    assert result.status == "failed" and "onnx.checker" in result.message


# --- 8.2 softmax_numpy ------------------------------------------------------------------------------


def softmax_reference(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_8_2_reference_passes():
    result = run_check("8.2", softmax_reference)
    assert result.status == "passed", result.message
    assert "torch.softmax within 1e-6" in result.message


def test_8_2_log_sum_exp_passes():
    def softmax_logsumexp(logits):
        m = np.max(logits, axis=1, keepdims=True)
        return np.exp(logits - m - np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)))

    assert run_check("8.2", softmax_logsumexp).status == "passed"


def test_8_2_unstable_softmax_fails_on_large_logits():
    result = run_check("8.2", lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))
    assert result.status == "failed" and "nan or inf" in result.message and "maximum" in result.message


def test_8_2_wrong_axis_fails():
    result = run_check("8.2", lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum(axis=0))
    assert result.status == "failed" and "every row to sum to 1" in result.message


def test_8_2_a_tensor_is_not_a_numpy_array():
    result = run_check("8.2", lambda z: torch.softmax(torch.from_numpy(z), dim=1))
    assert result.status == "failed" and "NumPy array" in result.message


# --- 8.3 onnx_predict -------------------------------------------------------------------------------


def predict_reference(session, images, batch_size=1000):
    name = session.get_inputs()[0].name
    array = images.numpy().astype(np.float32)
    chunks = [session.run(None, {name: array[i : i + batch_size]})[0] for i in range(0, len(array), batch_size)]
    probabilities = softmax_reference(np.concatenate(chunks))
    return probabilities.argmax(axis=1), probabilities


def test_8_3_reference_passes():
    result = run_check("8.3", predict_reference)
    assert result.status == "passed", result.message
    assert "300 images in batches of 128" in result.message


def test_8_3_array_split_and_torch_outputs_pass():
    def predict_split(session, images, batch_size=1000):
        parts = np.array_split(np.asarray(images, dtype=np.float32), -(-len(images) // batch_size))
        logits = np.vstack([session.run(["logits"], {"image": part})[0] for part in parts])
        probabilities = torch.softmax(torch.from_numpy(logits), dim=1)
        return probabilities.argmax(dim=1), probabilities

    assert run_check("8.3", predict_split).status == "passed"


def test_8_3_only_the_first_chunk_fails():
    def first_chunk(session, images, batch_size=1000):
        return predict_reference(session, images[:batch_size], batch_size)

    result = run_check("8.3", first_chunk)
    assert result.status == "failed" and "(300, 10)" in result.message and "(128, 10)" in result.message


def test_8_3_logits_instead_of_probabilities_fail():
    def logits_only(session, images, batch_size=1000):
        logits = session.run(None, {"image": images.numpy()})[0]
        return logits.argmax(axis=1), logits

    result = run_check("8.3", logits_only)
    assert result.status == "failed" and "apply a softmax" in result.message


def test_8_3_a_single_array_fails():
    result = run_check("8.3", lambda session, images, batch_size=1000: predict_reference(session, images)[1])
    assert result.status == "failed" and "pair (predicted, probabilities)" in result.message


# --- 8.4 preprocess_drawing -------------------------------------------------------------------------


def preprocess_reference(rgba):
    pixels = rgba.astype(np.float64) / 255
    gray = pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
    alpha = pixels[..., 3]
    gray = alpha * gray + (1 - alpha)
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    if border.mean() > 0.5:
        gray = 1 - gray
    image = resize_image(resize_image(pad_to_square(gray), 28), 16)
    return image.astype(np.float32)[None, None]


def test_8_4_reference_passes():
    result = run_check("8.4", preprocess_reference)
    assert result.status == "passed", result.message
    assert "4 pictures" in result.message


def test_8_4_a_different_correct_answer_passes():
    def preprocess_other(rgba):
        r, g, b, a = (rgba[..., i] / 255.0 for i in range(4))
        gray = np.where(a > 0, a * (0.299 * r + 0.587 * g + 0.114 * b) + 1 - a, 1.0)
        ring = np.ones_like(gray, dtype=bool)
        ring[1:-1, 1:-1] = False
        gray = 1 - gray if gray[ring].mean() > 0.5 else gray
        return torch.tensor(resize_image(resize_image(pad_to_square(gray), 28), 16)).reshape(1, 1, 16, 16)

    assert run_check("8.4", preprocess_other).status == "passed"


def test_8_4_no_inversion_fails_on_a_drawing():
    def never_invert(rgba):
        pixels = rgba.astype(np.float64) / 255
        gray = pixels[..., 3] * (pixels[..., :3] @ np.array([0.299, 0.587, 0.114])) + 1 - pixels[..., 3]
        return resize_image(resize_image(pad_to_square(gray), 28), 16)[None, None]

    result = run_check("8.4", never_invert)
    assert result.status == "failed"
    assert "dark drawing on white paper" in result.message and "must be inverted" in result.message


def test_8_4_ignoring_transparency_fails():
    def no_alpha(rgba):
        gray = rgba[..., :3].astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
        gray = 1 - gray if np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]).mean() > 0.5 else gray
        return resize_image(resize_image(pad_to_square(gray), 28), 16)[None, None]

    result = run_check("8.4", no_alpha)
    assert result.status == "failed" and "transparent canvas" in result.message and "alpha" in result.message


def test_8_4_the_plain_mean_of_rgb_fails_on_colour():
    def plain_mean(rgba):
        pixels = rgba.astype(np.float64) / 255
        gray = pixels[..., 3] * pixels[..., :3].mean(axis=-1) + 1 - pixels[..., 3]
        gray = 1 - gray if np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]).mean() > 0.5 else gray
        return resize_image(resize_image(pad_to_square(gray), 28), 16)[None, None]

    result = run_check("8.4", plain_mean)
    assert result.status == "failed" and "red garment" in result.message and "0.299 R" in result.message


def test_8_4_wrong_shape_fails():
    result = run_check("8.4", lambda rgba: preprocess_reference(rgba)[0, 0])
    assert result.status == "failed" and "(1, 1, 16, 16)" in result.message and "(16, 16)" in result.message
