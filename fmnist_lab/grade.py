"""`fmnist-lab grade`: check every learner's notebook for one lesson, in parallel, into a gradebook.

Each submission (a notebook, or a folder of them; the learner's name is the file's or the folder's) runs
through `fmnist_lab.checker` on a copy, in a fresh kernel and a temporary folder of its own, with a
private copy of the package and timeouts per cell and per notebook and a memory cap. Every submission
is checked against one snapshot of the package and the pristine check cells taken when grading starts, so
what one submission does can't change how the next is graded. An unreadable, broken, endless or crashing
submission gets a row that says so; submission files are only read, and nothing is written beside them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import io
import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fmnist_lab.checker import Limits, check_ids_of, lesson_of, plan_checks, pristine_checks, private_package, run_plans
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.files import atomic_write_text
from fmnist_lab.notebooks import read_notebook

SKIPPED_FOLDERS = (".ipynb_checkpoints", "__pycache__", "__MACOSX")


@dataclass(frozen=True)
class Submission:
    """One learner's work: their name and notebook (None with `problem`: why there is nothing to run)."""

    name: str
    path: Path | None
    problem: str | None = None


@dataclass
class Row:
    """One submission's line of the gradebook, with every message."""

    name: str
    file: str
    statuses: dict[str, str]
    messages: dict[str, str]
    points: int
    total: int
    wall_seconds: float
    note: str = ""
    titles: dict[str, str] = field(default_factory=dict)


def lesson_exercises(lesson: str) -> list[str]:
    """The exercise ids of a lesson (`3` or `03`), in order; an unknown lesson is one line naming the known ones."""
    pristine = pristine_checks()
    known = sorted({int(lesson_of(key)) for key in pristine})
    number = str(int(lesson)) if lesson.isdigit() else lesson
    exercises = sorted((key for key in pristine if lesson_of(key) == number), key=lambda k: int(k.split(".")[1]))
    if not exercises:
        raise FmnistLabError(
            f"--lesson {lesson}: no such lesson; the course's lessons are {', '.join(f'{n:02d}' for n in known)}"
        )
    return exercises


def _notebooks_in(folder: Path) -> list[Path]:
    """The notebooks of a folder and its subfolders, without Jupyter's checkpoints."""
    return sorted(path for path in folder.rglob("*.ipynb") if not any(part in SKIPPED_FOLDERS for part in path.parts))


def _pick(notebooks: list[Path], lesson: str) -> Path:
    """A learner's notebook for the lesson among theirs: the one named `NN_…` for it, else the first."""
    prefix = f"{int(lesson):02d}_"
    return next((path for path in notebooks if path.name.startswith(prefix)), notebooks[0])


def _is_lesson_name(path: Path) -> bool:
    """True for a file named like a lesson (`03_batch_norm.ipynb`): its learner is the folder it is in."""
    number, _, rest = path.name.partition("_")
    return number.isdigit() and bool(rest)


def _learner(path: Path) -> str:
    """The learner's name for a notebook: its file name, or its folder's when the file is named like a lesson."""
    return path.parent.resolve().name if _is_lesson_name(path) else path.stem


def find_submissions(arguments: list[Path], lesson: str) -> list[Submission]:
    """Each argument is a notebook, a learner's folder, or a folder of learners' notebooks and folders."""
    found = []
    for argument in arguments:
        if argument.is_file():
            found.append(Submission(_learner(argument), argument))
            continue
        if not argument.exists():
            found.append(Submission(argument.stem, None, f"{argument}: no such file or folder"))
            continue
        entries = sorted(p for p in argument.iterdir() if p.name not in SKIPPED_FOLDERS)
        notebooks = [p for p in entries if p.suffix == ".ipynb" and p.is_file()]
        lesson_named = [p for p in notebooks if _is_lesson_name(p)]
        if lesson_named:  # a learner's folder
            found.append(Submission(argument.resolve().name, _pick(lesson_named, lesson)))
        found += [Submission(p.stem, p) for p in notebooks if p not in lesson_named]
        learners = [p for p in entries if p.is_dir() and _notebooks_in(p)]
        found += [Submission(folder.name, _pick(_notebooks_in(folder), lesson)) for folder in learners]
        if not notebooks and not learners:
            found.append(Submission(argument.resolve().name, None, f"{argument}: no notebook (*.ipynb) in it"))
    return found


def _row(submission: Submission, exercises: list[str], results: list, note: str, started: float) -> Row:
    """A gradebook row from the verdicts (every exercise of the lesson, in order)."""
    by_id = {result.exercise: result for result in results}
    statuses = {key: by_id[key].status if key in by_id else "error" for key in exercises}
    messages = {key: by_id[key].message if key in by_id else note for key in exercises}
    titles = {key: by_id[key].title for key in exercises if key in by_id}
    points = sum(status == "passed" for status in statuses.values())
    file = str(submission.path) if submission.path else ""
    wall = round(time.monotonic() - started, 1)
    return Row(submission.name, file, statuses, messages, points, len(exercises), wall, note, titles)


def grade_submission(
    submission: Submission, lesson: str, limits: Limits, package: Path, pristine: dict[str, dict]
) -> Row:
    """Grade one submission against the snapshot `package` and `pristine` check cells (never raises)."""
    started = time.monotonic()
    exercises = sorted((k for k in pristine if lesson_of(k) == lesson), key=lambda k: int(k.split(".")[1]))
    if submission.path is None:
        return _row(submission, exercises, [], submission.problem or "nothing to grade", started)
    try:
        nb = read_notebook(submission.path)
        named = {lesson_of(key) for key in check_ids_of(nb)}
        cell_ids = {cell.get("id") for cell in nb.cells}
        own = any(pristine[key]["check_cell"].get("id") in cell_ids for key in exercises)
        if named and lesson not in named and not own:
            others = ", ".join(f"{int(n):02d}" for n in sorted(named, key=int) if n.isdigit()) or "another"
            note = f"this notebook is for lesson {others}, not lesson {int(lesson):02d}: nothing was run"
            return _row(submission, exercises, [], note, started)
        run_nb, plans = plan_checks(nb, {lesson}, keep_unknown=False, pristine=pristine)
        results = run_plans(run_nb, plans, submission.path, limits, package_source=package)
        return _row(submission, exercises, results, "", started)
    except FmnistLabError as exc:
        return _row(submission, exercises, [], str(exc), started)
    except Exception as exc:  # noqa: BLE001 - one submission never stops the run
        return _row(submission, exercises, [], f"grading failed: {type(exc).__name__}: {exc}", started)


def grade(
    submissions: list[Submission], lesson: str, limits: Limits, jobs: int, progress: bool = True
) -> tuple[list[str], list[Row]]:
    """Grade every submission over `jobs` worker processes; rows come back in the submissions' order."""
    from tqdm import tqdm

    exercises = lesson_exercises(lesson)
    number = lesson_of(exercises[0])
    pristine = pristine_checks()
    if limits.threads is None:  # parallel kernels share the cores: oversubscribed torch threads run many times slower
        limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // jobs))
    rows: dict[int, Row] = {}
    with tempfile.TemporaryDirectory(prefix="fmnist-lab-grade-") as tmp:
        package = private_package(Path(tmp))  # the snapshot every submission's private copy is made from
        context = multiprocessing.get_context("spawn")
        with (
            concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
            tqdm(total=len(submissions), unit="submission", disable=not progress, desc="grading") as bar,
        ):
            futures = {
                pool.submit(grade_submission, submission, number, limits, package, pristine): index
                for index, submission in enumerate(submissions)
            }
            for future in concurrent.futures.as_completed(futures):
                index = futures[future]
                try:
                    rows[index] = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died takes only its submission
                    note = f"grading failed: {type(exc).__name__}: {exc}"
                    rows[index] = _row(submissions[index], exercises, [], note, time.monotonic())
                bar.update()
    return exercises, [rows[index] for index in range(len(submissions))]


def csv_text(exercises: list[str], rows: list[Row]) -> str:
    """The gradebook: a header, one row per submission, one value per cell (UTF-8 when written)."""
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(
        ["name", "file", *(f"exercise {key}" for key in exercises), "points", "total", "wall_seconds", "note"]
    )
    for row in rows:
        writer.writerow(
            [
                row.name,
                row.file,
                *(row.statuses[key] for key in exercises),
                row.points,
                row.total,
                row.wall_seconds,
                row.note,
            ]
        )
    return stream.getvalue()


def json_text(lesson: str, exercises: list[str], rows: list[Row], limits: Limits) -> str:
    """Every submission with every message, and the summary, as JSON."""
    payload = {
        "lesson": lesson,
        "exercises": exercises,
        "limits": {"cell_seconds": limits.cell, "notebook_seconds": limits.notebook, "memory_gb": limits.memory_gb},
        "submissions": [
            {
                "name": row.name,
                "file": row.file,
                "points": row.points,
                "total": row.total,
                "wall_seconds": row.wall_seconds,
                "note": row.note,
                "exercises": [
                    {
                        "exercise": key,
                        "title": row.titles.get(key, ""),
                        "status": row.statuses[key],
                        "message": row.messages[key],
                    }
                    for key in exercises
                ],
            }
            for row in rows
        ],
        "summary": summary(exercises, rows),
    }
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"


def summary(exercises: list[str], rows: list[Row]) -> list[dict]:
    """Per exercise: how many passed, and the most common message of those that didn't."""
    found = []
    for key in exercises:
        passed = sum(row.statuses[key] == "passed" for row in rows)
        failures = collections.Counter(row.messages[key] for row in rows if row.statuses[key] != "passed")
        common = failures.most_common(1)
        found.append(
            {
                "exercise": key,
                "passed": passed,
                "of": len(rows),
                "most_common_failure": common[0][0] if common else "",
                "times": common[0][1] if common else 0,
            }
        )
    return found


def summary_table(exercises: list[str], rows: list[Row]) -> str:
    """The table printed at the end: per-exercise pass rates and the most common failure of each."""
    lines = [f"{'exercise':<10}{'passed':<14}most common failure"]
    for item in summary(exercises, rows):
        rate = f"{item['passed']}/{item['of']} ({item['passed'] / max(item['of'], 1):.0%})"
        failure = item["most_common_failure"]
        failure = (failure if len(failure) <= 90 else failure[:87] + "...") + (
            f"  (×{item['times']})" if item["times"] else ""
        )
        lines.append(f"{item['exercise']:<10}{rate:<14}{failure or '-'}")
    points = sum(row.points for row in rows)
    total = sum(row.total for row in rows)
    lines.append(f"{len(rows)} submissions, {points} of {total} exercises passed")
    return "\n".join(lines)


def refuse_output(out: Path, force: bool) -> Path:
    """The JSON path beside `out`; an output that exists (without --force) or can't be written is one line."""
    written = [out, out.with_suffix(".json")]
    if out.suffix.lower() != ".csv":
        raise FmnistLabError(f"--out {out}: give a .csv file name (the JSON with every message goes beside it)")
    for path in written:
        if path.is_dir():
            raise FmnistLabError(f"--out {out}: {path} is a folder: give a file name")
        if path.exists() and not force:
            raise FmnistLabError(f"--out {out}: {path} exists: choose another name, or pass --force to replace it")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise FmnistLabError(f"--out {out}: the folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK) or any(path.exists() and not os.access(path, os.W_OK) for path in written):
        raise FmnistLabError(f"--out {out}: can't write in {folder} (permission denied): choose another place")
    return written[1]


def write_outputs(out: Path, exercises: list[str], rows: list[Row], lesson: str, limits: Limits) -> Path:
    """Write the CSV and the JSON beside it (atomically); return the JSON's path."""
    report = out.with_suffix(".json")
    try:
        atomic_write_text(out, csv_text(exercises, rows))
        atomic_write_text(report, json_text(lesson, exercises, rows, limits))
    except OSError as exc:
        raise FmnistLabError(f"could not write {out} ({exc.strerror or exc}): choose another --out") from None
    return report
