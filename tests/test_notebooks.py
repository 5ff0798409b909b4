"""Lesson generation and the notebook checker, on small notebooks written by the tests."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, run_cli

from fmnist_lab import __version__
from fmnist_lab.checks import EXERCISES, exercise
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.notebooks import build_lessons, check_ids, make_lesson, solution_code

REGISTER = '''from fmnist_lab.checks import check, exercise, expect_equal
@exercise("98.1", "double", "multiply by two")
def _c1(fn):
    expect_equal(fn(3), 6, "double(3)")
    return "double(3) = 6"
@exercise("98.2", "triple", "multiply by three")
def _c2(fn):
    expect_equal(fn(3), 9, "triple(3)")
    return "triple(3) = 9"'''

DOUBLE = '''# Exercise 98.1 — double: return twice x.
def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    y = 2 * x
    return y
    ### END SOLUTION'''

TRIPLE = """def triple(x):
    ### BEGIN SOLUTION
    return x + x + x
    ### END SOLUTION"""


@exercise("98.1", "double", "multiply by two")  # the same registration, in this process, for titles
def _double_check(fn) -> str:
    return "unused here"


def notebook(double: str = DOUBLE, triple: str = TRIPLE) -> nbformat.NotebookNode:
    """A two-exercise notebook with the given exercise cells, outputs included."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    plot = nbformat.v4.new_code_cell("print('a figure would be here')")
    plot.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a figure would be here\n")]
    cells = [
        nbformat.v4.new_markdown_cell("# Lesson 98"),
        nbformat.v4.new_code_cell(REGISTER),
        plot,
        nbformat.v4.new_code_cell(double),
        nbformat.v4.new_code_cell('check("98.1", double)'),
        nbformat.v4.new_code_cell(triple),
        nbformat.v4.new_code_cell('check("98.2", triple)'),
    ]
    for cell in cells[3:]:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="old output\n")]
        cell.execution_count = 3
    nb.cells = cells
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lesson_replaces_solutions_keeps_indentation_and_clears_exercise_outputs():
    lesson = make_lesson(notebook())
    assert lesson.cells[3].source == (
        "# Exercise 98.1 — double: return twice x.\ndef double(x):\n"
        '    """Twice x."""\n    # YOUR CODE HERE\n'
        '    raise NotImplementedError("Exercise 98.1: double")'
    )
    assert "return x + x + x" not in lesson.cells[5].source
    assert 'raise NotImplementedError("Exercise 98.2:' in lesson.cells[5].source
    for index in (3, 4, 5, 6):
        assert lesson.cells[index].outputs == [] and lesson.cells[index].execution_count is None
    assert lesson.cells[2].outputs[0]["text"] == "a figure would be here\n"  # figures stay for readers


def test_malformed_solutions_are_refused_with_the_cell():
    with pytest.raises(FmnistLabError, match="cell 3 has `### BEGIN SOLUTION` without"):
        make_lesson(notebook(double="def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x"))
    nb = notebook()
    del nb.cells[4]
    with pytest.raises(FmnistLabError, match="exercise cell 3 has no check cell after it"):
        make_lesson(nb)


@pytest.mark.process
def test_build_lessons_writes_then_check_names_what_differs(tmp_path):
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    write(notebook(), solutions / "98_demo.ipynb")
    assert build_lessons(solutions, lessons, check_only=True) == [lessons / "98_demo.ipynb"]
    assert not lessons.exists()  # --check writes nothing
    assert build_lessons(solutions, lessons) == [lessons / "98_demo.ipynb"]
    assert build_lessons(solutions, lessons, check_only=True) == []
    edited = lessons / "98_demo.ipynb"
    edited.write_text(edited.read_text().replace("YOUR CODE HERE", "my edit"))
    result = run_cli("build-lessons", "--solutions", str(solutions), "--lessons", str(lessons), "--check")
    assert result.returncode == 1 and "98_demo.ipynb" in result.stdout
    # an edited lesson is kept unless --force (tests/test_robustness_notebooks.py): replace it here
    assert run_cli("build-lessons", "--solutions", str(solutions), "--lessons", str(lessons), "--force").returncode == 0
    assert "YOUR CODE HERE" in edited.read_text()


def test_build_lessons_strips_run_timestamps_and_keeps_everything_else(tmp_path):
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    nb = notebook()
    nb.cells[2].metadata["execution"] = {"iopub.status.busy": "2026-11-29T15:55:04.286295Z"}
    path = write(nb, solutions / "98_demo.ipynb")
    assert build_lessons(solutions, lessons) == [path, lessons / "98_demo.ipynb"]
    for written in (path, lessons / "98_demo.ipynb"):
        assert "iopub" not in written.read_text()
    stripped = nbformat.read(path, as_version=4)
    assert stripped.cells[2].outputs == nb.cells[2].outputs  # outputs (figures) kept
    assert [c.source for c in stripped.cells] == [c.source for c in nb.cells]  # and every source


@pytest.mark.process
def test_solution_prints_the_dedented_reference(tmp_path):
    solutions = tmp_path / "solutions"
    write(notebook(), solutions / "98_demo.ipynb")
    where, code = solution_code("98.1", solutions)
    assert where == f"98_demo.ipynb ({solutions})" and code == "y = 2 * x\nreturn y"
    result = run_cli("solution", "98.2", "--solutions", str(solutions))
    assert result.returncode == 0 and "return x + x + x" in result.stdout
    result = run_cli("solution", "98.9", "--solutions", str(solutions))
    assert result.returncode == 2 and "no exercise '98.9'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.process
def test_solution_comes_from_the_package_with_no_checkout(tmp_path):
    result = run_cli("solution", "3.2", cwd=tmp_path)  # no solutions/ here: the packaged reference
    assert result.returncode == 0, result.stderr
    assert "from 03_batch_norm.ipynb (the installed course)" in result.stdout
    assert "nn.BatchNorm2d" in result.stdout
    result = run_cli("solution", "3.2", "--solutions", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "--solutions" in result.stderr and "no such folder" in result.stderr


def test_the_packaged_reference_is_what_the_solutions_hold():
    from fmnist_lab.notebooks import reference_text
    from fmnist_lab.paths import REFERENCE_FILE

    assert REFERENCE_FILE.read_text(encoding="utf-8") == reference_text(REPO / "solutions")
    in_solutions = {
        i
        for path in (REPO / "solutions").glob("*.ipynb")
        for cell in nbformat.read(path, as_version=4).cells
        for i in check_ids(cell.source)
    }
    assert set(json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))) == in_solutions
    assert in_solutions <= set(EXERCISES)  # every packaged reference has its check


def test_build_lessons_stamps_colab_cells_from_the_repository_url(tmp_path):
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    write(notebook(), solutions / "98_demo.ipynb")
    (tmp_path / "mkdocs.yml").write_text("site_name: x\nrepo_url: https://github.com/someone/fork\n")
    assert build_lessons(solutions, lessons) == [solutions / "98_demo.ipynb", lessons / "98_demo.ipynb"]
    for folder in (solutions, lessons):
        nb = nbformat.read(folder / "98_demo.ipynb", as_version=4)
        assert f"github/someone/fork/blob/v{__version__}/{folder.name}/98_demo.ipynb" in nb.cells[0].source
        assert nb.cells[1].source == "# Lesson 98"  # the intro keeps its place, the install cell follows
        assert f'COURSE = "git+https://github.com/someone/fork@v{__version__}"' in nb.cells[2].source
    assert "return x + x + x" in (solutions / "98_demo.ipynb").read_text()  # the solution is kept
    assert build_lessons(solutions, lessons, check_only=True) == []  # stamping twice changes nothing
    (tmp_path / "mkdocs.yml").write_text("site_name: x\nrepo_url: https://github.com/other/place\n")
    assert build_lessons(solutions, lessons, check_only=True) == [
        solutions / "98_demo.ipynb",
        lessons / "98_demo.ipynb",
    ]
    (tmp_path / "mkdocs.yml").write_text("site_name: x\n")
    with pytest.raises(FmnistLabError, match="set `repo_url: https://github.com/OWNER/NAME`"):
        build_lessons(solutions, lessons)


def check_json(path: Path, *extra: str) -> tuple[int, dict[str, dict]]:
    """Run `fmnist-lab check --json` and index the verdicts by exercise id."""
    before = digest(path)
    result = run_cli("check", str(path), "--json", *extra)
    assert digest(path) == before, "the learner's notebook was modified"
    assert "Traceback" not in result.stderr
    return result.returncode, {row["exercise"]: row for row in json.loads(result.stdout)}


@pytest.mark.process
def test_check_passes_the_solution_and_reports_untouched_exercises(tmp_path):
    solution = write(notebook(), tmp_path / "98_demo.ipynb")
    code, rows = check_json(solution)
    assert code == 0 and [r["status"] for r in rows.values()] == ["passed", "passed"]
    assert rows["98.1"] == {
        "notebook": str(solution),
        "exercise": "98.1",
        "title": "double",
        "status": "passed",
        "message": "double(3) = 6",
    }
    lesson = write(make_lesson(notebook()), tmp_path / "lesson.ipynb")
    code, rows = check_json(lesson)
    assert code == 1 and [r["status"] for r in rows.values()] == ["not attempted", "not attempted"]


@pytest.mark.process
def test_check_other_correct_answer_passes_and_wrong_answer_fails(tmp_path):
    path = write(
        notebook(double="def double(x):\n    return x * 2", triple="def triple(x):\n    return x * 2"),
        tmp_path / "mine.ipynb",
    )
    code, rows = check_json(path)
    assert code == 1 and rows["98.1"]["status"] == "passed"
    assert rows["98.2"]["status"] == "failed"
    assert rows["98.2"]["message"] == "expected triple(3) = 9, got 6 — hint: multiply by three"


@pytest.mark.process
def test_check_table_output(tmp_path):
    path = write(notebook(triple="def triple(x):\n    return x * 2"), tmp_path / "mine.ipynb")
    result = run_cli("check", str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == str(path) and "exercise" in lines[1] and "status" in lines[1]
    assert "98.1" in lines[2] and "passed" in lines[2]
    assert "98.2" in lines[3] and "failed" in lines[3] and "expected triple(3) = 9, got 6" in lines[3]
    assert lines[-1] == "1 of 2 exercises passed"


BROKEN_FIRST_EXERCISE = {  # the learner's cell, extra options, 98.1's message (a regex), 98.2's (None: it passed)
    "a syntax error": ("def double(x)\n    return 2 * x", (), "SyntaxError", None),
    "an exception": ("def double(x):\n    raise ValueError('oops')", (), "^your code raised ValueError: oops", None),
    "an endless loop": ("def double(x):\n    while True:\n        pass", ("--timeout", "40"), "40 s timeout", None),
    "a kernel crash": ("import os\nos._exit(1)", (), "the kernel died", "the kernel died"),
}


@pytest.mark.process
@pytest.mark.parametrize("name", BROKEN_FIRST_EXERCISE)
def test_a_broken_exercise_is_an_error_line_and_the_rest_still_checked(tmp_path, name):
    cell, options, first_says, second_says = BROKEN_FIRST_EXERCISE[name]
    code, rows = check_json(write(notebook(double=cell), tmp_path / "mine.ipynb"), *options)
    assert code == 1 and list(rows) == ["98.1", "98.2"]
    assert rows["98.1"]["status"] == "error" and re.search(first_says, rows["98.1"]["message"])
    if second_says is None:
        assert rows["98.2"]["status"] == "passed"
    else:
        assert rows["98.2"]["status"] == "error" and re.search(second_says, rows["98.2"]["message"])


@pytest.mark.parametrize(
    "content,fragment", [(None, "no such notebook"), ("{not json", "not a readable Jupyter notebook")]
)
@pytest.mark.process
def test_missing_or_broken_notebook_is_one_line_exit_2(tmp_path, content, fragment):
    path = tmp_path / "broken.ipynb"
    if content is not None:
        path.write_text(content)
    result = run_cli("check", str(path))
    assert result.returncode == 2 and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
