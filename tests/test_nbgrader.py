"""build_tools/nbgrader_source.py: a course solution becomes an nbgrader assignment that nbgrader 0.9.6 really grades.

nbgrader is installed into a folder of its own for this test (its widget dependencies would change the lessons'
outputs if they were in the course's environment). Two learners: one with the reference answers, one with one
wrong answer; nbgrader's own gradebook must give 4 and 3 points of 4.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from conftest import REPO

from build_tools.nbgrader_source import main as nbgrader_source_main
from fmnist_lab.notebooks import check_ids

# nbgrader and what it needs beyond the course's own packages (installed with --no-deps: no ipywidgets)
NBGRADER = ["nbgrader==0.9.6", "SQLAlchemy>=2,<3", "alembic>=1.7,<2", "Mako>=1,<2", "rapidfuzz>=3,<4"]
SOLUTION = REPO / "solutions" / "02_plain_cnn.ipynb"
CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "fmnist-lab"
c.ExecutePreprocessor.timeout = 600
"""


def _answer(cell_source: str) -> str:
    """A solution cell's code without nbgrader's markers: what a learner who solved it submits."""
    return "\n".join(
        line for line in cell_source.splitlines() if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
    )


def test_the_marked_solution_has_an_answer_and_a_one_point_test_per_exercise(tmp_path):
    assert nbgrader_source_main([str(SOLUTION), str(tmp_path)]) == 0
    nb = nbformat.read(tmp_path / SOLUTION.name, as_version=4)
    marked = [cell.metadata["nbgrader"] for cell in nb.cells if "nbgrader" in cell.metadata]
    answers = [m for m in marked if m["solution"]]
    tests = [m for m in marked if m["grade"]]
    exercises = [i for cell in nbformat.read(SOLUTION, as_version=4).cells for i in check_ids(cell.source)]
    assert len(answers) == len(tests) == len(exercises) == 4
    assert [t["grade_id"] for t in tests] == [f"check_{e.replace('.', '_')}" for e in exercises]
    assert all(t["points"] == 1 and t["locked"] for t in tests)
    assert not any("colab" in cell.metadata.get("tags", []) for cell in nb.cells)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert nbgrader_source_main([str(tmp_path / "missing.ipynb"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert nbgrader_source_main([]) == 2


@pytest.mark.slow
def test_nbgrader_generates_and_autogrades_the_assignment(tmp_path):
    packages = tmp_path / "nbgrader-packages"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(packages), *NBGRADER]
    subprocess.run(install, check=True, timeout=600)
    course = tmp_path / "course"
    (course / "source" / "lesson02").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    assert nbgrader_source_main([str(SOLUTION), str(course / "source" / "lesson02")]) == 0
    env = {**os.environ, "PYTHONPATH": str(packages), "PATH": f"{packages / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def nbgrader(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, check=True, timeout=900)

    nbgrader("generate_assignment", "lesson02", "--force")
    released = nbformat.read(course / "release" / "lesson02" / SOLUTION.name, as_version=4)
    source = {c.metadata["nbgrader"]["grade_id"]: c.source for c in released.cells if "nbgrader" in c.metadata}
    solved = nbformat.read(course / "source" / "lesson02" / SOLUTION.name, as_version=4)
    reference = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solved.cells if "nbgrader" in c.metadata}
    assert all("raise NotImplementedError" in source[key] for key in source if key.startswith("answer_"))
    first_answer = min((key for key in source if key.startswith("answer_")), key=lambda k: int(k.split("_")[1]))
    for learner, wrong in (("ada", None), ("ben", first_answer)):
        submission = nbformat.read(course / "release" / "lesson02" / SOLUTION.name, as_version=4)
        for cell in submission.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
            if grade_id.startswith("answer_"):
                cell.source = _answer(reference[grade_id])
                if grade_id == wrong:  # exercise 2.1 ignoring padding and stride
                    cell.source += (
                        "\n\ndef conv_output_size(n, kernel, padding=0, stride=1):\n    return n - kernel + 1"
                    )
        (course / "submitted" / learner / "lesson02").mkdir(parents=True)
        nbformat.write(submission, course / "submitted" / learner / "lesson02" / SOLUTION.name)
        nbgrader("db", "student", "add", learner)
    nbgrader("autograde", "lesson02", "--force")
    nbgrader("export")
    rows = (course / "grades.csv").read_text().splitlines()
    header = rows[0].split(",")
    scores = {row.split(",")[header.index("student_id")]: row.split(",")[header.index("score")] for row in rows[1:]}
    assert scores == {"ada": "4.0", "ben": "3.0"}, rows
