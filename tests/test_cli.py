"""The `fmnist-lab` command through a subprocess: exit codes, files written, one-line messages."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_one_line_error, run_cli

from fmnist_lab import cli
from fmnist_lab.models import CNN


@pytest.fixture(scope="module")
def original_run(tmp_path_factory) -> tuple[Path, object]:
    """The original settings, seed 0, five epochs, trained once for the module (about 30 s here)."""
    out = tmp_path_factory.mktemp("run") / "results"
    result = run_cli("train", "--seed", "0", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.process
def test_data_reports_the_verified_files():
    result = run_cli("data")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[OK]") == 4 and "SHA-256 verified" in result.stdout
    assert "t10k-images-idx3-ubyte" in result.stdout and "10,000×28×28" in result.stdout


@pytest.mark.process
def test_data_missing_and_no_network_is_one_line_exit_2(tmp_path):
    env = {
        "FMNIST_DATA": str(tmp_path / "empty"),
        "FMNIST_LAB_DATA_DIR": str(tmp_path / "course"),
        "FMNIST_LAB_SYSTEM_DATA": str(tmp_path / "system"),
        "FMNIST_LAB_MIRRORS": "http://127.0.0.1:9/",
    }
    (tmp_path / "empty").mkdir()
    result = run_cli("data", env=env, cwd=tmp_path)
    assert_one_line_error(
        result,
        "Fashion-MNIST not found",
        "$FMNIST_DATA",
        "./data",
        "Debian package dataset-fashion-mnist",
        "Connection refused",
        "apt-get install dataset-fashion-mnist",
        "set FMNIST_DATA",
    )


@pytest.mark.slow
def test_train_with_the_original_settings_reproduces_the_original(original_run):
    out, result = original_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert {
        "model",
        "params",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "image_size",
        "train_seconds",
        "test_accuracy",
        "history",
    } <= set(metrics)
    assert metrics["params"] == 18_494 and metrics["epochs"] == 5 and metrics["lr"] == 0.1
    assert metrics["test_accuracy"] >= 0.88  # the original: 0.8874
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3, 4, 5]
    assert metrics["history"][-1]["cost"] < metrics["history"][0]["cost"]
    assert {"epoch", "cost", "mean_loss", "val_accuracy", "seconds"} == set(metrics["history"][0])
    assert metrics["train_seconds"] == sum(r["seconds"] for r in metrics["history"])
    for name in ("training_curves", "confusion_matrix", "sample_predictions", "sample_images"):
        assert (out / "images" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "model_weights.pth").is_file() and (out / "model_weights.json").is_file()
    assert "key result" in result.stdout and "88.74%" in result.stdout  # the original beside ours
    assert f"{metrics['test_accuracy']:.2%}" in result.stdout


@pytest.mark.slow
def test_evaluate_gives_the_accuracy_training_reported(original_run):
    out, _ = original_run
    result = run_cli("evaluate", str(out / "model_weights.pth"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test accuracy: {metrics['test_accuracy']:.2%}" in result.stdout
    assert "Ankle boot" in result.stdout and "precision" in result.stdout


@pytest.mark.slow
def test_evaluate_on_weights_without_json_like_the_original_notebooks(original_run, tmp_path):
    out, _ = original_run
    shutil.copy(out / "model_weights.pth", tmp_path / "model_weights.pth")
    result = run_cli("evaluate", str(tmp_path / "model_weights.pth"))
    assert result.returncode == 0, result.stderr
    assert "CNNBatch, 16×16 inputs" in result.stdout


@pytest.mark.slow
def test_evaluate_with_images_of_the_wrong_size(original_run):
    out, _ = original_run
    result = run_cli("evaluate", str(out / "model_weights.pth"), "--image-size", "28")
    assert_one_line_error(result, "expects 16×16 images, got 28×28")


@pytest.mark.process
def test_evaluate_weights_of_another_architecture(tmp_path):
    torch.save(CNN().state_dict(), tmp_path / "model_weights.pth")
    (tmp_path / "model_weights.json").write_text(json.dumps({"model": "cnn_batch", "image_size": 16}))
    result = run_cli("evaluate", str(tmp_path / "model_weights.pth"))
    assert_one_line_error(result, "weights of another architecture, not CNNBatch")


@pytest.mark.process
def test_evaluate_missing_file():
    assert_one_line_error(run_cli("evaluate", "no/such/model_weights.pth"), "no such weights file")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--epochs", "0"], "must be at least 1"),
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["train", "--lr", "-1"], "must be above 0"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr


@pytest.mark.process
def test_a_reader_that_left_ends_the_command_quietly():
    """`fmnist-lab doctor | head -1` once head has gone: no error line about the pipe, exit 1 (the output was cut)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line
    try:
        command = [sys.executable, "-m", "fmnist_lab", "doctor"]
        result = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=600)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


@pytest.mark.process
def test_the_fast_exit_still_delivers_every_line_and_the_exit_code():
    """`run()` leaves Python with os._exit: what was printed last, and the exit code, must still arrive (exit 2 on
    bad input: test_evaluate_missing_file, through the same run())."""
    result = run_cli("doctor")
    assert result.stdout.rstrip().splitlines()[-1].startswith("doctor: ") and result.returncode in (0, 1)


@pytest.mark.process
def test_the_fast_exit_still_runs_the_exit_handlers(tmp_path):
    """What a library registered with atexit (coverage's data, matplotlib's temporary folder) still runs and prints."""
    code = (
        "import atexit, sys\nfrom fmnist_lab import cli\natexit.register(print, 'the exit handler ran')\n"
        f"sys.argv = ['fmnist-lab', 'evaluate', {str(tmp_path / 'none.pth')!r}]\ncli.run()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert (result.returncode, result.stdout) == (2, "the exit handler ran\n"), result.stderr


def test_train_defaults_are_the_original_settings():
    from fmnist_lab.cli import build_parser
    from fmnist_lab.original import ORIGINAL

    args = build_parser().parse_args(["train"])
    assert (args.model, args.epochs, args.lr, args.batch_size, args.image_size) == (
        ORIGINAL.model,
        ORIGINAL.epochs,
        ORIGINAL.lr,
        ORIGINAL.batch_size,
        ORIGINAL.image_size,
    )


def test_out_that_is_a_file_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    result = run_cli("train", "--out", str(target), "--epochs", "1", "--no-progress")
    assert_one_line_error(result, "is a file; give a folder")
    assert target.read_text() == "my notes"


def test_console_script_is_installed():
    import shutil
    import subprocess
    import sysconfig

    script = shutil.which("fmnist-lab", path=sysconfig.get_path("scripts"))  # fmnist-lab.exe on Windows
    assert script, "pip install did not install the fmnist-lab command"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "train" in result.stdout and "evaluate" in result.stdout


def test_train_draws_the_sample_images_figure_of_the_whole_training_set_from_its_first_images():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fmnist_lab import data, plots
    from fmnist_lab.cli import SAMPLE_IMAGES_FROM

    whole = plots.sample_images(*data.load("train", 28))
    first = plots.sample_images(*data.load("train", 28, count=SAMPLE_IMAGES_FROM))
    assert np.array_equal(whole.axes[0].images[0].get_array(), first.axes[0].images[0].get_array())
    plt.close("all")


def test_the_collector_pause_ends_even_after_an_error_and_freezes_what_was_made():
    kept = []
    with pytest.raises(ZeroDivisionError), cli._collection_paused():
        assert not gc.isenabled()
        kept.append([[] for _ in range(100)])  # objects that live on, as imported modules do
        frozen_before = gc.get_freeze_count()
        _ = 1 / 0
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + 100
