"""The real course: lessons/ generated from solutions/, the template followed, every check passing on the
solutions and every exercise of the untouched lessons reported as not attempted."""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import pytest
from conftest import REPO, run_cli

from fmnist_lab import __version__
from fmnist_lab.checks import EXERCISES
from fmnist_lab.notebooks import check_ids, exercise_cells, is_stamped, repository

SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
LESSON_IDS = {path.name: int(path.name[:2]) for path in SOLUTIONS}


def test_there_are_lessons():
    assert [p.name[:2] for p in SOLUTIONS][:6] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.process
def test_lessons_are_exactly_what_solutions_generate():
    result = run_cli("build-lessons", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_follows_the_lesson_template(path):
    nb = nbformat.read(path, as_version=4)
    nb.cells = [cell for cell in nb.cells if not is_stamped(cell)]  # the Colab cells come before
    intro = nb.cells[0].source
    number = LESSON_IDS[path.name]
    assert nb.cells[0].cell_type == "markdown" and intro.startswith(f"# Lesson {number}")
    assert "Learning objectives" in intro and "Time" in intro and "Builds on" in intro
    objectives = [
        line for line in intro.split("Learning objectives", 1)[1].splitlines() if re.match(r"^\s*[-*] ", line)
    ]
    assert len(objectives) >= 3
    assert f"`fmnist-lab check lessons/{path.name} --exercise {number}.1`" in intro, "say how to check one exercise"
    setup = next(c for c in nb.cells if c.cell_type == "code").source
    assert "seed_everything" in setup and "get_device" in setup and "check" in setup
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Recap" in markdown and "## Next" in markdown
    ids = [i for c in nb.cells if c.cell_type == "code" for i in check_ids(c.source)]
    assert 3 <= len(ids) <= 5, ids
    assert ids == [f"{number}.{n}" for n in range(1, len(ids) + 1)]
    assert sorted(exercise_cells(nb, path).values()) == sorted(ids)
    for exercise_id in ids:
        assert exercise_id in EXERCISES, f"exercise {exercise_id} has no registered check"


NOTEBOOKS = SOLUTIONS + sorted((REPO / "lessons").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_notebook_opens_in_colab_and_installs_the_course_first(path):
    nb = nbformat.read(path, as_version=4)
    url = repository(REPO).url
    owner_and_name = url.removeprefix("https://github.com/")
    badge = nb.cells[0]
    assert badge.cell_type == "markdown" and is_stamped(badge)
    assert (
        f"(https://colab.research.google.com/github/{owner_and_name}/blob/v{__version__}/"
        f"{path.parent.name}/{path.name})"
    ) in badge.source  # the badge points at this very notebook
    install = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert is_stamped(install) and install.outputs == []
    assert f'COURSE = "git+{url}@v{__version__}"' in install.source
    assert "%pip install --quiet {COURSE}" in install.source
    assert nb.cells.index(install) < min(
        i for i, c in enumerate(nb.cells) if "import fmnist_lab" in c.source or "from fmnist_lab" in c.source
    )


@pytest.mark.process
def test_a_fork_changes_one_line_and_build_lessons_does_the_rest(tmp_path):
    """Change `repo_url` in mkdocs.yml, rebuild: no notebook and no README link names the old one."""
    old = repository(REPO).url
    for name in ("README.md", "mkdocs.yml", "solutions", "lessons"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, tmp_path / name)
    config = tmp_path / "mkdocs.yml"
    config.write_text(config.read_text().replace(f"repo_url: {old}", "repo_url: https://github.com/a-teacher/fork"))
    assert config.read_text().count("a-teacher/fork") == 1
    result = run_cli(
        "build-lessons", "--solutions", str(tmp_path / "solutions"), "--lessons", str(tmp_path / "lessons")
    )
    assert result.returncode == 0, result.stderr
    old_name = old.removeprefix("https://github.com/")
    for path in [tmp_path / "README.md", *tmp_path.glob("*/*.ipynb")]:
        text = path.read_text(encoding="utf-8")
        assert old_name not in text, path
        if path.suffix == ".ipynb" or path.name == "README.md":
            assert f"github/a-teacher/fork/blob/v{__version__}/" in text, path
    assert f"git+https://github.com/a-teacher/fork@v{__version__}" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebooks_store_no_run_timestamps(path):
    """Re-running a notebook must not change hundreds of lines that mean nothing (build-lessons strips them)."""
    nb = nbformat.read(path, as_version=4)
    stamped = [i for i, cell in enumerate(nb.cells) if "execution" in cell.metadata or "ExecuteTime" in cell.metadata]
    assert stamped == [], f"cells {stamped} hold run timestamps: run `fmnist-lab build-lessons`"


def test_every_registered_lesson_exercise_is_in_a_solution():
    in_notebooks = {
        i
        for path in SOLUTIONS
        for c in nbformat.read(path, as_version=4).cells
        if c.cell_type == "code"
        for i in check_ids(c.source)
    }
    registered = {i for i in EXERCISES if int(i.split(".")[0]) in LESSON_IDS.values()}
    assert registered == in_notebooks


def _check_all(folder: str) -> list[dict]:
    paths = [str(REPO / folder / p.name) for p in SOLUTIONS]
    result = run_cli("check", *paths, "--json", timeout=3600)
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_every_exercise_passes_on_the_solutions():
    rows = _check_all("solutions")
    assert rows and all(r["status"] == "passed" for r in rows), [r for r in rows if r["status"] != "passed"]


@pytest.mark.slow
def test_every_exercise_of_the_untouched_lessons_is_not_attempted():
    before = {p.name: p.read_bytes() for p in (REPO / "lessons").glob("*.ipynb")}
    rows = _check_all("lessons")
    assert rows and all(r["status"] == "not attempted" for r in rows), [
        r for r in rows if r["status"] != "not attempted"
    ]
    assert {p.name: p.read_bytes() for p in (REPO / "lessons").glob("*.ipynb")} == before
