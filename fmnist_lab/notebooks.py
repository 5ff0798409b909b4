"""Notebook tooling: generate `lessons/` from `solutions/`, print a reference solution, check a notebook.

In `solutions/`, solution code sits between `### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader's
markers) inside an exercise cell; the next cell that calls `check("N.M", …)` names the exercise.
A lesson is the solution notebook with each block replaced by `# YOUR CODE HERE` and
`raise NotImplementedError("Exercise N.M: <title>")`, and with the outputs of exercise and check
cells cleared; every other cell keeps its outputs, so readers and the site see the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

from fmnist_lab.checks import EXERCISES, CheckResult
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.paths import course_dir

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\d+\.\d+)["']""")
NB_VERSION = 4


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook, turning an unreadable file into a one-line error."""
    if not path.is_file():
        raise FmnistLabError(f"{path}: no such notebook")
    try:
        return nbformat.read(path, as_version=NB_VERSION)
    except Exception as exc:  # noqa: BLE001 - JSON, schema and encoding errors alike
        raise FmnistLabError(f"{path}: not a readable Jupyter notebook ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def write_text(nb: nbformat.NotebookNode) -> str:
    """The notebook as the exact text we store (stable, so `--check` can compare bytes)."""
    return nbformat.writes(nb, version=NB_VERSION) + "\n"


def check_ids(source: str) -> list[str]:
    """The exercise ids a cell's `check("N.M", …)` calls name."""
    return CHECK_CALL.findall(source)


def exercise_cells(nb: nbformat.NotebookNode, path: Path | str = "notebook") -> dict[int, str]:
    """Map each exercise cell's index to its exercise id (from the next check call)."""
    found: dict[int, str] = {}
    pending: int | None = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        has_block = BEGIN in cell.source
        if has_block and END not in cell.source:
            raise FmnistLabError(f"{path}: cell {index} has `{BEGIN}` without `{END}`")
        ids = check_ids(cell.source)
        if ids and pending is not None:
            found[pending] = ids[0]
            pending = None
        if has_block:
            if pending is not None:
                raise FmnistLabError(f"{path}: exercise cell {pending} has no check cell after it")
            pending = index
    if pending is not None:
        raise FmnistLabError(f"{path}: exercise cell {pending} has no check cell after it")
    return found


def _stub(source: str, exercise_id: str) -> str:
    """Replace every solution block of a cell by the placeholder, keeping its indentation."""
    title = EXERCISES[exercise_id].title if exercise_id in EXERCISES else "exercise"
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f'{indent}raise NotImplementedError("Exercise {exercise_id}: {title}")')
            inside = True
        elif stripped == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _clear(cell: nbformat.NotebookNode) -> None:
    """Remove a code cell's outputs and execution count."""
    cell.outputs = []
    cell.execution_count = None


def make_lesson(solution: nbformat.NotebookNode, path: Path | str = "notebook") -> nbformat.NotebookNode:
    """The learner's notebook generated from a solution notebook."""
    lesson = nbformat.from_dict(json.loads(json.dumps(solution)))
    exercises = exercise_cells(lesson, path)
    for index, cell in enumerate(lesson.cells):
        if cell.cell_type != "code":
            continue
        if index in exercises:
            cell.source = _stub(cell.source, exercises[index])
            _clear(cell)
        elif check_ids(cell.source):
            _clear(cell)
    return lesson


def build_lessons(solutions: Path, lessons: Path, check_only: bool = False) -> list[Path]:
    """Write `lessons/` from `solutions/`; with `check_only`, write nothing and return the stale lessons."""
    sources = sorted(solutions.glob("*.ipynb"))
    if not sources:
        raise FmnistLabError(f"{solutions}: no solution notebooks (*.ipynb) found")
    differing = []
    for source in sources:
        wanted = write_text(make_lesson(read_notebook(source), source))
        target = lessons / source.name
        if not target.is_file() or target.read_text(encoding="utf-8") != wanted:
            differing.append(target)
            if not check_only:
                lessons.mkdir(parents=True, exist_ok=True)
                target.write_text(wanted, encoding="utf-8")
    if check_only:
        expected = {s.name for s in sources}
        differing += [extra for extra in sorted(lessons.glob("*.ipynb")) if extra.name not in expected]
    return differing


def solution_code(exercise_id: str, solutions: Path) -> tuple[Path, str]:
    """The reference code of one exercise: the dedented lines between its BEGIN and END markers."""
    for path in sorted(solutions.glob("*.ipynb")):
        nb = read_notebook(path)
        for index, found_id in exercise_cells(nb, path).items():
            if found_id == exercise_id:
                blocks, inside, current = [], False, []
                for line in nb.cells[index].source.splitlines():
                    if line.strip() == BEGIN:
                        inside, current = True, []
                    elif line.strip() == END:
                        inside = False
                        blocks.append(textwrap.dedent("\n".join(current)))
                    elif inside:
                        current.append(line)
                return path, "\n\n".join(blocks)
    known = ", ".join(sorted(EXERCISES, key=lambda k: tuple(map(int, k.split(".")))))
    raise FmnistLabError(f"no exercise {exercise_id!r} in {solutions}; known exercises: {known}")


@dataclass
class NotebookRun:
    """What happened when a notebook ran: check results, cell errors, and how the run ended."""

    results: list[CheckResult]
    errors: dict[int, str]
    stopped: str | None


def _cell_error(cell: nbformat.NotebookNode, timeout: int) -> str | None:
    """The first error a cell's outputs hold, as `Name: message` (an interrupt means it timed out)."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            if output.get("ename") == "KeyboardInterrupt":
                return f"ran past the {timeout} s timeout (an endless loop?) and was interrupted"
            lines = (output.get("evalue") or "").strip().splitlines()
            return f"raised {output.get('ename')}: {lines[0] if lines else ''}".rstrip(": ")
    return None


def execute(path: Path, timeout: int) -> NotebookRun:
    """Run a copy of a notebook in a fresh kernel (continuing past errors) and collect its checks."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = read_notebook(path)
    with tempfile.TemporaryDirectory(prefix="fmnist-lab-check-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        log = Path(tmp) / "checks.jsonl"
        log.touch()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                interrupt_on_timeout=True, resources={"metadata": {"path": tmp}})
        previous = os.environ.get("FMNIST_LAB_CHECK_LOG")
        os.environ["FMNIST_LAB_CHECK_LOG"] = str(log)
        stopped = None
        try:
            client.execute(stderr=subprocess.DEVNULL)  # the kernel's own log lines are noise here
        except DeadKernelError:
            stopped = "the kernel died (crashed or was killed)"
        except CellTimeoutError:
            stopped = f"a cell ran longer than the {timeout} s timeout"
        except Exception as exc:  # noqa: BLE001 - report, never raise
            stopped = f"the run stopped: {type(exc).__name__}: {exc}"
        finally:
            if previous is None:
                os.environ.pop("FMNIST_LAB_CHECK_LOG", None)
            else:
                os.environ["FMNIST_LAB_CHECK_LOG"] = previous
        results = [CheckResult(**json.loads(line)) for line in log.read_text().splitlines() if line]
    errors = {i: error for i, cell in enumerate(nb.cells)
              if cell.cell_type == "code" and (error := _cell_error(cell, timeout))}
    return NotebookRun(results, errors, stopped)


def check_notebook(path: Path, timeout: int = 600) -> list[CheckResult]:
    """One verdict per exercise of the notebook, in order: passed, failed, not attempted or error."""
    nb = read_notebook(path)
    wanted: list[tuple[str, int]] = []  # (exercise id, index of its check cell)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            wanted += [(exercise_id, index) for exercise_id in check_ids(cell.source)
                       if exercise_id not in {w for w, _ in wanted}]
    if not wanted:
        raise FmnistLabError(f"{path}: no exercise checks (check(\"N.M\", …) calls) in this notebook")
    run = execute(path, timeout)
    by_id = {}
    for result in run.results:
        by_id[result.exercise] = result  # the last run of a check counts
    verdicts, region_start = [], 0
    for exercise_id, check_index in wanted:
        title = EXERCISES[exercise_id].title if exercise_id in EXERCISES else "unknown exercise"
        region = [i for i in run.errors if region_start <= i <= check_index]
        region_start = check_index + 1
        if exercise_id in by_id:
            verdicts.append(by_id[exercise_id])
        elif any(run.errors[i].startswith("raised NotImplementedError: Exercise ") for i in region):
            verdicts.append(CheckResult(exercise_id, title, "not attempted",
                                        "not attempted yet: the exercise still raises NotImplementedError"))
        elif region:
            first = region[0]
            opening = nb.cells[first].source.strip().splitlines()[0][:40]
            verdicts.append(CheckResult(exercise_id, title, "error",
                                        f"cell {first + 1} (`{opening}`) {run.errors[first]}"))
        else:
            reason = run.stopped or "the check cell did not run"
            verdicts.append(CheckResult(exercise_id, title, "error", f"not checked: {reason}"))
    return verdicts
