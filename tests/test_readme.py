"""The README quotes the benchmarks' own output, never numbers typed by hand."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_readme_results_match_the_benchmark_output():
    result = subprocess.run(
        [sys.executable, "build_tools/report.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_shows_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
