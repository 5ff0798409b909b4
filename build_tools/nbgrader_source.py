"""Turn a course solution into an nbgrader source notebook, for instructors who grade with nbgrader.

The solution markers (`### BEGIN SOLUTION` / `### END SOLUTION`) are nbgrader's already. This marks each exercise
cell as an autograded answer and each check cell as an autograder test worth one point. nbgrader credits a test
cell that raises nothing, and `check(...)` never raises, so each check cell becomes a `run_check` that prints the
usual line and fails unless the verdict is "passed". The Colab cells are left out (nbgrader releases the notebook).
Usage: python build_tools/nbgrader_source.py solutions/03_batch_norm.ipynb COURSE/source/lesson03/
Then, in COURSE: `nbgrader generate_assignment lesson03`, release, collect, `nbgrader autograde lesson03`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from fmnist_lab.errors import FmnistLabError
from fmnist_lab.notebooks import check_ids, is_stamped, read_notebook

SCHEMA = {"schema_version": 3, "task": False}
CHECK_CELL = """\
from fmnist_lab.checks import run_check

_result = run_check({arguments})
print(_result.line())
assert _result.status == "passed", _result.message"""


def nbgrader_cell(cell: nbformat.NotebookNode, index: int) -> nbformat.NotebookNode:
    """The cell with nbgrader's metadata: an answer (its solution block), a one-point test (its check), or as is."""
    if cell.cell_type != "code":
        return cell
    if "### BEGIN SOLUTION" in cell.source:
        cell.metadata["nbgrader"] = {
            **SCHEMA,
            "grade": False,
            "grade_id": f"answer_{index}",
            "locked": False,
            "solution": True,
        }
    elif check_ids(cell.source):
        call = cell.source.strip()
        arguments = call[call.index("(") + 1 : call.rindex(")")]
        cell.source = CHECK_CELL.format(arguments=arguments)
        grade_id = "check_" + check_ids(call)[0].replace(".", "_")
        cell.metadata["nbgrader"] = {
            **SCHEMA,
            "grade": True,
            "grade_id": grade_id,
            "locked": True,
            "points": 1,
            "solution": False,
        }
    return cell


def nbgrader_source(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The whole notebook marked for nbgrader, without the Colab cells."""
    nb.cells = [nbgrader_cell(cell, index) for index, cell in enumerate(nb.cells) if not is_stamped(cell)]
    return nb


def main(argv: list[str]) -> int:
    """Write the marked copy of a solution into an nbgrader source folder (exit 2 with one line on bad input)."""
    if len(argv) != 2:
        print("usage: python build_tools/nbgrader_source.py SOLUTION.ipynb SOURCE_FOLDER", file=sys.stderr)
        return 2
    solution, folder = Path(argv[0]), Path(argv[1])
    try:
        nb = nbgrader_source(read_notebook(solution))
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / solution.name)
    except (FmnistLabError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {folder / solution.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
