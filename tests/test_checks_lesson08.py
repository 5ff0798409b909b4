"""The checks of lesson 8: the reference passes, a different correct answer passes, plausible mistakes fail."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from check_cases import fails, passes
from conftest import assert_check_fails

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
    message = passes("8.1", export_reference).message
    assert "passes onnx.checker" in message and "1, 3 and 64" in message, message


def test_8_1_the_torchscript_exporter_with_dynamic_axes_passes():
    passes("8.1", legacy_export)


def test_8_1_a_fixed_batch_fails():
    message = fails(
        "8.1", lambda model, path: legacy_export(model, path, dynamic=False), fragment="accept a batch of 1 images"
    ).message
    assert "make the batch dimension dynamic" in message, message


def test_8_1_no_file_written_fails():
    fails("8.1", lambda model, path: None, fragment="write a file at path")


def test_8_1_a_file_that_is_not_onnx_fails():
    fails("8.1", lambda model, path: torch.save(model.state_dict(), path), fragment="onnx.checker")


# --- 8.2 softmax_numpy ------------------------------------------------------------------------------


def softmax_reference(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_8_2_reference_passes():
    passes("8.2", softmax_reference, fragment="torch.softmax within 1e-6")


def test_8_2_log_sum_exp_passes():
    def softmax_logsumexp(logits):
        m = np.max(logits, axis=1, keepdims=True)
        return np.exp(logits - m - np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)))

    assert run_check("8.2", softmax_logsumexp).status == "passed"


def test_8_2_unstable_softmax_fails_on_large_logits():
    message = fails("8.2", lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), fragment="nan or inf").message
    assert "maximum" in message, message


def test_8_2_wrong_axis_fails():
    fails("8.2", lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum(axis=0), fragment="every row to sum to 1")


def test_8_2_a_tensor_is_not_a_numpy_array():
    fails("8.2", lambda z: torch.from_numpy(softmax_reference(z)), fragment="NumPy array")


# --- 8.3 onnx_predict -------------------------------------------------------------------------------


def predict_reference(session, images, batch_size=1000):
    name = session.get_inputs()[0].name
    array = images.numpy().astype(np.float32)
    chunks = [session.run(None, {name: array[i : i + batch_size]})[0] for i in range(0, len(array), batch_size)]
    probabilities = softmax_reference(np.concatenate(chunks))
    return probabilities.argmax(axis=1), probabilities


def test_8_3_reference_passes():
    passes("8.3", predict_reference, fragment="300 images in batches of 128")


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

    message = fails("8.3", first_chunk, fragment="(300, 10)").message
    assert "(128, 10)" in message, message


def test_8_3_logits_instead_of_probabilities_fail():
    def logits_only(session, images, batch_size=1000):
        chunks = [session.run(None, {"image": images[i : i + batch_size].numpy()})[0] for i in range(0, 300, 128)]
        logits = np.concatenate(chunks)
        return logits.argmax(axis=1), logits

    fails("8.3", logits_only, fragment="apply a softmax")


def test_8_3_a_single_array_fails():
    fails(
        "8.3",
        lambda session, images, batch_size=1000: predict_reference(session, images)[1],
        fragment="pair (predicted, probabilities)",
    )


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
    passes("8.4", preprocess_reference, fragment="4 pictures")


def test_8_4_a_different_correct_answer_passes():
    def preprocess_other(rgba):
        r, g, b, a = (rgba[..., i] / 255.0 for i in range(4))
        gray = np.where(a > 0, a * (0.299 * r + 0.587 * g + 0.114 * b) + 1 - a, 1.0)
        ring = np.ones_like(gray, dtype=bool)
        ring[1:-1, 1:-1] = False
        gray = 1 - gray if gray[ring].mean() > 0.5 else gray
        return np.float32(resize_image(resize_image(pad_to_square(gray), 28), 16)).reshape(1, 1, 16, 16)

    assert run_check("8.4", preprocess_other).status == "passed"


def test_8_4_no_inversion_fails_on_a_drawing():
    def never_invert(rgba):
        pixels = rgba.astype(np.float64) / 255
        gray = pixels[..., 3] * (pixels[..., :3] @ np.array([0.299, 0.587, 0.114])) + 1 - pixels[..., 3]
        return resize_image(resize_image(pad_to_square(gray), 28), 16)[None, None]

    message = fails("8.4", never_invert, fragment="dark drawing on white paper").message
    assert "must be inverted" in message, message


def test_8_4_ignoring_transparency_fails():
    def no_alpha(rgba):
        gray = rgba[..., :3].astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
        gray = 1 - gray if np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]).mean() > 0.5 else gray
        return resize_image(resize_image(pad_to_square(gray), 28), 16)[None, None]

    message = fails("8.4", no_alpha, fragment="transparent canvas").message
    assert "alpha" in message, message


def test_8_4_the_plain_mean_of_rgb_fails_on_colour():
    def plain_mean(rgba):
        pixels = rgba.astype(np.float64) / 255
        gray = pixels[..., 3] * pixels[..., :3].mean(axis=-1) + 1 - pixels[..., 3]
        gray = 1 - gray if np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]).mean() > 0.5 else gray
        return resize_image(resize_image(pad_to_square(gray), 28), 16)[None, None]

    message = fails("8.4", plain_mean, fragment="red garment").message
    assert "0.299 R" in message, message


def test_8_4_wrong_shape_fails():
    message = fails("8.4", lambda rgba: preprocess_reference(rgba)[0, 0], fragment="(1, 1, 16, 16)").message
    assert "(16, 16)" in message, message


# --- issue 12: in place, other sizes, the package's answers, PyTorch in 8.2, NaN, a class or a layer --------

LAYER = "got a Identity layer (an instance): write the function"
CLASS = "got the class Identity: pass your function"
PACKAGE = "is the answer itself: write the function, as the exercise asks"


def export_package(model, path):
    from fmnist_lab import export

    export.export_to_onnx(model, path)


def export_probabilities(model, path):
    legacy_export(torch.nn.Sequential(model, torch.nn.Softmax(dim=1)), path)


def export_a_new_model(model, path):
    from fmnist_lab.models import CNNBatch

    legacy_export(CNNBatch(image_size=16), path)


def export_beside_path(model, path):
    legacy_export(model, path.with_suffix(".onnx.tmp"))


def export_an_empty_file(model, path):
    path.write_bytes(b"")


def export_fuses_in_place(model, path):
    with torch.no_grad():
        model.conv1_bn.running_var.fill_(1.0)  # "simplify" the model before export
    legacy_export(model, path)


def softmax_in_place(logits):
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    return logits / logits.sum(axis=-1, keepdims=True)


def softmax_through_torch(logits):
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def softmax_scipy(logits):
    import scipy.special

    return scipy.special.softmax(logits, axis=1)


def softmax_package(logits):
    from fmnist_lab import export

    return export.softmax_numpy(logits)


def softmax_global_max(logits):
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum(axis=-1, keepdims=True)


def softmax_squeezed(logits):
    return np.squeeze(softmax_reference(logits))


def predict_in_one_run(session, images, batch_size=1000):
    probabilities = softmax_reference(session.run(None, {"image": images.numpy()})[0])
    return probabilities.argmax(axis=1), probabilities


def predict_float64(session, images, batch_size=1000):
    array = images.numpy().astype(np.float64)
    chunks = [session.run(None, {"image": array[i : i + batch_size]})[0] for i in range(0, len(array), batch_size)]
    probabilities = softmax_reference(np.concatenate(chunks))
    return probabilities.argmax(axis=1), probabilities


def predict_chunks_reversed(session, images, batch_size=1000):
    array = images.numpy()
    starts = range(0, len(array), batch_size)
    chunks = [session.run(None, {"image": array[i : i + batch_size]})[0] for i in reversed(starts)]
    probabilities = softmax_reference(np.concatenate(chunks))
    return probabilities.argmax(axis=1), probabilities


def predict_normalises_in_place(session, images, batch_size=1000):
    images.clamp_(0, 0.9)  # "keep the pixels in range"
    return predict_reference(session, images, batch_size)


def predict_argmax_over_images(session, images, batch_size=1000):
    _, probabilities = predict_reference(session, images, batch_size)
    return probabilities.argmax(axis=0), probabilities


def predict_package(session, images, batch_size=1000):
    from fmnist_lab import export

    return export.onnx_predict(session, images, batch_size)


def preprocess_float64(rgba):
    return preprocess_reference(rgba).astype(np.float64)


def preprocess_inverts_in_place(rgba):
    rgba[..., :3] = 255 - rgba[..., :3]  # white paper becomes black, before converting
    pixels = rgba.astype(np.float64) / 255
    gray = pixels[..., 3] * (pixels[..., :3] @ np.array([0.299, 0.587, 0.114])) + (1 - pixels[..., 3]) * 0
    return resize_image(resize_image(pad_to_square(gray), 28), 16).astype(np.float32)[None, None]


def preprocess_package(rgba):
    from fmnist_lab import export

    return export.preprocess_drawing(rgba)


def preprocess_bytes(rgba):
    return (preprocess_reference(rgba) * 255).astype(np.float32)


def preprocess_tensor(rgba):
    return torch.from_numpy(preprocess_reference(rgba))


@pytest.mark.parametrize(
    "exercise_id,answer,fragment",
    [
        ("8.1", export_package, "the package's own export.export_to_onnx " + PACKAGE),
        ("8.1", export_probabilities, "the file outputs probabilities, not logits: export the model itself"),
        ("8.1", export_a_new_model, "the file's logits differ from PyTorch's in eval mode by up to"),
        ("8.1", export_beside_path, "found none (in the folder: ['model.onnx.tmp'])"),
        ("8.1", export_an_empty_file, "expected a file that passes onnx.checker"),
        (
            "8.1",
            export_fuses_in_place,
            "changed its input model.conv1_bn.running_var in place; export the model as it is",
        ),
        ("8.1", torch.nn.Identity(), LAYER),
        ("8.1", torch.nn.Identity, CLASS),
        ("8.2", softmax_in_place, "your function changed its input logits in place"),
        ("8.2", softmax_through_torch, "write the softmax with NumPy (np.exp, np.sum), as the lesson says"),
        ("8.2", softmax_scipy, "scipy.special.softmax (and the package's export.softmax_numpy) are ruled out"),
        ("8.2", softmax_package, "write the softmax with NumPy"),
        ("8.2", softmax_global_max, "on logits of ±1000 your probabilities hold nan or inf"),
        ("8.2", softmax_squeezed, "expected probabilities of shape (1, 10), got (10,): keep the batch axis"),
        ("8.2", torch.nn.Identity(), LAYER),
        ("8.3", predict_in_one_run, "ran ONNX Runtime on 300 images at once: run it on chunks of at most"),
        ("8.3", predict_float64, "you fed ONNX Runtime images as ndarray of float64; the model takes a float32"),
        ("8.3", predict_chunks_reversed, "are the chunks kept in order?"),
        ("8.3", predict_normalises_in_place, "your function changed its input images in place"),
        ("8.3", predict_argmax_over_images, "expected 300 predicted classes, shape (300,), got (10,)"),
        ("8.3", predict_package, "the package's own export.onnx_predict " + PACKAGE),
        ("8.3", torch.nn.Identity, CLASS),
        ("8.4", preprocess_float64, "your pixels are right but float64: ONNX Runtime refuses anything but float32"),
        ("8.4", preprocess_inverts_in_place, "your function changed its input rgba in place"),
        ("8.4", preprocess_package, "the package's own export.preprocess_drawing " + PACKAGE),
        ("8.4", preprocess_bytes, "the pixels go up to 255: divide the bytes by 255 first"),
        ("8.4", preprocess_tensor, "to return a NumPy array, got Tensor: ONNX Runtime takes NumPy arrays"),
        ("8.4", torch.nn.Identity(), LAYER),
    ],
)
def test_more_mistakes_fail_and_name_the_cause(exercise_id, answer, fragment):
    assert_check_fails(exercise_id, answer, fragment)


def test_8_2_and_8_3_leave_torch_and_the_package_as_they_were():
    from fmnist_lab import export

    before = (torch.softmax, torch.Tensor.softmax, export.softmax_numpy, export.onnx_predict)
    assert run_check("8.2", softmax_through_torch).status == "failed"
    assert run_check("8.3", predict_package).status == "failed"
    assert (torch.softmax, torch.Tensor.softmax, export.softmax_numpy, export.onnx_predict) == before
