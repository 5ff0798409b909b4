"""Where the course keeps its files: the per-user data cache, the results folder, the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, link_real_files

from fmnist_lab import data, paths


def test_downloads_go_to_the_user_cache_honouring_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("FMNIST_LAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.data_dir() == tmp_path / "xdg" / "fmnist-lab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.data_dir() == tmp_path / "home" / ".cache" / "fmnist-lab"
    monkeypatch.setenv("FMNIST_LAB_DATA_DIR", str(tmp_path / "mine"))
    assert paths.data_dir() == tmp_path / "mine"


def test_a_download_lands_in_the_cache_not_the_working_folder(isolated, real_location, mirror, monkeypatch):
    folder, url = mirror
    link_real_files(real_location, folder)
    monkeypatch.delenv("FMNIST_LAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", url)
    location = data.find_data()
    assert location.source.startswith(f"downloaded ({isolated / 'xdg' / 'fmnist-lab'})")
    assert list((isolated / "cwd").iterdir()) == []  # nothing in the working folder
    assert data.find_data().source.startswith("user cache")  # found there next time, no download


def test_no_data_offline_names_the_cache_and_both_fixes(isolated, monkeypatch):
    monkeypatch.delenv("FMNIST_LAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    with pytest.raises(data.FmnistLabError) as caught:
        data.find_data()
    message = str(caught.value)
    assert "\n" not in message
    cache = isolated / "xdg" / "fmnist-lab"
    assert f"user cache {cache}: not found" in message and f"download into {cache}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "set FMNIST_DATA" in message


def test_results_go_to_the_checkout_or_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("FMNIST_LAB_RESULTS", raising=False)
    assert paths.checkout() == REPO  # the tests import the checkout; tests/test_wheel.py the installed copy
    assert paths.results_dir() == REPO / "results"
    monkeypatch.setenv("FMNIST_LAB_RESULTS", str(tmp_path / "r"))
    assert paths.results_dir() == tmp_path / "r"


def test_the_reference_solutions_ship_inside_the_package():
    assert paths.REFERENCE_FILE.is_file()
    assert Path(paths.REFERENCE_FILE).is_relative_to(Path(paths.__file__).parent)
