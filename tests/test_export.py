"""fmnist_lab.export and `fmnist-lab export`: the ONNX file, ONNX Runtime against PyTorch, the preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image
from torch import nn

from fmnist_lab import export
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNN, CNNBatch
from fmnist_lab.train import original_run


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """The original run (seed 0), from its checkpoint."""
    return original_run()[0].cpu().eval()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """The trained model exported once for the module."""
    return export.export_to_onnx(trained, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def session(exported):
    return export.onnx_session(exported)


def test_export_writes_one_checked_file_with_a_dynamic_batch(exported):
    assert sorted(p.name for p in exported.parent.iterdir()) == [".fmnist-lab.json", "model.onnx"]  # no external data
    described = export.describe_onnx(export.check_onnx(exported))
    assert described["inputs"] == {"image": ["batch", 1, 16, 16]}
    assert described["outputs"] == {"logits": ["batch", 10]}
    assert "Conv" in described["operators"] and described["opset"] >= 17
    assert json.loads(described["metadata"]["classes"])[0] == "T-shirt/top"
    assert described["metadata"]["image_size"] == "16"


def test_onnx_runtime_equals_pytorch_on_the_whole_test_set(trained, session, test16):
    result = export.compare_with_pytorch(trained, session, test16[0])
    assert result["images"] == 10_000 and result["equal_predictions"] == 10_000
    assert result["max_abs_probability_difference"] <= 1e-4


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_any_batch_size_runs_through_the_dynamic_axis(trained, session, test16, batch):
    images = test16[0][:batch]
    logits = export.onnx_logits(session, images, batch_size=batch)
    with torch.inference_mode():
        expected = trained(images).numpy()
    assert logits.shape == (batch, 10) and np.abs(logits - expected).max() < 1e-4


def test_onnx_predict_in_chunks_equals_one_pass(session, test16):
    predicted, probabilities = export.onnx_predict(session, test16[0][:300], batch_size=128)
    whole_predicted, whole_probabilities = export.onnx_predict(session, test16[0][:300], batch_size=300)
    assert np.array_equal(predicted, whole_predicted) and np.allclose(probabilities, whole_probabilities, atol=1e-6)
    assert np.allclose(probabilities.sum(axis=1), 1)


def test_wrong_image_size_is_one_clear_error(session):
    with pytest.raises(FmnistLabError, match="expects 16×16 images, got 28×28"):
        export.onnx_logits(session, torch.zeros(2, 1, 28, 28))
    with pytest.raises(FmnistLabError, match=r"expected images shaped \(N, 1, H, W\)"):
        export.onnx_logits(session, np.zeros((2, 16, 16), np.float32))


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = CNNBatch().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export.export_to_onnx(model, tmp_path / "m.onnx")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_export_of_a_28_pixel_cnn(tmp_path):
    model = CNN(image_size=28).eval()
    session = export.onnx_session(export.export_to_onnx(model, tmp_path / "cnn28.onnx"))
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert np.abs(export.onnx_logits(session, images) - model(images).numpy()).max() < 1e-4


def test_export_to_a_folder_is_refused(tmp_path):
    with pytest.raises(FmnistLabError, match="is a folder"):
        export.export_to_onnx(CNNBatch(), tmp_path)


def test_broken_and_missing_files_are_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(FmnistLabError, match="not a valid ONNX model") as error:
        export.check_onnx(broken)
    assert "\n" not in str(error.value)
    with pytest.raises(FmnistLabError, match="ONNX Runtime cannot load it"):
        export.onnx_session(broken)
    with pytest.raises(FmnistLabError, match="no such ONNX file"):
        export.onnx_session(tmp_path / "missing.onnx")
    with pytest.raises(FmnistLabError, match="no such ONNX file"):
        export.check_onnx(tmp_path / "missing.onnx")


def test_softmax_numpy_matches_torch_and_survives_large_logits():
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * 5
    assert np.allclose(export.softmax_numpy(logits.numpy()), logits.softmax(dim=1).numpy(), atol=1e-7)
    with np.errstate(over="raise", invalid="raise"):
        big = export.softmax_numpy(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.allclose(big, [[1, 0, 0]])
    assert np.allclose(export.softmax_numpy(np.zeros(4)), 0.25)  # one vector: the last axis


def test_measure_latency_times_the_calls_after_warming_up():
    calls = []
    seconds = export.measure_latency(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and seconds >= 0


def test_latency_table_has_a_row_per_batch_size(trained, session, test16):
    rows = export.latency_table(trained, session, test16[0], batch_sizes=(1, 4), repeats=2)
    assert [r["batch"] for r in rows] == [1, 4]
    assert all(r["pytorch_ms"] > 0 and r["onnxruntime_ms"] > 0 and r["speedup"] > 0 for r in rows)


# --- preprocessing ----------------------------------------------------------------------------------


def test_grayscale_uses_luma_weights_and_white_paper_under_transparency():
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [10, 20, 30, 0]]], np.uint8)
    assert np.allclose(export.to_grayscale(rgba), [[0.299, 0.587, 0.114, 1.0]])
    half = np.array([[[0, 0, 0, 128]]], np.uint8)
    assert export.to_grayscale(half)[0, 0] == pytest.approx(1 - 128 / 255)
    assert np.allclose(
        export.to_grayscale(rgba[..., :3]), [[0.299, 0.587, 0.114, (10 * 0.299 + 20 * 0.587 + 30 * 0.114) / 255]]
    )
    with pytest.raises(FmnistLabError, match="expected an image shaped"):
        export.to_grayscale(np.zeros((4, 4, 2)))


def test_light_background_is_judged_by_the_border():
    dark = np.zeros((10, 10))
    dark[3:7, 3:7] = 1  # a light garment in the middle does not count
    assert not export.is_light_background(dark)
    assert export.is_light_background(1 - dark)


def test_pad_to_square_centres_on_dark():
    padded = export.pad_to_square(np.ones((2, 6)))
    assert padded.shape == (6, 6) and padded[2:4].all() and not padded[:2].any() and not padded[4:].any()


@pytest.mark.parametrize("shape,size", [((28, 28), 16), ((280, 280), 28), ((37, 53), 16), ((10, 10), 28)])
def test_resize_is_pils_bilinear_filter(shape, size):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    pil = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BILINEAR))
    assert np.abs(export.resize_image(image.astype(np.float64), size) - pil).max() < 1e-6


def test_a_test_image_goes_through_unchanged_and_inverted_alike(test16):
    from fmnist_lab import data

    originals, _ = data.load("test", 28)
    image = (originals[0, 0].numpy() * 255).round().astype(np.uint8)
    expected = test16[0][0, 0].numpy()
    as_is = export.preprocess_drawing(image)  # light on dark already: not inverted
    assert as_is.shape == (1, 1, 16, 16) and as_is.dtype == np.float32
    assert np.abs(as_is[0, 0] - expected).max() <= 1 / 255  # PIL rounds to bytes in between
    drawing = np.stack([255 - image] * 3 + [np.full_like(image, 255)], axis=-1)  # dark on white, RGBA
    assert np.abs(export.preprocess_drawing(drawing) - as_is).max() < 1e-6
    assert export.preprocess_drawing(image, image_size=28).shape == (1, 1, 28, 28)


def test_a_transparent_canvas_counts_as_white_paper():
    opaque = np.full((50, 50, 4), 255, np.uint8)
    opaque[10:40, 20:30, :3] = 0
    transparent = np.zeros((50, 50, 4), np.uint8)
    transparent[10:40, 20:30, 3] = 255
    assert np.abs(export.preprocess_drawing(opaque) - export.preprocess_drawing(transparent)).max() < 1e-7
    assert export.preprocess_drawing(opaque)[0, 0, 0, 0] < 1e-7  # the background is black after inversion


def test_too_small_an_image_is_refused():
    with pytest.raises(FmnistLabError, match="too small"):
        export.preprocess_drawing(np.zeros((1, 5, 4), np.uint8))


# --- the command ------------------------------------------------------------------------------------


@pytest.mark.process
def test_cli_export_writes_a_checked_model(tmp_path):
    from fmnist_lab.paths import results_dir

    original_run()  # the checkpoint exists
    weights = results_dir() / "lessons" / "seed0" / "model_weights.pth"
    out = tmp_path / "deploy" / "model.onnx"
    result = run_cli("export", str(weights), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "CNNBatch, 16×16 inputs" in result.stdout and "passes onnx.checker" in result.stdout
    assert "input image batch × 1 × 16 × 16" in result.stdout and "max |Δlogit|" in result.stdout
    assert export.describe_onnx(export.check_onnx(out))["inputs"] == {"image": ["batch", 1, 16, 16]}


@pytest.mark.process
def test_cli_export_of_plain_cnn_weights_without_json(tmp_path):
    torch.save(CNN().state_dict(), tmp_path / "model_weights.pth")  # like the original notebook's CNN
    result = run_cli("export", str(tmp_path / "model_weights.pth"), "--out", str(tmp_path / "cnn.onnx"))
    assert result.returncode == 0, result.stderr
    assert "CNN, 16×16 inputs" in result.stdout and (tmp_path / "cnn.onnx").is_file()


@pytest.mark.process
def test_cli_export_weights_of_another_architecture(tmp_path):
    torch.save(CNN().state_dict(), tmp_path / "model_weights.pth")
    (tmp_path / "model_weights.json").write_text(json.dumps({"model": "cnn_batch", "image_size": 16}))
    result = run_cli("export", str(tmp_path / "model_weights.pth"), "--out", str(tmp_path / "m.onnx"))
    assert_one_line_error(result, "weights of another architecture, not CNNBatch")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.process
def test_cli_export_weights_of_an_unknown_network(tmp_path):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).state_dict(), tmp_path / "mlp.pth")
    result = run_cli("export", str(tmp_path / "mlp.pth"), "--out", str(tmp_path / "m.onnx"))
    assert_one_line_error(result, "weights of another architecture")


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda d: d / "missing.pth", "no such weights file"),
        (lambda d: (d / "notes.pth").write_text("hello") and d / "notes.pth", "not a PyTorch weights file"),
    ],
)
@pytest.mark.process
def test_cli_export_bad_weights_files(tmp_path, make, fragment):
    result = run_cli("export", str(make(tmp_path)), "--out", str(tmp_path / "m.onnx"))
    assert_one_line_error(result, fragment)


@pytest.mark.process
def test_cli_export_out_under_a_file(tmp_path):
    torch.save(CNNBatch().state_dict(), tmp_path / "model_weights.pth")
    (tmp_path / "notes.txt").write_text("my notes")
    result = run_cli("export", str(tmp_path / "model_weights.pth"), "--out", str(tmp_path / "notes.txt" / "m.onnx"))
    assert_one_line_error(result, "cannot write the ONNX file")
    assert (tmp_path / "notes.txt").read_text() == "my notes"


@pytest.mark.process
def test_cli_export_out_is_a_folder(tmp_path):
    torch.save(CNNBatch().state_dict(), tmp_path / "model_weights.pth")
    result = run_cli("export", str(tmp_path / "model_weights.pth"), "--out", str(tmp_path))
    assert_one_line_error(result, "is a folder; give a file name")
