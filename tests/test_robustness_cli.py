"""Issue 11 for train, evaluate and export: every bad input is one line and exit code 2, and nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from fmnist_lab import export
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNNBatch
from fmnist_lab.train import save_checkpoint


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """Untrained but valid weights (and their JSON) written by fmnist-lab."""
    torch.manual_seed(0)
    return save_checkpoint(CNNBatch(), tmp_path / "model_weights.pth", {"epochs": 1})


# --- 1. export --out ---------------------------------------------------------------------------------


def test_export_over_the_weights_themselves_is_refused(weights):
    before = snapshot(weights.parent)
    result = run_cli("export", str(weights), "--out", str(weights), "--force")
    assert_one_line_error(result, "--out must differ from the weights", str(weights))
    assert snapshot(weights.parent) == before


def test_export_to_a_name_not_ending_in_onnx_needs_force(weights):
    notes = weights.parent / "notes.ipynb"
    notes.write_text('{"cells": []}\n', encoding="utf-8")
    before = snapshot(weights.parent)
    result = run_cli("export", str(weights), "--out", str(notes))
    assert_one_line_error(result, str(notes), "does not end in .onnx", "--force")
    assert snapshot(weights.parent) == before


def test_export_over_a_file_it_did_not_write_needs_force_and_keeps_a_copy(weights):
    other = weights.parent / "model.onnx"
    other.write_bytes(b"somebody else's model\x00\xff")
    before = snapshot(weights.parent)
    result = run_cli("export", str(weights), "--out", str(other))
    assert_one_line_error(result, str(other), "not an ONNX file fmnist-lab wrote", "--force")
    assert snapshot(weights.parent) == before

    result = run_cli("export", str(weights), "--out", str(other), "--force")
    assert result.returncode == 0, result.stderr
    copies = sorted(weights.parent.glob("model.onnx.bak-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == b"somebody else's model\x00\xff"
    assert f"kept a copy as {copies[0]}" in result.stdout
    export.check_onnx(other)
    assert not [p for p in weights.parent.iterdir() if p.name.startswith(".")]  # no temporary file left

    result = run_cli("export", str(weights), "--out", str(other))  # our own file: replaced without asking
    assert result.returncode == 0, result.stderr
    assert len(list(weights.parent.glob("model.onnx.bak-*"))) == 1


def test_a_failed_export_leaves_no_partial_file_and_the_old_one_intact(tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")

    def half_written(model, args, path, **kwargs):
        Path(path).write_bytes(b"half an ONNX fi")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    with pytest.raises(FmnistLabError, match="No space left on device"):
        export.export_to_onnx(CNNBatch(), out)
    assert snapshot(tmp_path) == {"model.onnx": b"the previous export"}


# --- 2. train --seed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_outside_0_to_2_32_is_refused(seed, tmp_path):
    result = run_cli("train", "--seed", seed, "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "--seed" in error and "between 0 and 2**32−1" in error and seed in error
    assert not (tmp_path / "run").exists()


def test_an_infinite_learning_rate_is_refused(tmp_path):
    result = run_cli("train", "--lr", "inf", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--lr" in result.stderr.strip().splitlines()[-1] and "must be above 0 and finite" in result.stderr
    assert not (tmp_path / "run").exists()


# --- 3. evaluate: weights and their JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [({"conv1.weight": 3}, "not a state dict of tensors"), ([1, 2, 3], "expected a state dict, found list")],
)
def test_weights_that_are_not_a_state_dict_of_tensors(tmp_path, content, fragment):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    before = snapshot(tmp_path)
    assert_one_line_error(run_cli("evaluate", str(path)), str(path), fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"model": "cnn_batch", "image_si', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]\n", "expected a JSON object, found a list"),
        (b'{"model": "cnn_batch", "image_size": "big"}', '"image_size" 16 or 28'),
    ],
)
def test_a_broken_json_beside_the_weights_names_it_and_the_fix(weights, content, fragment):
    info = weights.with_suffix(".json")
    info.write_bytes(content)
    before = snapshot(weights.parent)
    assert_one_line_error(run_cli("evaluate", str(weights)), str(info), fragment, "delete it", "alone loads")
    assert snapshot(weights.parent) == before


def test_weights_holding_nan_are_one_line_not_ten_percent(tmp_path):
    model = CNNBatch()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = save_checkpoint(model, tmp_path / "model_weights.pth")
    before = snapshot(tmp_path)
    result = run_cli("evaluate", str(path))
    assert_one_line_error(result, str(path), "hold NaN", "--lr")
    assert "10.00%" not in result.stdout
    assert snapshot(tmp_path) == before


# --- 4. train --out ------------------------------------------------------------------------------------


def test_train_into_a_file_or_under_a_file_fails_before_training(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("my notes\n", encoding="utf-8")
    assert_one_line_error(run_cli("train", "--epochs", "1", "--out", str(blocker)), str(blocker), "is a file")
    below = blocker / "run"
    result = run_cli("train", "--epochs", "1", "--out", str(below))
    assert_one_line_error(result, str(below), "is a file, not a folder")
    assert "Training" not in result.stdout
    assert snapshot(tmp_path) == {"results": b"my notes\n"}


@pytest.mark.parametrize("name", ["model_weights.pth", "metrics.json"])
def test_train_refuses_to_replace_files_it_did_not_write(tmp_path, name):
    out = tmp_path / "results"
    out.mkdir()
    (out / name).write_bytes(b"my own work\n")
    before = snapshot(out)
    result = run_cli("train", "--epochs", "1", "--out", str(out))
    assert_one_line_error(result, str(out / name), "not written by fmnist-lab", "--force")
    assert "Training" not in result.stdout
    assert snapshot(out) == before  # and the lock file is gone


def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    lock = out / ".fmnist-lab.lock"
    lock.write_text("12345\n", encoding="utf-8")
    result = run_cli("train", "--epochs", "1", "--out", str(out))
    assert_one_line_error(result, str(out), "in use by another fmnist-lab train", str(lock))
    assert "Training" not in result.stdout
    assert snapshot(out) == {".fmnist-lab.lock": b"12345\n"}  # the other run's lock is not ours to remove


def test_train_with_force_keeps_a_copy_and_writes_our_files(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "model_weights.pth").write_bytes(b"my own weights")
    result = run_cli("train", "--epochs", "1", "--no-progress", "--out", str(out), "--force")
    assert result.returncode == 0, result.stderr
    copies = list(out.glob("model_weights.pth.bak-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == b"my own weights"
    assert f"kept a copy as {copies[0]}" in result.stdout
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["epochs"] == 1
    assert not (out / ".fmnist-lab.lock").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # Now the folder is ours: a second run replaces it without --force (lock released, nothing refused).
    result = run_cli("train", "--epochs", "1", "--no-progress", "--out", str(out), "--batch-size", "2000")
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("model_weights.pth.bak-*"))) == 1


# --- 5. divergence ------------------------------------------------------------------------------------


def test_a_diverging_run_stops_in_one_line_and_writes_no_metrics(tmp_path):
    out = tmp_path / "results"
    result = run_cli("train", "--epochs", "2", "--lr", "1e30", "--no-progress", "--out", str(out))
    line = assert_one_line_error(result, "training diverged at epoch 1, step", "lower the learning rate (--lr")
    assert "NaN" not in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [], line  # no metrics, no weights, no lock
