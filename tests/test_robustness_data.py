"""Issue 11 for fmnist_lab.data: every bad input is one line (exit code 2), no traceback, nothing lost.

The download folder that cannot take a download, a file far too big to read, SIGTERM in the middle of a
download, and a mirror list that names no mirror.
"""

from __future__ import annotations

import gzip
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import link_real_files, run_cli

from fmnist_lab import data
from fmnist_lab.errors import FmnistLabError

HUGE = 40 * 2**30  # a 40 GB file: reading it whole would raise MemoryError (or worse)
TRAIN_IMAGES = data.IDX_FILES[("train", "images")]
TEST_LABELS = data.IDX_FILES[("test", "labels")]
FIX_FOLDER = "point FMNIST_LAB_DATA_DIR at a writable folder"
NO_MIRROR = "FMNIST_LAB_MIRRORS is set but names no mirror (got {!r}): unset it or give comma-separated base URLs"
not_on_windows = pytest.mark.skipif(
    sys.platform == "win32", reason="needs POSIX signals, sparse files and read-only folders"
)


def cli_data(isolated: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m fmnist_lab data` from the isolated working folder, with `env` on top of `isolated`'s."""
    return run_cli("data", env=env, cwd=isolated / "cwd")


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The message of a run that failed as bad input: exit code 2, one line on stderr, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    prefix = "fmnist-lab data: error: "
    assert result.stderr.startswith(prefix), result.stderr
    return result.stderr.strip()[len(prefix) :]


@pytest.fixture
def read_only_folder(isolated: Path) -> Iterator[Path]:
    """An empty folder nobody can write to: `chattr +i` for root (who ignores permission bits), else chmod."""
    folder = isolated / "read-only"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        if (
            not shutil.which("chattr")
            or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0
        ):
            pytest.skip("root ignores permission bits and `chattr +i` is not available here")
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


@pytest.fixture
def sparse() -> Iterator[Callable[[Path, bytes], Path]]:
    """Make HUGE-byte sparse files (a few real bytes, no disk used), each deleted after the test."""
    made: list[Path] = []

    def make(path: Path, head: bytes = b"") -> Path:
        with open(path, "wb") as out:
            out.write(head)
            out.truncate(HUGE)
        made.append(path)
        return path

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def folder_with_real_files(real: data.DataLocation, folder: Path, replaced: data.IdxFile) -> Path:
    """`folder` holding the real files as symlinks, except `replaced`, which the test writes itself."""
    link_real_files(real, folder)
    for path in folder.glob(f"{replaced.name}*"):
        path.unlink()
    return folder


# 1. A download folder that cannot take a download.


@pytest.mark.process
@pytest.mark.parametrize("case", ["a file", "under a file", pytest.param("read-only", marks=not_on_windows)])
def test_an_unusable_download_folder_is_one_line_naming_the_variable(isolated, case, request):
    afile = isolated / "afile"
    afile.write_text("not a folder\n", encoding="utf-8")
    folder = {"a file": afile, "under a file": afile / "sub"}.get(case)
    folder = folder or request.getfixturevalue("read_only_folder")
    problem = {
        "a file": "is a file, not a folder",
        "under a file": f"is inside {afile}, which is a file, not a folder",
        "read-only": "is not writable (",
    }[case]
    message = one_error_line(cli_data(isolated, FMNIST_LAB_DATA_DIR=str(folder)))
    assert message.startswith(
        f"Fashion-MNIST needs a download, but the download folder FMNIST_LAB_DATA_DIR={folder} {problem}"
    ), message
    assert message.endswith(f": {FIX_FOLDER}"), message
    assert afile.read_text(encoding="utf-8") == "not a folder\n"  # nothing lost
    if case == "read-only":
        assert list(folder.iterdir()) == []  # the probe left nothing behind


def test_an_unusable_user_cache_is_named_as_such(isolated, monkeypatch):
    (isolated / "xdg").write_text("", encoding="utf-8")
    monkeypatch.delenv("FMNIST_LAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    with pytest.raises(FmnistLabError) as caught:
        data.find_data()
    cache = isolated / "xdg" / "fmnist-lab"
    assert str(caught.value) == (
        f"Fashion-MNIST needs a download, but the download folder {cache} (the "
        f"user cache) is inside {isolated / 'xdg'}, which is a file, not a folder: "
        f"{FIX_FOLDER}"
    )


def test_an_unusable_download_folder_does_not_matter_when_nothing_is_downloaded(isolated, real_location, monkeypatch):
    (isolated / "afile").write_text("", encoding="utf-8")
    monkeypatch.setenv("FMNIST_DATA", str(link_real_files(real_location, isolated / "env")))
    monkeypatch.setenv("FMNIST_LAB_DATA_DIR", str(isolated / "afile" / "sub"))
    assert data.find_data().source.startswith("$FMNIST_DATA")


# 2. A file far too big to be Fashion-MNIST is refused by its size, before it is read.


@pytest.mark.process
@not_on_windows  # NTFS would allocate the 40 GB
def test_a_huge_plain_file_is_refused_by_its_size_before_reading(isolated, real_location, sparse):
    folder = folder_with_real_files(real_location, isolated / "env", TRAIN_IMAGES)
    huge = sparse(folder / TRAIN_IMAGES.name)
    message = one_error_line(cli_data(isolated, FMNIST_DATA=str(folder)))
    assert message == (
        f"{huge}: decompressed size is 42,949,672,960 bytes, expected 47,040,016 for "
        "train-images-idx3-ubyte (too big: not Fashion-MNIST); delete it and run "
        "`fmnist-lab data` again"
    )
    assert huge.stat().st_size == HUGE  # the learner's file is reported, never deleted


@pytest.mark.process
@not_on_windows
def test_a_huge_gzip_file_is_refused_by_its_size_before_decompressing(isolated, real_location, sparse):
    folder = folder_with_real_files(real_location, isolated / "env", TRAIN_IMAGES)
    # a valid gzip member, then 40 GB of zero padding (which gzip would skip one byte at a time)
    huge = sparse(folder / f"{TRAIN_IMAGES.name}.gz", gzip.compress(b"\x00" * 1000))
    message = one_error_line(cli_data(isolated, FMNIST_DATA=str(folder)))
    assert message == (
        f"{huge}: 42,949,672,960 bytes, more than any gzip of train-images-idx3-ubyte can be "
        "(not Fashion-MNIST); delete it and run `fmnist-lab data` again"
    )


def test_a_gzip_bomb_stops_decompressing_past_the_expected_size(isolated, real_location):
    folder = folder_with_real_files(real_location, isolated / "env", TEST_LABELS)
    bomb = folder / f"{TEST_LABELS.name}.gz"
    bomb.write_bytes(gzip.compress(bytes(32 * 2**20)))  # about 32 KB that inflate to 32 MB
    with pytest.raises(FmnistLabError) as caught:
        data.load("test", root=folder)
    assert str(caught.value) == (
        f"{bomb}: decompressed size is more than 10,008 bytes, expected 10,008 for "
        "t10k-labels-idx1-ubyte (too big: not Fashion-MNIST); delete it and run "
        "`fmnist-lab data` again"
    )


def test_a_gzip_bomb_from_a_mirror_is_refused_and_never_kept(isolated, mirror, monkeypatch):
    folder, url = mirror
    (folder / f"{TRAIN_IMAGES.name}.gz").write_bytes(gzip.compress(bytes(64 * 2**20)))
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", url)
    with pytest.raises(FmnistLabError) as caught:
        data.find_data()
    assert f"download failed: {url}{TRAIN_IMAGES.name}.gz: decompressed size is more than 47,040,016 bytes" in str(
        caught.value
    )
    assert list((isolated / "course").iterdir()) == []


@not_on_windows
def test_a_download_far_bigger_than_any_gzip_of_the_file_is_cut_off(isolated, mirror, monkeypatch, sparse):
    folder, url = mirror
    sparse(folder / f"{TRAIN_IMAGES.name}.gz")
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", url)
    with pytest.raises(FmnistLabError) as caught:
        data.find_data()
    limit = f"{TRAIN_IMAGES.size + TRAIN_IMAGES.size // 100 + 2**16:,}"
    assert (
        f"download failed: {url}{TRAIN_IMAGES.name}.gz (more than {limit} bytes, too big for a gzip of "
        "train-images-idx3-ubyte: not Fashion-MNIST)"
    ) in str(caught.value)
    assert list((isolated / "course").iterdir()) == []


# 3. SIGTERM in the middle of a download removes the `.part` file, as SIGINT does.


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends the first bytes of a file, then stalls until the test releases it."""

    sent: threading.Event
    release: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(2**20))
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(998))
        self.wfile.flush()
        self.sent.set()
        self.release.wait(timeout=300)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stalling_mirror() -> Iterator[tuple[str, threading.Event]]:
    """A mirror on 127.0.0.1 that never finishes a file: its URL, and an event set once bytes went out."""
    handler = type("Handler", (_StallingHandler,), {"sent": threading.Event(), "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler.sent
    handler.release.set()
    server.shutdown()
    server.server_close()


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll `condition` until it holds; fail (with the process's output) if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the download never got going (exit {process.returncode}): {out}{err}")
        time.sleep(0.05)


@pytest.mark.process
@not_on_windows
def test_sigterm_during_a_download_leaves_no_part_file_and_no_traceback(isolated, stalling_mirror):
    url, sent = stalling_mirror
    course = isolated / "course"
    env = {**os.environ, "FMNIST_LAB_MIRRORS": url}
    process = subprocess.Popen(
        [sys.executable, "-m", "fmnist_lab", "data"],
        cwd=isolated / "cwd",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: sent.is_set() and any(course.glob(".*.part")), process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode != 0, out + err
    assert "Traceback" not in err and err == "", err
    assert list(course.iterdir()) == []  # the .part file is gone


def test_a_download_puts_back_the_sigterm_handler_it_found(isolated):
    def mine(signum, frame):
        pass

    for before in (signal.SIG_DFL, mine):
        previous = signal.signal(signal.SIGTERM, before)
        try:
            with pytest.raises(FmnistLabError, match="download failed"):
                data.download_data(isolated / "course")
            assert signal.getsignal(signal.SIGTERM) is before
        finally:
            signal.signal(signal.SIGTERM, previous)


def test_a_download_outside_the_main_thread_skips_the_sigterm_handler(isolated):
    raised: list[BaseException] = []

    def download() -> None:
        try:
            data.download_data(isolated / "course")
        except BaseException as exc:  # noqa: BLE001 - whatever came out, ValueError from signal.signal included
            raised.append(exc)

    thread = threading.Thread(target=download)
    thread.start()
    thread.join()
    assert len(raised) == 1 and isinstance(raised[0], FmnistLabError), raised
    assert str(raised[0]).startswith("download failed: http://127.0.0.1:9/")


# 4. A mirror list that names no mirror.


@pytest.mark.process
def test_a_mirror_list_naming_no_mirror_is_one_line(isolated):
    message = one_error_line(cli_data(isolated, FMNIST_LAB_MIRRORS=","))
    assert message == NO_MIRROR.format(",")
    assert list((isolated / "course").iterdir()) == []


@pytest.mark.parametrize("value", [" ", ", ,", "/", " / , "])
def test_every_mirror_list_without_a_url_is_refused_in_python(isolated, monkeypatch, value):
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", value)
    with pytest.raises(FmnistLabError) as caught:
        data.find_data()
    assert str(caught.value) == NO_MIRROR.format(value)


def test_an_empty_mirror_list_still_means_the_default_mirrors(monkeypatch):
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", "")
    from torchvision.datasets import FashionMNIST

    assert data.mirrors() == list(FashionMNIST.mirrors)
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", " http://a.example/x/ ,, http://b.example")
    assert data.mirrors() == ["http://a.example/x/", "http://b.example/"]
