"""The real course: lessons/ generated from solutions/, the template followed, every check passing on the
solutions and every exercise of the untouched lessons reported as not attempted."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from conftest import REPO, run_cli
from fmnist_lab.checks import EXERCISES
from fmnist_lab.notebooks import check_ids, exercise_cells

SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
LESSON_IDS = {path.name: int(path.name[:2]) for path in SOLUTIONS}


def test_there_are_lessons():
    assert [p.name[:2] for p in SOLUTIONS][:6] == ["01", "02", "03", "04", "05", "06"]


def test_lessons_are_exactly_what_solutions_generate():
    result = run_cli("build-lessons", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_follows_the_lesson_template(path):
    nb = nbformat.read(path, as_version=4)
    intro = nb.cells[0].source
    number = LESSON_IDS[path.name]
    assert nb.cells[0].cell_type == "markdown" and intro.startswith(f"# Lesson {number}")
    assert "Learning objectives" in intro and "Time" in intro and "Builds on" in intro
    objectives = [line for line in intro.split("Learning objectives", 1)[1].splitlines()
                  if re.match(r"^\s*[-*] ", line)]
    assert len(objectives) >= 3
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


def test_every_registered_lesson_exercise_is_in_a_solution():
    in_notebooks = {i for path in SOLUTIONS for c in nbformat.read(path, as_version=4).cells
                    if c.cell_type == "code" for i in check_ids(c.source)}
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
        r for r in rows if r["status"] != "not attempted"]
    assert {p.name: p.read_bytes() for p in (REPO / "lessons").glob("*.ipynb")} == before
