"""The habits a newcomer can rely on: ruff's lint rules and formatting hold over the whole tree, notebooks included."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig

import pytest
from conftest import REPO


def ruff() -> str:
    """The ruff that requirements.txt installs beside this Python."""
    found = shutil.which("ruff", path=sysconfig.get_path("scripts")) or shutil.which("ruff")
    if not found:
        pytest.fail("ruff is not installed: pip install -r requirements.txt", pytrace=False)
    return found


def test_ruff_check_is_clean():
    result = subprocess.run([ruff(), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_changes_nothing():
    result = subprocess.run([ruff(), "format", "--check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lint_rules_cover_the_noqa_codes_the_code_uses():
    """A `# noqa: CODE` means something only if CODE's rule is selected."""
    import re

    lint = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[tool.ruff.lint]", 1)[1]
    selected = re.findall(r'"([A-Z]+[0-9]*)"', re.search(r"select = \[(.*?)\]", lint, flags=re.DOTALL).group(1))
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.ipynb"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    codes = {
        code
        for name in tracked
        if (REPO / name).is_file()
        for code in re.findall(r"noqa: ?([A-Z]+[0-9]+)", (REPO / name).read_text(encoding="utf-8"))
    }
    assert codes and all(any(code.startswith(prefix) for prefix in selected) for code in codes), (codes, selected)
