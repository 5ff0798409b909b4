"""Notebook tooling: generate `lessons/` from `solutions/`, print a reference solution, check a notebook.

In `solutions/`, solution code sits between `### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader's
markers) inside an exercise cell; the next cell that calls `check("N.M", …)` names the exercise.
A lesson is the solution notebook with each block replaced by `# YOUR CODE HERE` and
`raise NotImplementedError("Exercise N.M: <title>")`, and with the outputs of exercise and check
cells cleared; every other cell keeps its outputs, so readers and the site see the figures.

Every lesson and solution is also *stamped* from the repository URL (`repo_url` in `mkdocs.yml`, the
one place that names it) and the release ref (`v` + the package version): an "Open in Colab" badge
first, and after the intro a cell that installs the course where `fmnist_lab` can't be imported.
Both cells carry the `colab` tag. The reference code of every exercise also ships inside the package
(`fmnist_lab/reference/solutions.json`), so `fmnist-lab solution N.M` works with no checkout.
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

from fmnist_lab import __version__
from fmnist_lab.checks import EXERCISES, CheckResult
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.paths import REFERENCE_FILE, checkout

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\d+\.\d+)["']""")
NB_VERSION = 4


STAMP_TAG = "colab"
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_CELL = """\
# On Colab or a fresh Python, this installs the course first; where fmnist_lab is installed, it does nothing.
import importlib.util

COURSE = "git+{url}@{ref}"


class InstallFailed(Exception):
    def _render_traceback_(self):  # Jupyter shows this one line instead of a traceback
        return [f"InstallFailed: {{self}}"]


if importlib.util.find_spec("fmnist_lab") is None:
    print(f"fmnist_lab is not installed here: installing the course from {{COURSE}} (a minute or two)")
    %pip install --quiet {{COURSE}}
    importlib.invalidate_caches()
    if importlib.util.find_spec("fmnist_lab") is None:
        raise InstallFailed(f"could not install {{COURSE}} (pip says why above). Try "
                            f"`%pip install git+{url}@main`, or install from a clone as the README shows.")"""


@dataclass(frozen=True)
class Repository:
    """Where the course lives online: its GitHub URL and the ref that badges and installs pin."""

    url: str
    ref: str
    root: Path

    def colab_url(self, notebook: Path) -> str:
        """The "Open in Colab" address of a notebook of this checkout."""
        notebook = Path(notebook).resolve()
        inside = notebook.is_relative_to(self.root.resolve())
        relative = (notebook.relative_to(self.root.resolve()) if inside else
                    Path(notebook.parent.name, notebook.name)).as_posix()
        owner_and_name = self.url.removeprefix("https://github.com/")
        return f"https://colab.research.google.com/github/{owner_and_name}/blob/{self.ref}/{relative}"


def repository(root: Path | None = None) -> Repository | None:
    """The repository named by `repo_url` in the checkout's `mkdocs.yml` (None outside a checkout)."""
    root = root or checkout()
    config = root / "mkdocs.yml" if root else None
    if config is None or not config.is_file():
        return None
    found = re.search(r"^repo_url:\s*(\S+)\s*$", config.read_text(encoding="utf-8"), flags=re.MULTILINE)
    if not found or not found.group(1).startswith("https://github.com/"):
        raise FmnistLabError(f"{config}: set `repo_url: https://github.com/OWNER/NAME` (the badges need it)")
    return Repository(found.group(1).rstrip("/"), f"v{__version__}", root)


def stamp(nb: nbformat.NotebookNode, repo: Repository, path: Path) -> nbformat.NotebookNode:
    """Put the Colab badge first and the install cell after the intro, replacing any earlier stamp."""
    cells = [cell for cell in nb.cells if STAMP_TAG not in cell.get("metadata", {}).get("tags", [])]
    badge = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({repo.colab_url(path)})",
        id="colab-badge", metadata={"tags": [STAMP_TAG]})
    install = nbformat.v4.new_code_cell(INSTALL_CELL.format(url=repo.url, ref=repo.ref),
                                        id="colab-install", metadata={"tags": [STAMP_TAG]})
    intro = next((i for i, cell in enumerate(cells) if cell.cell_type == "markdown"), -1)
    nb.cells = [badge, *cells[: intro + 1], install, *cells[intro + 1:]]
    return nb


COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/[^/\s]+/")
INSTALL_LINK = re.compile(r"git\+https://github\.com/[^/\s]+/[^/@\s]+@[^\s\"'`]+")


def stamp_text(text: str, repo: Repository) -> str:
    """Point every Colab link and `git+…@ref` install line of a page (the README) at the repository."""
    owner_and_name = repo.url.removeprefix("https://github.com/")
    text = COLAB_LINK.sub(f"https://colab.research.google.com/github/{owner_and_name}/blob/{repo.ref}/", text)
    return INSTALL_LINK.sub(f"git+{repo.url}@{repo.ref}", text)


VOLATILE_METADATA = ("execution", "ExecuteTime")  # nbclient's and the ExecuteTime extension's timestamps


def strip_volatile(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop per-cell run timestamps, so re-running a notebook changes only what it computes."""
    for cell in nb.cells:
        for key in VOLATILE_METADATA:
            cell.get("metadata", {}).pop(key, None)
    return nb


def is_stamped(cell: nbformat.NotebookNode) -> bool:
    """True for the badge and install cells that `stamp` writes (not the lesson's own content)."""
    return STAMP_TAG in cell.get("metadata", {}).get("tags", [])


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
    """Write `lessons/` (and stamps and the packaged reference) from `solutions/`; `check_only`: list stale files."""
    sources = sorted(solutions.glob("*.ipynb"))
    if not sources:
        raise FmnistLabError(f"{solutions}: no solution notebooks (*.ipynb) found")
    repo = repository(solutions.resolve().parent)
    wanted: dict[Path, str] = {}
    for source in sources:
        stored = read_notebook(source)
        solution = strip_volatile(nbformat.from_dict(json.loads(json.dumps(stored))))
        lesson = make_lesson(solution, source)
        if repo:
            solution = stamp(solution, repo, source)
            lesson = stamp(lesson, repo, lessons / source.name)
        if solution != stored:  # stamps or timestamps to update; the instructor's content is kept as is
            wanted[source] = write_text(solution)
        wanted[lessons / source.name] = write_text(lesson)
    readme = solutions.resolve().parent / "README.md"
    if repo and readme.is_file():
        wanted[readme] = stamp_text(readme.read_text(encoding="utf-8"), repo)
    if checkout() and solutions.resolve() == checkout() / "solutions":
        wanted[REFERENCE_FILE] = reference_text(solutions)
    differing = [target for target, text in wanted.items()
                 if not target.is_file() or target.read_text(encoding="utf-8") != text]
    if check_only:
        expected = {s.name for s in sources}
        return differing + [extra for extra in sorted(lessons.glob("*.ipynb")) if extra.name not in expected]
    for target in differing:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(wanted[target], encoding="utf-8")
    return differing


def reference_solutions(solutions: Path) -> dict[str, dict[str, str]]:
    """Every exercise's reference code, by id: what `fmnist-lab solution` prints with no checkout."""
    found = {}
    for path in sorted(solutions.glob("*.ipynb")):
        nb = read_notebook(path)
        for index, exercise_id in exercise_cells(nb, path).items():
            found[exercise_id] = {"notebook": path.name, "code": _solution_blocks(nb.cells[index].source)}
    return dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split(".")))))


def reference_text(solutions: Path) -> str:
    """The packaged reference file's exact text (stable, so `--check` can compare it)."""
    return json.dumps(reference_solutions(solutions), indent=1, ensure_ascii=False) + "\n"


def _solution_blocks(source: str) -> str:
    """The dedented lines between each BEGIN and END marker of a cell, blocks separated by a blank line."""
    blocks, inside, current = [], False, []
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside, current = True, []
        elif line.strip() == END:
            inside = False
            blocks.append(textwrap.dedent("\n".join(current)))
        elif inside:
            current.append(line)
    return "\n\n".join(blocks)


def solution_code(exercise_id: str, solutions: Path | None = None) -> tuple[str, str]:
    """The reference code of one exercise and where it comes from (the packaged copy, or `solutions`)."""
    if solutions is None:
        if not REFERENCE_FILE.is_file():
            raise FmnistLabError(f"{REFERENCE_FILE} is missing from this install: reinstall fmnist-lab, "
                                 f"or pass --solutions DIR")
        reference, where = json.loads(REFERENCE_FILE.read_text(encoding="utf-8")), "the installed course"
    else:
        if not solutions.is_dir():
            raise FmnistLabError(f"--solutions {solutions}: no such folder")
        reference, where = reference_solutions(solutions), str(solutions)
    if exercise_id not in reference:
        known = ", ".join(reference)
        raise FmnistLabError(f"no exercise {exercise_id!r} in {where}; known exercises: {known}")
    return f"{reference[exercise_id]['notebook']} ({where})", reference[exercise_id]["code"]


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
        results = [CheckResult(**json.loads(line)) for line in log.read_text(encoding="utf-8").splitlines() if line]
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
