"""How fast `fmnist-lab grade` grades a class, and whether every grade is right, fakes included.

It generates 30 lesson-03 submissions with a known answer for every exercise from the solution
(solutions/03_batch_norm.ipynb) and the lesson (lessons/03_batch_norm.ipynb): correct, not attempted,
wrong (one classic mistake per exercise), a syntax error, an endless loop, a crash, and fakes (a forged
log and printed verdicts, a redefined `check`, a patched `run_check` or exercise check, edited or deleted
check cells, a forged verdict output, a rewritten package or reference). It grades them with
`fmnist_lab.grade` over `--jobs` workers and compares every status with the known one.
It reports submissions per minute, the share of statuses that are right, and the fakes that passed, with
the machine and the load average before and after (the machine is shared).
Prints the summary and writes benchmarks/results/grading.json.
Usage: python benchmarks/grading.py [--jobs N] [--timeout 120]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from machine import save

from fmnist_lab.checker import Limits
from fmnist_lab.grade import find_submissions, grade, summary_table
from fmnist_lab.notebooks import check_ids, exercise_cells

ROOT = Path(__file__).resolve().parent.parent
SOLUTION, LESSON = ROOT / "solutions" / "03_batch_norm.ipynb", ROOT / "lessons" / "03_batch_norm.ipynb"
EXERCISES = ("3.1", "3.2", "3.3", "3.4")
P, F, N, E = "passed", "failed", "not attempted", "error"

WRONG = {  # one classic mistake per exercise: (text in the solution's exercise cell, its wrong replacement)
    "3.1": ("unbiased=False, keepdim=True", "keepdim=True"),  # the unbiased variance
    "3.2": ("return self.bn_fc1(self.fc1(x))", "return self.fc1(x)"),  # BatchNorm1d built but never used
    "3.3": ("unbiased=True", "unbiased=False"),  # the biased variance in the running statistics
    "3.4": ("(x - running_mean.view(shape))", "(x - running_var.view(shape))"),  # mean and variance swapped
}
FAKE_LINES = "".join(f"print('✓ {key} matches the reference')\n" for key in EXERCISES)
FAKE_CELLS = {
    "forged log and printed verdicts": (
        "import json, os\n"
        "log = os.environ.get('FMNIST_LAB_CHECK_LOG') or 'checks.jsonl'\n"
        "with open(log, 'a') as stream:\n"
        + "".join(
            f"    stream.write(json.dumps({{'exercise': '{key}', 'title': 'x', 'status': 'passed', 'message': 'ok'}})"
            " + '\\n')\n"
            for key in EXERCISES
        )
        + FAKE_LINES
    ),
    "redefined check": f"def check(*args):\n    print('✓ ' + args[0] + ' matches the reference')\n{FAKE_LINES}",
    "patched run_check": (
        "import fmnist_lab.checks as c\nc.run_check = lambda i, *a: c.CheckResult(i, 'x', 'passed', 'ok')"
    ),
    "patched exercise checks": (
        "import dataclasses, fmnist_lab.checks as c\n"
        "for key in list(c.EXERCISES):\n"
        "    c.EXERCISES[key] = dataclasses.replace(c.EXERCISES[key], run=lambda *a: 'ok')"
    ),
    "forged verdict output": (
        "from IPython.display import publish_display_data\n"
        + "".join(
            "publish_display_data({'application/vnd.fmnist-lab.verdict+json': {'token': '0' * 32, "
            f"'exercise': '{key}', 'title': 'x', 'status': 'passed', 'message': 'ok'}}}})\n"
            for key in EXERCISES
        )
    ),
    "rewritten package": (
        "import fmnist_lab.checks as c\n"
        "with open(c.__file__, 'a') as stream:\n"
        '    stream.write(\'\\nrun_check = lambda i, *a: CheckResult(i, "x", "passed", "ok")\\n\')'
    ),
    "rewritten reference": ("import fmnist_lab.paths as p\np.REFERENCE_FILE.write_text('{}')"),
}


def _cell_of(nb: nbformat.NotebookNode, exercise: str) -> int:
    """The index of an exercise's cell (the cell with the solution block, or its stub)."""
    check = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and exercise in check_ids(c.source))
    return max(
        i for i in range(check) if nb.cells[i].cell_type == "code" and f"Exercise {exercise}" in nb.cells[i].source
    )


def _setup_index(nb: nbformat.NotebookNode) -> int:
    """The index of the setup cell (the one that imports `check`)."""
    return next(i for i, c in enumerate(nb.cells) if "from fmnist_lab.checks import" in c.source)


def _edit(nb: nbformat.NotebookNode, exercise: str, change: Callable[[str], str]) -> nbformat.NotebookNode:
    """A copy of the notebook with one exercise cell's source changed."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    cell = nb.cells[_cell_of(nb, exercise)]
    cell.source = change(cell.source)
    return nb


def _with_cell(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """A copy of the notebook with a cell of the learner's own right after the setup cell."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    nb.cells.insert(_setup_index(nb) + 1, nbformat.v4.new_code_cell(source))
    return nb


def _edited_checks(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook whose check cells print a fake pass instead of checking."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    for cell in nb.cells:
        if cell.cell_type == "code" and check_ids(cell.source):
            cell.source = f"print('✓ {check_ids(cell.source)[0]} matches the reference')"
    return nb


def submissions() -> dict[str, tuple[nbformat.NotebookNode, dict[str, str]]]:
    """30 notebooks by name, each with the status every exercise must get."""
    solution, lesson = nbformat.read(SOLUTION, as_version=4), nbformat.read(LESSON, as_version=4)
    assert set(exercise_cells(solution).values()) == set(EXERCISES)

    def every(status: str) -> dict[str, str]:
        """The same expected status for every exercise."""
        return dict.fromkeys(EXERCISES, status)

    made: dict[str, tuple[nbformat.NotebookNode, dict[str, str]]] = {}
    for n in range(5):
        made[f"correct_{n + 1}"] = (solution, every(P))
    for n in range(4):
        made[f"not_attempted_{n + 1}"] = (lesson, every(N))
    for key, (right, wrong) in WRONG.items():
        made[f"wrong_{key}"] = (_edit(solution, key, lambda s, r=right, w=wrong: s.replace(r, w)), {**every(P), key: F})
    for key in ("3.1", "3.2", "3.3"):
        made[f"syntax_error_{key}"] = (
            _edit(solution, key, lambda s: s + "\ndef broken(:\n    pass"),
            {**every(P), key: E},
        )
    for n in range(2):
        endless = _edit(solution, "3.4", lambda s: "while True:\n    pass\n" + s)
        made[f"endless_loop_{n + 1}"] = (endless, {**every(P), "3.4": E})
    for n in range(2):
        crash = _edit(solution, "3.3", lambda s: "import os\nos._exit(1)\n" + s)
        made[f"crash_{n + 1}"] = (crash, {**every(P), "3.3": E, "3.4": E})
    tampering = ("patched run_check", "patched exercise checks", "rewritten package", "rewritten reference")
    for name, source in FAKE_CELLS.items():
        made[f"fake_{name.replace(' ', '_')}"] = (_with_cell(lesson, source), every(E if name in tampering else N))
    made["fake_edited_check_cells"] = (_edited_checks(lesson), every(N))  # the genuine verdict: not attempted
    made["fake_edited_check_cells_solved"] = (_edited_checks(solution), every(E))  # right answers, but no credit
    deleted = nbformat.from_dict(nbformat.reads(nbformat.writes(solution), as_version=4))
    deleted.cells = [c for c in deleted.cells if not (c.cell_type == "code" and "3.2" in check_ids(c.source))]
    made["fake_deleted_check_cell"] = (deleted, {**every(P), "3.2": E})
    assert len(made) == 30, len(made)
    return made


def main() -> int:
    """Generate, grade, compare, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    parser.add_argument("--notebook-timeout", type=int, default=1200, help="seconds per notebook (default 1200)")
    args = parser.parse_args()
    made = submissions()
    limits = Limits(cell=args.timeout, notebook=args.notebook_timeout, memory_gb=4.0)
    with tempfile.TemporaryDirectory(prefix="fmnist-lab-grading-") as tmp:
        for name, (nb, _) in made.items():
            nbformat.write(nb, Path(tmp) / f"{name}.ipynb")
        load_before = round(os.getloadavg()[0], 2)
        started = time.monotonic()
        exercises, rows = grade(find_submissions([Path(tmp)], "03"), "03", limits, args.jobs)
        seconds = time.monotonic() - started
        load_after = round(os.getloadavg()[0], 2)
    wrong = [
        {
            "submission": row.name,
            "exercise": key,
            "expected": made[row.name][1][key],
            "got": row.statuses[key],
            "message": row.messages[key],
        }
        for row in rows
        for key in exercises
        if row.statuses[key] != made[row.name][1][key]
    ]
    fake_passes = [item for item in wrong if item["got"] == P]
    statuses = len(rows) * len(exercises)
    payload = {
        "lesson": "03",
        "submissions": len(rows),
        "mix": {
            kind: sum(name.startswith(kind) for name in made)
            for kind in ("correct", "not_attempted", "wrong", "syntax_error", "endless_loop", "crash", "fake")
        },
        "jobs": args.jobs,
        "limits": {"cell_seconds": limits.cell, "notebook_seconds": limits.notebook, "memory_gb": limits.memory_gb},
        "seconds": round(seconds, 1),
        "submissions_per_minute": round(len(rows) / seconds * 60, 2),
        "statuses": statuses,
        "statuses_right": statuses - len(wrong),
        "accuracy": round((statuses - len(wrong)) / statuses, 4),
        "submissions_all_right": sum(all(row.statuses[k] == made[row.name][1][k] for k in exercises) for row in rows),
        "fake_passes": len(fake_passes),
        "wrong_grades": wrong,
        "load_before": load_before,
        "load_after": load_after,
    }
    print(summary_table(exercises, rows))
    print(
        f"{len(rows)} submissions in {seconds:.0f} s over {args.jobs} jobs: {payload['submissions_per_minute']} per "
        f"minute; {payload['statuses_right']} of {statuses} statuses right, {len(fake_passes)} fake passes "
        f"(load {load_before} → {load_after})"
    )
    for item in wrong:
        print(
            f"  wrong: {item['submission']} {item['exercise']}: expected {item['expected']}, got {item['got']}: "
            f"{item['message'][:120]}"
        )
    print(f"wrote {save('grading', payload)}")
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
