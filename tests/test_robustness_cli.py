"""Issue 11 for train, evaluate and export: every bad input is one line and exit code 2, and nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import resource  # POSIX only
except ImportError:
    resource = None
import torch
from conftest import assert_one_line_error, run_cli

from fmnist_lab import cli, export
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.files import MANIFEST_NAME, is_ours, record_ours
from fmnist_lab.models import CNNBatch
from fmnist_lab.train import original_run, save_checkpoint


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """Untrained but valid weights (and their JSON) written by fmnist-lab."""
    torch.manual_seed(0)
    return save_checkpoint(CNNBatch(), tmp_path / "model_weights.pth", {"epochs": 1})


# --- 1. export --out ---------------------------------------------------------------------------------


@pytest.mark.process
def test_export_over_the_weights_themselves_is_refused(weights):
    before = snapshot(weights.parent)
    result = run_cli("export", str(weights), "--out", str(weights), "--force")
    assert_one_line_error(result, "--out must differ from the weights", str(weights))
    assert snapshot(weights.parent) == before


@pytest.mark.process
def test_export_to_a_name_not_ending_in_onnx_needs_force(weights):
    notes = weights.parent / "notes.ipynb"
    notes.write_text('{"cells": []}\n', encoding="utf-8")
    before = snapshot(weights.parent)
    result = run_cli("export", str(weights), "--out", str(notes))
    assert_one_line_error(result, str(notes), "does not end in .onnx", "--force")
    assert snapshot(weights.parent) == before


@pytest.mark.process
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
    assert not [p for p in weights.parent.iterdir() if ".tmp" in p.name]  # no temporary file left

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
@pytest.mark.process
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
@pytest.mark.process
def test_a_broken_json_beside_the_weights_names_it_and_the_fix(weights, content, fragment):
    info = weights.with_suffix(".json")
    info.write_bytes(content)
    before = snapshot(weights.parent)
    assert_one_line_error(run_cli("evaluate", str(weights)), str(info), fragment, "delete it", "alone loads")
    assert snapshot(weights.parent) == before


@pytest.mark.process
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


@pytest.mark.process
def test_train_into_a_file_or_under_a_file_fails_before_training(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("my notes\n", encoding="utf-8")
    assert_one_line_error(run_cli("train", "--epochs", "1", "--out", str(blocker)), str(blocker), "is a file")
    below = blocker / "run"
    result = run_cli("train", "--epochs", "1", "--out", str(below))
    assert_one_line_error(result, str(below), "is a file, not a folder")
    assert "Training" not in result.stdout
    assert snapshot(tmp_path) == {"results": b"my notes\n"}


@pytest.mark.process
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


@pytest.mark.process
def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    lock = out / ".fmnist-lab.lock"
    lock.write_text("12345\n", encoding="utf-8")
    result = run_cli("train", "--epochs", "1", "--out", str(out))
    assert_one_line_error(result, str(out), "in use by another fmnist-lab train", str(lock))
    assert "Training" not in result.stdout
    assert snapshot(out) == {".fmnist-lab.lock": b"12345\n"}  # the other run's lock is not ours to remove


@pytest.mark.slow
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


@pytest.mark.process
def test_a_diverging_run_stops_in_one_line_and_writes_no_metrics(tmp_path):
    out = tmp_path / "results"
    result = run_cli("train", "--epochs", "2", "--lr", "1e30", "--no-progress", "--out", str(out))
    line = assert_one_line_error(result, "training diverged at epoch 1, step", "lower the learning rate (--lr")
    assert "NaN" not in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [], line  # no metrics, no weights, no lock


# --- 6. the manifest: what fmnist-lab wrote, by hash ------------------------------------------------------


@pytest.mark.slow
def test_a_run_records_every_file_it_wrote_in_the_manifest(tmp_path):
    out = tmp_path / "results"
    result = run_cli("train", "--epochs", "1", "--batch-size", "2000", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = [p for p in cli._outputs(out)]
    assert all(p.is_file() and is_ours(p) for p in written), [p for p in written if not is_ours(p)]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    assert files == {p.relative_to(out).as_posix() for p in written}  # no lock, no temporary file


@pytest.mark.process
@pytest.mark.parametrize("name", ["metrics.json", "model_weights.json", "images/confusion_matrix.png"])
def test_a_file_fmnist_lab_wrote_but_the_user_changed_is_kept(weights, name):
    out = weights.parent
    target = out / name
    target.parent.mkdir(exist_ok=True)
    target.write_text('{"mine": true}\n', encoding="utf-8")
    record_ours(target)  # fmnist-lab wrote it ...
    target.write_text('{"mine": "edited by hand"}\n', encoding="utf-8")  # ... and then the user changed it
    before = snapshot(out)
    result = run_cli("train", "--epochs", "1", "--out", str(out))
    assert_one_line_error(result, str(target), "not written by fmnist-lab (or was changed since)", "--force")
    assert "Training" not in result.stdout
    assert snapshot(out) == before


@pytest.mark.process
def test_a_broken_manifest_makes_nothing_ours(weights):
    (weights.parent / MANIFEST_NAME).write_bytes(b"\xff not json")
    assert not is_ours(weights)
    result = run_cli("train", "--epochs", "1", "--out", str(weights.parent))
    assert_one_line_error(result, str(weights), "not written by fmnist-lab", "--force")


# --- 7. read-only, full and over-long targets: refused before the work, one line --------------------------


def _mounted(*command: str) -> bool:
    """Run a mount command; whether it worked (it needs root, and a system that lets containers mount)."""
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write to, not even root: a read-only bind mount, else `chattr +i`, else chmod."""
    if sys.platform == "win32":
        pytest.skip("a Windows folder has no read-only bit that stops new files")
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif _mounted("mount", "--bind", str(folder), str(folder)) and _mounted(
        "mount", "-o", "remount,ro,bind", str(folder)
    ):
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    elif _mounted("chattr", "+i", str(folder)):
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        pytest.skip("root here can write anywhere: no bind mount, no chattr")


@pytest.mark.process
def test_train_into_a_read_only_folder_fails_before_training(read_only_folder):
    result = run_cli("train", "--epochs", "1", "--out", str(read_only_folder))
    assert_one_line_error(result, str(read_only_folder), "cannot write in this folder")
    assert "Training" not in result.stdout
    assert list(read_only_folder.iterdir()) == []


@pytest.mark.process
def test_export_into_a_read_only_folder_is_one_line(weights, read_only_folder):
    result = run_cli("export", str(weights), "--out", str(read_only_folder / "model.onnx"))
    assert_one_line_error(result, str(read_only_folder / "model.onnx"), "cannot write the ONNX file")
    assert list(read_only_folder.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB file system (tmpfs), far too small for a run's results."""
    folder = tmp_path / "tiny-disk"
    folder.mkdir()
    if (
        sys.platform != "linux"
        or os.geteuid() != 0
        or not _mounted("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder))
    ):
        pytest.skip("mounting a tmpfs needs root and a system that allows it")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.process
def test_train_onto_a_disk_without_room_fails_before_training(tiny_disk):
    out = tiny_disk / "results"
    result = run_cli("train", "--epochs", "1", "--out", str(out))
    assert_one_line_error(result, str(out), "MiB free on that disk", "free some space or use another --out")
    assert "Training" not in result.stdout
    assert list(out.iterdir()) == []  # and the lock is gone


def test_the_room_check_runs_before_training_on_every_system(tmp_path, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=cli.ROOM_NEEDED - 1))
    assert cli.main(["train", "--epochs", "1", "--out", str(tmp_path / "results")]) == cli.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "MiB free on that disk" in captured.err and "Training" not in captured.out


def _file_size_limit(limit: int):
    """For a child process: files may grow to `limit` bytes, and past it a write fails (EFBIG) instead of killing."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.skipif(resource is None, reason="file-size limits are POSIX (resource.RLIMIT_FSIZE)")
def test_a_disk_that_fills_up_while_writing_leaves_the_previous_results_intact(weights):
    out = weights.parent  # an earlier run's weights, fmnist-lab's own: this run may replace them
    before = snapshot(out)
    command = [sys.executable, "-m", "fmnist_lab", "train", "--epochs", "1", "--batch-size", "2000"]
    result = subprocess.run(
        [*command, "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(40 * 1024),  # the weights are 79 KiB: the disk "fills up" writing them
        timeout=600,
    )
    assert_one_line_error(result, f"--out {out}: could not write the results", "no file was left half-written")
    assert snapshot(out) == before  # the old weights and their JSON, byte for byte; no partial, no lock


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{long}"],
        ["export", "{weights}", "--out", "{long}.onnx"],
        ["train", "--epochs", "1", "--out", "{long}"],
        ["check", "{long}.ipynb"],
        ["data", "--root", "{long}"],
        ["build-lessons", "--lessons", "{long}", "--check"],
        ["solution", "3.1", "--solutions", "{long}"],
    ],
    ids=lambda command: command[0],
)
@pytest.mark.process
def test_a_5000_character_file_name_is_one_line(command, weights, tmp_path):
    long = str(tmp_path / ("x" * 5000))
    result = run_cli(*(part.format(long=long, weights=weights) for part in command))
    line = assert_one_line_error(result, "the path is too long for this system", "use a shorter name")
    assert "(5,0" in line and len(line) < 400  # the path is shortened, its length said


def test_an_os_error_names_the_path_and_the_fix():
    error = OSError(errno.ENOSPC, "No space left on device", "/data/out/metrics.json")
    assert cli.os_error_line(error) == "/data/out/metrics.json: No space left on device; free some space and try again"


# --- 8. two runs at once, and the lessons' cached run ----------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder_one_wins_and_the_other_says_so(tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, "-m", "fmnist_lab", "train", "--epochs", "1", "--batch-size", "2000"]
    runs = [
        subprocess.Popen(
            [*command, "--no-progress", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert "in use by another fmnist-lab train" in loser and len(loser.strip().splitlines()) == 1
    assert all(is_ours(p) for p in cli._outputs(out))  # the winner's files, whole and recorded
    assert not (out / cli.LOCK_NAME).exists()


def test_the_lessons_cached_run_names_a_broken_json_instead_of_a_traceback(weights):
    info = weights.with_suffix(".json")
    info.write_bytes(b"\xff\xfe not json")
    with pytest.raises(FmnistLabError, match="not UTF-8 text"):
        original_run(checkpoint=weights)
    assert info.read_bytes() == b"\xff\xfe not json"  # and nothing was retrained over it
