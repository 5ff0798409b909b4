"""Shared fixtures: the real Fashion-MNIST files, an isolated search path, tiny IDX files, a local mirror."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist_lab import data

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def real_location() -> data.DataLocation:
    """Where the real files are on this machine (the Debian package in CI)."""
    return data.find_data(download=False)


@pytest.fixture(scope="session")
def test16() -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 test images at the original model's 16×16."""
    return data.load("test", 16)


@pytest.fixture(scope="session")
def train16() -> tuple[torch.Tensor, torch.Tensor]:
    """The 60,000 training images at 16×16."""
    return data.load("train", 16)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing to find anywhere: empty cwd, no $FMNIST_DATA, no system package, a refused mirror."""
    for name in ("cwd", "course", "system"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("FMNIST_DATA", raising=False)
    monkeypatch.setenv("FMNIST_LAB_DATA_DIR", str(tmp_path / "course"))
    monkeypatch.setenv("FMNIST_LAB_SYSTEM_DATA", str(tmp_path / "system"))
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", "http://127.0.0.1:9/")  # the discard port: refused at once
    data._read_verified.cache_clear()
    data._images_uint8.cache_clear()
    return tmp_path


def link_real_files(real: data.DataLocation, folder: Path) -> Path:
    """Make `folder` hold the four real files as symlinks (cheap copies of the data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in real.files.values():
        (folder / path.name).symlink_to(path)
    return folder


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file: magic 0x0000 08 ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def mirror(tmp_path: Path):
    """A local HTTP mirror on 127.0.0.1 serving the files a test puts in the folder it yields."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """What a user must see for bad input: exit code 2, no traceback, one line on stderr holding every fragment."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600):
    """Run `python -m fmnist_lab ARGS` in a subprocess; return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fmnist_lab", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


# The website: built once per test run, served on 127.0.0.1, driven in headless Chromium.

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"  # axe-core, pinned in package.json (npm ci)

CHROMIUM = os.environ.get("FMNIST_LAB_BROWSER", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_or_fail():
    """Debian's Chromium, or one line saying it is missing (a failure in CI, a skip elsewhere)."""
    if not Path(CHROMIUM).is_file():
        message = f"no browser for the site tests: {CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def site() -> Path:
    """Build the site once for the whole run (tests/test_site.py and tests/test_demo.py), strictly."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING -" not in result.stderr and "WARNING  -" not in result.stderr, result.stderr
    return REPO / "site"


@pytest.fixture(scope="session")
def server(site):
    """`site/` served on 127.0.0.1 at a free port."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def build_tool(name: str):
    """A module of build_tools/ (the site's hooks and their helpers), imported as MkDocs imports a hook."""
    import importlib

    folder = str(REPO / "build_tools")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def benchmark_script(name: str):
    """A script of benchmarks/ as a module (the folder is not a package; its scripts import `machine` from it)."""
    import importlib

    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run; each test opens its own pages or contexts in it."""
    browser_or_fail()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def assert_check_fails(exercise_id: str, answer, fragment: str) -> None:
    """A wrong answer to an exercise fails (not an error), its message names the cause and ends with the hint."""
    from fmnist_lab.checks import run_check

    result = run_check(exercise_id, answer)
    assert result.status == "failed", result.message
    assert fragment in result.message, result.message
    assert "— hint: " in result.message
