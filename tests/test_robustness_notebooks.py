"""Issue 11 for the notebook tools: nothing a user wrote is ever lost, and every bad input is one line.

build-lessons keeps a lesson edited by hand (or replaces it with --force, after a copy), validates every
solution before it writes anything, and writes each file atomically; a near-miss solution marker is an error,
not a leaked solution; the checker kills a kernel that ignores the interrupt, survives a notebook that kills
its parent or its process group, and earns nothing from a forged check log or a wrecked package. What the user
sees is asserted: exit code 2 and one line on stderr, no traceback, no partial or temporary file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, assert_one_line_error, run_cli
from test_notebooks import check_json, digest, notebook, write

from fmnist_lab import files
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.notebooks import MANIFEST_NAME, exercise_cells, make_lesson

POSIX_ONLY = pytest.mark.skipif(os.name != "posix", reason="process groups and getppid() are POSIX")
CHANGED = 'def triple(x):\n    """Three times x."""\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION'


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an atomic write would leave behind if it went wrong."""
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def build(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """`fmnist-lab build-lessons` on tmp_path/solutions into tmp_path/lessons, run from tmp_path."""
    return run_cli(
        "build-lessons",
        "--solutions",
        str(tmp_path / "solutions"),
        "--lessons",
        str(tmp_path / "lessons"),
        *extra,
        cwd=tmp_path,
    )


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A course folder whose lesson build-lessons has just written: tmp_path/lessons/98_demo.ipynb."""
    write(notebook(), tmp_path / "solutions" / "98_demo.ipynb")
    assert build(tmp_path).returncode == 0
    return tmp_path / "lessons" / "98_demo.ipynb"


# 1. build-lessons never overwrites a lesson edited by hand, and writes nothing until everything is valid.


@pytest.mark.process
def test_an_edited_lesson_is_kept_and_named_and_nothing_is_written(built):
    root = built.parent.parent
    built.write_text(built.read_text().replace("# YOUR CODE HERE", "return 2 * x  # my answer"))
    solution = root / "solutions" / "98_demo.ipynb"
    nb = nbformat.read(solution, as_version=4)
    nb.cells[2].metadata["execution"] = {"iopub.status.busy": "2026-11-29T15:55:04Z"}  # a stamp to strip
    write(nb, solution)
    before = {path: digest(path) for path in (built, solution)}
    line = assert_one_line_error(
        build(root),
        f"{Path('lessons/98_demo.ipynb')} was edited since build-lessons wrote it",
        "your version is kept",
        "rerun with --force",
        ".bak-",
    )
    assert "nothing was written" in line
    assert {path: digest(path) for path in before} == before  # neither the lesson nor the solution was touched
    assert not list(built.parent.glob("*.bak-*")) and not leftovers(root)


@pytest.mark.process
def test_force_keeps_a_dated_copy_of_the_edited_lesson_then_replaces_it(built):
    root = built.parent.parent
    built.write_text(built.read_text().replace("# YOUR CODE HERE", "return 2 * x  # my answer"))
    mine = built.read_bytes()
    result = build(root, "--force")
    assert result.returncode == 0, result.stderr
    copies = list(built.parent.glob("98_demo.ipynb.bak-*"))
    assert len(copies) == 1 and re.fullmatch(r"98_demo\.ipynb\.bak-\d{8}-\d{6}", copies[0].name)
    assert copies[0].read_bytes() == mine  # the learner's work, byte for byte
    assert copies[0].name in result.stdout  # and the command says where it is
    assert "# YOUR CODE HERE" in built.read_text()
    assert build(root).returncode == 0  # the lesson is build-lessons' own again: no complaint


@pytest.mark.process
def test_a_lesson_build_lessons_wrote_follows_its_changed_solution(built):
    root = built.parent.parent
    write(notebook(triple=CHANGED), root / "solutions" / "98_demo.ipynb")
    result = build(root)
    assert result.returncode == 0, result.stderr
    assert "98_demo.ipynb" in result.stdout and "Three times x." in built.read_text()
    assert not list(built.parent.glob("*.bak-*"))


@pytest.mark.process
def test_with_no_record_only_a_lesson_identical_to_the_generated_one_counts_as_generated(built):
    tmp_path, lesson, lessons = built.parent.parent, built, built.parent
    (lessons / MANIFEST_NAME).unlink()  # a checkout from before build-lessons kept records
    result = build(tmp_path)
    assert result.returncode == 0 and "all up to date" in result.stdout, result.stderr
    assert json.loads((lessons / MANIFEST_NAME).read_text())["lessons"] == {"98_demo.ipynb": digest(lesson)}
    for record in (None, "{junk"):  # no record, or one nobody can read: a differing lesson is someone's edit
        (lessons / MANIFEST_NAME).unlink(missing_ok=True)
        if record is not None:
            (lessons / MANIFEST_NAME).write_text(record)
        lesson.write_text(lesson.read_text().replace("# YOUR CODE HERE", "# mine"))
        assert_one_line_error(build(tmp_path), "was edited since build-lessons wrote it")
        assert "# mine" in lesson.read_text()


@pytest.mark.process
def test_a_broken_later_solution_stops_the_build_before_any_lesson_is_written(built):
    root = built.parent.parent
    write(notebook(triple=CHANGED), root / "solutions" / "98_demo.ipynb")  # its lesson would change...
    write(
        notebook(double="def double(x):\n    #### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        root / "solutions" / "99_broken.ipynb",
    )  # ...but a later solution is broken
    before = digest(built)
    assert_one_line_error(build(root), "99_broken.ipynb: cell 3, line 2", "`#### BEGIN SOLUTION`")
    assert digest(built) == before and not (built.parent / "99_broken.ipynb").exists()
    assert not leftovers(root)


@pytest.mark.process
@pytest.mark.parametrize("flag", ["--lessons", "--solutions", "solution --solutions"])
def test_a_file_where_a_folder_belongs_is_one_line(tmp_path, flag):
    write(notebook(), tmp_path / "solutions" / "98_demo.ipynb")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    folders = {"--solutions": str(tmp_path / "solutions"), "--lessons": str(tmp_path / "lessons")}
    if flag == "solution --solutions":
        flag, result = "--solutions", run_cli("solution", "98.1", "--solutions", str(a_file))
    else:
        result = run_cli(
            "build-lessons", *(arg for name, folder in {**folders, flag: str(a_file)}.items() for arg in (name, folder))
        )
    assert_one_line_error(result, f"{flag} {a_file} is a file", "give the folder")
    assert a_file.read_text() == "not a folder" and not (tmp_path / "lessons").exists()


# Every write is atomic: an error, Ctrl-C or SIGTERM leaves the old file and no temporary one.


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure):
    target = tmp_path / "lesson.ipynb"
    target.write_text("the old text")

    def fail(descriptor: int) -> None:
        raise failure

    monkeypatch.setattr(files.os, "fsync", fail)
    with pytest.raises(type(failure)):
        files.atomic_write_text(target, "the new text")
    assert target.read_text() == "the old text" and not leftovers(tmp_path)


@POSIX_ONLY
def test_sigterm_during_a_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "lesson.ipynb"
    target.write_text("the old text")
    script = (
        "import os, signal, sys\nfrom fmnist_lab import files\n"
        "os.fsync = lambda descriptor: os.kill(os.getpid(), signal.SIGTERM)\n"
        "files.atomic_write_text(sys.argv[1], 'the new text')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert target.read_text() == "the old text" and not leftovers(tmp_path)


def test_an_atomic_write_keeps_permissions_and_a_backup_never_overwrites_another(tmp_path):
    target = tmp_path / "lesson.ipynb"
    target.write_text("v1")
    target.chmod(0o640)
    files.atomic_write_text(target, "v2")
    assert target.read_text() == "v2" and (os.name != "posix" or target.stat().st_mode & 0o777 == 0o640)
    first, second = files.backup(target), files.backup(target)
    assert first != second and first.read_text() == second.read_text() == "v2"
    assert first.parent == second.parent == tmp_path and first.name.startswith("lesson.ipynb.bak-")


@pytest.mark.process
def test_a_failed_lesson_write_is_one_line_and_leaves_the_lesson(built, monkeypatch):
    from fmnist_lab import notebooks

    root = built.parent.parent
    write(notebook(triple=CHANGED), root / "solutions" / "98_demo.ipynb")
    before = digest(built)

    def full_disk(path: Path, text: str) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(notebooks, "atomic_write_text", full_disk)
    with pytest.raises(
        FmnistLabError, match="could not write .*98_demo.ipynb \\(No space left on device\\); it is unchanged"
    ):
        notebooks.build_lessons(root / "solutions", root / "lessons")
    assert digest(built) == before


# 2. A solution marker that is slightly off is an error naming the notebook, the cell and the line.

NEAR_MISSES = {
    "four hashes": (
        "def double(x):\n    #### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        "cell 3, line 2: `#### BEGIN SOLUTION` is not a solution marker",
    ),
    "a note after it": (
        "def double(x):\n    ### BEGIN SOLUTION (exercise 98.1)\n    return 2 * x\n    ### END SOLUTION",
        "line 2: `### BEGIN SOLUTION (exercise 98.1)` is not a solution",
    ),
    "lower case": (
        "def double(x):\n    ### begin solution\n    return 2 * x\n    ### end solution",
        "line 2: `### begin solution` is not a solution marker",
    ),
    "END without BEGIN": (
        "def double(x):\n    return 2 * x\n    ### END SOLUTION",
        "cell 3, line 3: `### END SOLUTION` without a `### BEGIN SOLUTION` before it",
    ),
    "nested": (
        "def double(x):\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 2 * x\n"
        "    ### END SOLUTION\n    ### END SOLUTION",
        "line 3: `### BEGIN SOLUTION` inside the block opened on line 2",
    ),
}


@pytest.mark.parametrize("name", NEAR_MISSES)
def test_a_near_miss_marker_is_refused_with_the_notebook_cell_and_line(name):
    source, message = NEAR_MISSES[name]
    with pytest.raises(
        FmnistLabError, match=re.escape(f"98_demo.ipynb: {message}") if "cell" in message else re.escape(message)
    ):
        make_lesson(notebook(double=source), "98_demo.ipynb")


def test_a_marker_in_a_markdown_cell_is_refused():
    nb = notebook()
    nb.cells[0].source = "# Lesson 98\n### BEGIN SOLUTION\nthe answer is 42\n### END SOLUTION"
    with pytest.raises(FmnistLabError, match="cell 0, line 2: .* in a markdown cell: solution markers only work"):
        make_lesson(nb, "98_demo.ipynb")


@pytest.mark.process
def test_build_lessons_refuses_a_near_miss_and_writes_no_lesson(tmp_path):
    write(notebook(double=NEAR_MISSES["four hashes"][0]), tmp_path / "solutions" / "98_demo.ipynb")
    assert_one_line_error(build(tmp_path), "98_demo.ipynb: cell 3, line 2", "write `### BEGIN SOLUTION`")
    assert not (tmp_path / "lessons").exists()


def solution_lines(cell_source: str) -> set[str]:
    """The lines of a cell's solution blocks that appear nowhere else in the cell (so a lesson can't hold them)."""
    outside, inside, block = set(), set(), False
    for line in cell_source.splitlines():
        marker = line.strip()
        if marker in ("### BEGIN SOLUTION", "### END SOLUTION"):
            block = marker == "### BEGIN SOLUTION"
        elif marker:
            (inside if block else outside).add(marker)
    return inside - outside


@pytest.mark.parametrize("path", sorted((REPO / "solutions").glob("*.ipynb")), ids=lambda p: p.stem)
def test_no_lesson_holds_any_line_of_its_solutions(path):
    solution = nbformat.read(path, as_version=4)
    lesson = nbformat.read(REPO / "lessons" / path.name, as_version=4)
    exercises = exercise_cells(solution, path)
    assert exercises
    for index, exercise_id in exercises.items():
        matching = lesson.cells[index]  # build-lessons keeps every cell in its place
        assert matching.get("id") == solution.cells[index].get("id") and matching.cell_type == "code"
        assert solution_lines(solution.cells[index].source), exercise_id
        in_lesson = {line.strip() for line in matching.source.splitlines()}
        leaked = solution_lines(solution.cells[index].source) & in_lesson
        assert not leaked, f"exercise {exercise_id}: the lesson holds solution lines {sorted(leaked)}"
        assert f'raise NotImplementedError("Exercise {exercise_id}: ' in matching.source


# 3. The checker stops what won't stop, and survives a notebook that kills its parent or its group.


def check_isolated(path: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """`fmnist-lab check --json` in a session of its own (a notebook that kills its group can't reach pytest),
    with its own temporary folder, which must be empty afterwards."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    before = digest(path)
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_lab", "check", str(path), "--json", *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        start_new_session=True,
        env={
            # an earlier torch._dynamo import in pytest sets TORCHINDUCTOR_CACHE_DIR; unset, torch's cache goes to TMPDIR
            **{key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"},
            **dict.fromkeys(("TMPDIR", "TEMP", "TMP"), str(temporary)),
        },
    )
    assert digest(path) == before, "the learner's notebook was modified"
    assert list(temporary.iterdir()) == [], "the checker left its temporary copy behind"
    assert "Traceback" not in result.stderr, result.stderr
    rows = {row["exercise"]: row for row in json.loads(result.stdout)} if result.stdout.strip() else {}
    return result, rows


STUBBORN = {
    "catches KeyboardInterrupt": (
        "import time\ndef double(x):\n    return 2 * x\nwhile True:\n    try:\n"
        "        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass"
    ),
    "ignores SIGINT": (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ndef double(x):\n"
        "    return 2 * x\nwhile True:\n    pass"
    ),
}


@pytest.mark.process
@POSIX_ONLY
@pytest.mark.parametrize("name", STUBBORN)
def test_a_cell_that_will_not_be_interrupted_gets_its_kernel_killed(tmp_path, name):
    path = write(notebook(double=STUBBORN[name]), tmp_path / "mine.ipynb")
    result, rows = check_isolated(path, tmp_path, "--timeout", "5")
    assert result.returncode == 1 and list(rows) == ["98.1", "98.2"], result.stderr
    assert rows["98.1"]["status"] == "error"
    assert rows["98.1"]["message"].startswith("cell 4 (`") and "5 s timeout" in rows["98.1"]["message"]
    assert "did not stop when interrupted" in rows["98.1"]["message"]
    assert rows["98.2"]["status"] == "error" and "5 s timeout" in rows["98.2"]["message"]


KILLERS = {
    "its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "its process group": "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)",
}


@pytest.mark.process
@POSIX_ONLY
@pytest.mark.parametrize("name", KILLERS)
def test_a_notebook_that_kills_its_parent_or_group_still_gets_a_report(tmp_path, name):
    path = write(notebook(double=KILLERS[name]), tmp_path / "mine.ipynb")
    result, rows = check_isolated(path, tmp_path, "--timeout", "20")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert list(rows) == ["98.1", "98.2"] and rows["98.1"]["status"] == "error"
    assert rows["98.2"]["status"] in ("passed", "error")  # the kernel may or may not outlive its parent a moment


# 4. Bad notebooks and a tampered check log: one line, or a report, never a crash.


@pytest.mark.process
@pytest.mark.parametrize("source,fragment", [(5, "has a `source` that is int, not text"), (None, "has no `source`")])
@pytest.mark.parametrize("command", ["check", "build-lessons"])
def test_a_cell_with_a_bad_source_is_one_line_naming_the_cell(tmp_path, source, fragment, command):
    nb = json.loads(nbformat.writes(notebook()))
    if source is None:
        del nb["cells"][3]["source"]
    else:
        nb["cells"][3]["source"] = source
    path = tmp_path / "solutions" / "98_demo.ipynb"
    path.parent.mkdir()
    path.write_text(json.dumps(nb))
    result = run_cli("check", str(path)) if command == "check" else build(tmp_path)
    assert_one_line_error(result, "98_demo.ipynb: cells[3] (cell 4)", fragment)
    assert not (tmp_path / "lessons").exists()


@pytest.mark.process
def test_a_forged_check_log_earns_nothing(tmp_path):
    forged = (
        'import os\nwith open(os.environ.get("FMNIST_LAB_CHECK_LOG") or "checks.jsonl", "a") as log:\n'
        '    log.write("not json\\n[1, 2]\\n{\\"exercise\\": \\"98.1\\", \\"title\\": \\"double\\", '
        '\\"status\\": \\"passed\\", \\"message\\": \\"ok\\"}\\n{\\"exercise\\": \\"98.1\\", \\"tit")\n'
        "def double(x):\n    return 3 * x"
    )
    path = write(notebook(double=forged), tmp_path / "mine.ipynb")
    code, rows = check_json(path)
    assert code == 1 and list(rows) == ["98.1", "98.2"]
    assert rows["98.1"]["status"] == "failed" and rows["98.1"]["message"].startswith("expected double(3) = 6, got 9")
    assert rows["98.2"]["status"] == "passed"


@pytest.mark.parametrize(
    "tamper",
    [
        "import shutil, fmnist_lab\nshutil.rmtree(os.path.dirname(fmnist_lab.__file__))",
        "import fmnist_lab.checks as c\nopen(c.__file__, 'w').write('garbage(')",
    ],
)
@pytest.mark.process
def test_a_notebook_that_wrecks_the_checkers_package_still_gets_a_report(tmp_path, tamper):
    nb = notebook()
    nb.cells.insert(2, nbformat.v4.new_code_cell(f"import os\n{tamper}"))  # before the checks: later cells never run
    path = write(nb, tmp_path / "mine.ipynb")
    code, rows = check_json(path)
    assert code == 1 and list(rows) == ["98.1", "98.2"]
    for row in rows.values():
        assert row["status"] == "error" and row["message"].startswith("tampering: the run changed fmnist_lab/")
        assert "(private copy)" in row["message"]
