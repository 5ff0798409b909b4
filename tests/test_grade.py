"""`fmnist-lab grade`: a small class of lesson-02 notebooks, every kind of submission, and every bad input.

The notebooks hold only exercise 2.1 (a pure function), so each kernel runs in seconds; the 30-submission
lesson-03 measurement is benchmarks/grading.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nbformat
import pytest
from conftest import assert_one_line_error, run_cli
from test_checker import RIGHT, WRONG, lesson02

from fmnist_lab.grade import find_submissions, lesson_exercises

CLASS = {
    "alice": RIGHT,
    "bob": WRONG,
    "carol": "def conv_output_size(n, kernel, padding=0, stride=1):\n    while True:\n        pass",
    "dave": "import os\nos._exit(3)",
    "eve": WRONG + "\nimport fmnist_lab.checks as c\nc.run_check = lambda i, *a: c.CheckResult(i, 't', 'passed', 'ok')",
    "frank": RIGHT + "\nimport torch\nhog = torch.ones(3 * 1024**3 // 4)",  # 3 GB, over the 2 GB cap
}
EXPECTED = {
    "alice": ("passed", "9 cases match"),
    "bob": ("failed", "hint:"),
    "carol": ("error", "10 s timeout"),
    "dave": ("error", "the kernel died"),
    "eve": ("error", "tampering: fmnist_lab.checks.run_check was replaced"),
    "frank": ("passed", "9 cases match"),  # the cell that hit the cap failed; the answer was defined before it
    "grace": ("error", "not a readable Jupyter notebook"),
    "heidi": ("error", "this notebook is for lesson 05, not lesson 02"),
}


def digests(folder: Path) -> dict[str, str]:
    """Every file below a folder with its sha256: what must be byte-for-byte the same after grading."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in folder.rglob("*")
    }


@pytest.fixture
def classroom(tmp_path: Path) -> Path:
    """A class folder: notebooks named by learner, one learner's folder, a broken file, another lesson's notebook."""
    folder = tmp_path / "class"
    folder.mkdir()
    for name, answer in CLASS.items():
        path = folder / name / "02_plain_cnn.ipynb" if name == "bob" else folder / f"{name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        nbformat.write(lesson02(answer), path)
    (folder / "grace.ipynb").write_text("{ not a notebook", encoding="utf-8")
    other = lesson02(RIGHT, check_source='check("5.1", accuracy)', check_id="other-lesson")
    nbformat.write(other, folder / "heidi.ipynb")
    return folder


@pytest.mark.process
def test_a_class_is_graded_right_and_left_untouched(classroom, tmp_path):
    before = digests(classroom)
    out = tmp_path / "grades.csv"
    args = ("grade", str(classroom), "--lesson", "02", "--out", str(out), "--jobs", "2", "--timeout", "10")
    result = run_cli(*args, "--memory", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert digests(classroom) == before  # every submission byte for byte, and nothing written beside them
    with out.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0])[:3] == ["name", "file", "exercise 2.1"] and "points" in rows[0] and "wall_seconds" in rows[0]
    assert sorted(row["name"] for row in rows) == sorted(EXPECTED)
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    messages = {s["name"]: s["exercises"][0]["message"] + s["note"] for s in report["submissions"]}
    for row in rows:
        status, fragment = EXPECTED[row["name"]]
        assert row["exercise 2.1"] == status, (row["name"], messages[row["name"]])
        assert fragment in messages[row["name"]], (row["name"], messages[row["name"]])
        assert row["total"] == "4" and row["points"] == str(int(status == "passed"))
    summary = result.stdout.splitlines()
    assert summary[0].split() == ["exercise", "passed", "most", "common", "failure"]
    assert summary[1].startswith("2.1") and "2/8 (25%)" in summary[1]
    assert f"wrote {out}" in result.stdout
    assert_one_line_error(run_cli(*args), f"{out} exists", "--force")


def test_submissions_are_found_and_named_by_file_or_folder(classroom):
    found = {s.name: s for s in find_submissions([classroom, classroom / "missing.ipynb"], "02")}
    assert set(found) == {*EXPECTED, "missing"}
    assert found["bob"].path == classroom / "bob" / "02_plain_cnn.ipynb"
    assert found["missing"].path is None and "no such file or folder" in found["missing"].problem
    assert [s.name for s in find_submissions([classroom / "bob"], "02")] == ["bob"]


@pytest.mark.process
def test_bad_input_is_one_line(tmp_path, classroom):
    out = str(tmp_path / "grades.csv")
    cases = [
        (("grade", "--lesson", "02", "--out", out), "no submissions"),
        (("grade", str(classroom), "--lesson", "42", "--out", out), "--lesson 42: no such lesson"),
        (("grade", str(classroom), "--lesson", "02", "--out", out, "--jobs", "0"), "--jobs 0: must be at least 1"),
        (("grade", str(classroom), "--lesson", "02", "--out", str(tmp_path / "no" / "g.csv")), "does not exist"),
        (("grade", str(classroom), "--lesson", "02", "--out", str(tmp_path / "g.txt")), "give a .csv file name"),
        (("grade", str(tmp_path / "empty"), "--lesson", "02", "--out", out), "no notebooks to grade"),
    ]
    (tmp_path / "empty").mkdir()
    for args, fragment in cases:
        assert_one_line_error(run_cli(*args), fragment)
    assert not (tmp_path / "grades.csv").exists()
    assert lesson_exercises("3") == lesson_exercises("03") == ["3.1", "3.2", "3.3", "3.4"]
