"""Notebook tooling: generate `lessons/` from `solutions/`, print a reference solution (checking: `checker`).

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

Nothing a user wrote is lost: build-lessons validates every solution before it writes any file, writes each
file atomically, and records the sha256 of each lesson it writes (`lessons/.build-lessons.json`). A lesson
that matches neither that record nor what it would generate was edited by hand: it is kept, unless
`--force`, which first copies it to `NAME.bak-YYYYmmdd-HHMMSS`. A line that looks like a solution marker
but isn't one exactly is an error, never a solution left in a lesson. The reference also carries each
exercise's pristine check cell, which `fmnist_lab.checker` restores in a learner's copy before it runs it.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

from fmnist_lab import __version__
from fmnist_lab.checks import EXERCISES
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.files import atomic_write_text, backup
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
        raise InstallFailed(
            f"could not install {{COURSE}} (pip says why above). Try "
            f"`%pip install git+{url}@main`, or install from a clone as the README shows."
        )"""


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
        relative = (
            notebook.relative_to(self.root.resolve()) if inside else Path(notebook.parent.name, notebook.name)
        ).as_posix()
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
        id="colab-badge",
        metadata={"tags": [STAMP_TAG]},
    )
    install = nbformat.v4.new_code_cell(
        INSTALL_CELL.format(url=repo.url, ref=repo.ref), id="colab-install", metadata={"tags": [STAMP_TAG]}
    )
    intro = next((i for i, cell in enumerate(cells) if cell.cell_type == "markdown"), -1)
    nb.cells = [badge, *cells[: intro + 1], install, *cells[intro + 1 :]]
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
        nb = nbformat.read(path, as_version=NB_VERSION)
    except Exception as exc:  # noqa: BLE001 - JSON, schema and encoding errors alike
        raise FmnistLabError(
            f"{path}: not a readable Jupyter notebook ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return _require_cells(nb, path)


CELL_TYPES = ("code", "markdown", "raw")


def _require_cells(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """Refuse, naming the cell, what nbformat lets through but no tool can run: a missing or non-text source."""
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise FmnistLabError(f"{path}: not a readable Jupyter notebook (it has no list of `cells`)")
    fix = "fix the notebook's JSON, or copy its cells into a fresh notebook in Jupyter"
    for index, cell in enumerate(cells):
        where = f"{path}: cells[{index}] (cell {index + 1})"
        if not isinstance(cell, dict) or cell.get("cell_type") not in CELL_TYPES:
            kind = cell.get("cell_type") if isinstance(cell, dict) else type(cell).__name__
            raise FmnistLabError(f"{where} has cell_type {kind!r}, not code, markdown or raw: {fix}")
        if "source" not in cell:
            raise FmnistLabError(f"{where} has no `source` (the cell's text): {fix}")
        if not isinstance(cell.source, str):
            raise FmnistLabError(f"{where} has a `source` that is {type(cell.source).__name__}, not text: {fix}")
        if not isinstance(cell.setdefault("metadata", nbformat.NotebookNode()), dict):
            raise FmnistLabError(f"{where} has `metadata` that is not an object: {fix}")
    return nb


def write_text(nb: nbformat.NotebookNode) -> str:
    """The notebook as the exact text we store (stable, so `--check` can compare bytes)."""
    return nbformat.writes(nb, version=NB_VERSION) + "\n"


def check_ids(source: str) -> list[str]:
    """The exercise ids a cell's `check("N.M", …)` calls name."""
    return CHECK_CALL.findall(source)


MARKER_LIKE = re.compile(r"(BEGIN|END)[\s_-]*SOLUTION", re.IGNORECASE)


def _quoted(line: str) -> str:
    """A line of a cell, short enough to quote in a one-line error."""
    line = line.strip()
    return f"`{line if len(line) <= 60 else line[:57] + '...'}`"


def solution_markers(source: str, where: str) -> list[int]:
    """The line numbers of a code cell's exact markers; a near miss, a stray END or nesting would leak a solution."""
    lines, opened = [], None
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker not in (BEGIN, END):
            if MARKER_LIKE.search(line):
                raise FmnistLabError(
                    f"{where}, line {number}: {_quoted(line)} is not a solution marker, so the "
                    f"solution would stay in the lesson: write `{BEGIN}` or `{END}` alone on "
                    f"the line"
                )
            continue
        if marker == BEGIN and opened is not None:
            raise FmnistLabError(
                f"{where}, line {number}: `{BEGIN}` inside the block opened on line {opened}: "
                f"close that one with `{END}` first (blocks don't nest)"
            )
        if marker == END and opened is None:
            raise FmnistLabError(
                f"{where}, line {number}: `{END}` without a `{BEGIN}` before it: put `{BEGIN}` "
                f"above the solution code, or delete this line"
            )
        opened = number if marker == BEGIN else None
        lines.append(number)
    if opened is not None:
        raise FmnistLabError(
            f"{where} has `{BEGIN}` without `{END}` (the block opened on line {opened} never "
            f"closes): add `{END}` after the solution code"
        )
    return lines


def _refuse_markers_outside_code(cell: nbformat.NotebookNode, where: str) -> None:
    """A marker in a markdown or raw cell hides nothing: refuse it rather than publish what follows it."""
    for number, line in enumerate(cell.source.splitlines(), start=1):
        if line.strip() in (BEGIN, END):
            raise FmnistLabError(
                f"{where}, line {number}: {_quoted(line)} in a {cell.cell_type} cell: solution "
                f"markers only work in code cells, so this text would stay in the lesson"
            )


def exercise_cells(nb: nbformat.NotebookNode, path: Path | str = "notebook") -> dict[int, str]:
    """Map each exercise cell's index to its exercise id (from the next check call)."""
    found: dict[int, str] = {}
    pending: int | None = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            _refuse_markers_outside_code(cell, f"{path}: cell {index}")
            continue
        has_block = bool(solution_markers(cell.source, f"{path}: cell {index}"))
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


MANIFEST_NAME = ".build-lessons.json"  # in lessons/: what build-lessons last wrote, to tell hand edits apart
MANIFEST_ABOUT = (
    "The sha256 of each lesson as `fmnist-lab build-lessons` last wrote it. A lesson that no longer "
    "matches was edited by hand: build-lessons keeps it unless --force (then it keeps a copy)."
)


@dataclass
class LessonBuild:
    """What build-lessons will write, worked out (every solution read and validated) before any file is written."""

    lessons: Path
    wanted: dict[Path, str]  # every file build-lessons owns, with its text
    differing: list[Path]  # those whose text on disk differs (or that are missing)
    edited: list[Path]  # lessons changed by hand since build-lessons wrote them: kept unless forced
    extra: list[Path]  # lessons with no solution notebook

    def manifest_text(self) -> str:
        """The manifest recording the sha256 of every lesson as this build writes it."""
        digests = {path.name: _digest(text) for path, text in self.wanted.items() if path.parent == self.lessons}
        return json.dumps({"about": MANIFEST_ABOUT, "lessons": dict(sorted(digests.items()))}, indent=1) + "\n"


def _digest(text: str) -> str:
    """The sha256 of a text as stored (UTF-8, newlines as \\n), whatever line endings the checkout uses."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _on_disk(path: Path) -> str | None:
    """A file's text as build-lessons compares it (None when it is missing); a folder in its place is refused."""
    if path.is_dir():
        raise FmnistLabError(f"{path} is a folder, where build-lessons writes a file: move it away, then rerun")
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None
    except OSError as exc:
        raise FmnistLabError(
            f"{path}: can't read it ({exc.strerror or exc}): fix its permissions, then rerun"
        ) from None


def _recorded(lessons: Path) -> dict[str, str]:
    """The digests build-lessons recorded when it last wrote the lessons (none when the manifest is missing or junk)."""
    try:
        record = json.loads((lessons / MANIFEST_NAME).read_text(encoding="utf-8")).get("lessons", {})
        return {name: digest for name, digest in record.items() if isinstance(digest, str)}
    except (OSError, ValueError, AttributeError):
        return {}


def _shown(path: Path) -> str:
    """A path as the user typed it, more or less: relative to the working folder when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _require_folder(folder: Path, flag: str, what: str) -> None:
    """Refuse a file where a folder belongs, in one line naming the option."""
    if folder.exists() and not folder.is_dir():
        raise FmnistLabError(f"{flag} {folder} is a file: give the folder {what}")


def plan_lessons(solutions: Path, lessons: Path) -> LessonBuild:
    """Read and validate every solution and compare with what is on disk; nothing is written here."""
    _require_folder(solutions, "--solutions", "that holds the solution notebooks")
    _require_folder(lessons, "--lessons", "the lessons are written to")
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
    current = {target: _on_disk(target) for target in wanted}
    differing = [target for target, text in wanted.items() if current[target] != text]
    recorded = _recorded(lessons)
    edited = [
        target
        for target in differing
        if target.parent == lessons
        and current[target] is not None
        and recorded.get(target.name) != _digest(current[target])
    ]
    expected = {s.name for s in sources}
    extra = [path for path in sorted(lessons.glob("*.ipynb")) if path.name not in expected]
    return LessonBuild(lessons, wanted, differing, edited, extra)


def edited_message(edited: list[Path]) -> str:
    """The one line that refuses to overwrite hand-edited lessons and says how to replace them anyway."""
    names = [_shown(path) for path in edited]
    if len(names) == 1:
        return (
            f"{names[0]} was edited since build-lessons wrote it: your version is kept and nothing was "
            f"written; rerun with --force to replace it (a copy is kept as {names[0]}.bak-YYYYmmdd-HHMMSS)"
        )
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return (
        f"{listed} were edited since build-lessons wrote them: your versions are kept and nothing was "
        f"written; rerun with --force to replace them (a copy of each is kept as NAME.bak-YYYYmmdd-HHMMSS)"
    )


def _write(target: Path, text: str) -> None:
    """Write one file atomically; a failure is one line saying the file is unchanged."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
    except OSError as exc:
        raise FmnistLabError(
            f"could not write {target} ({exc.strerror or exc}); it is unchanged: fix that, "
            f"then rerun `fmnist-lab build-lessons`"
        ) from None


def write_lessons(build: LessonBuild, force: bool = False) -> list[Path]:
    """Write every differing file (hand-edited lessons only with `force`, after a copy); return the copies made."""
    if build.edited and not force:
        raise FmnistLabError(edited_message(build.edited))
    try:
        copies = [backup(path) for path in build.edited]  # all copies first: nothing is replaced before them
    except OSError as exc:
        raise FmnistLabError(
            f"could not keep a copy of an edited lesson ({exc.strerror or exc}), so nothing "
            f"was written: fix that, then rerun with --force"
        ) from None
    for target in build.differing:
        _write(target, build.wanted[target])
    manifest = build.lessons / MANIFEST_NAME
    if _on_disk(manifest) != build.manifest_text():
        _write(manifest, build.manifest_text())
    return copies


def build_lessons(solutions: Path, lessons: Path, check_only: bool = False, force: bool = False) -> list[Path]:
    """Write `lessons/` (and stamps and the packaged reference) from `solutions/`; `check_only`: list stale files."""
    build = plan_lessons(solutions, lessons)
    if check_only:
        return build.differing + build.extra
    write_lessons(build, force)
    return build.differing


def reference_solutions(solutions: Path) -> dict[str, dict[str, str]]:
    """Every exercise's reference code and pristine check cell, by id: `fmnist-lab solution` and the checker use it."""
    found = {}
    for path in sorted(solutions.glob("*.ipynb")):
        nb = read_notebook(path)
        for index, exercise_id in exercise_cells(nb, path).items():
            found[exercise_id] = {
                "notebook": path.name,
                "code": _solution_blocks(nb.cells[index].source),
                "exercise_cell": nb.cells[index].get("id"),
                "check_cell": _check_cell(nb, index, exercise_id),
            }
    return dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split(".")))))


def _check_cell(nb: nbformat.NotebookNode, exercise_index: int, exercise_id: str) -> dict[str, str | None]:
    """The pristine check cell of an exercise (its id and source): what the checker restores in a learner's copy."""
    cell = next(
        cell
        for cell in nb.cells[exercise_index + 1 :]
        if cell.cell_type == "code" and exercise_id in check_ids(cell.source)
    )
    return {"id": cell.get("id"), "source": cell.source}


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
            raise FmnistLabError(
                f"{REFERENCE_FILE} is missing from this install: reinstall fmnist-lab, or pass --solutions DIR"
            )
        reference, where = json.loads(REFERENCE_FILE.read_text(encoding="utf-8")), "the installed course"
    else:
        _require_folder(solutions, "--solutions", "that holds the solution notebooks")
        if not solutions.is_dir():
            raise FmnistLabError(f"--solutions {solutions}: no such folder")
        reference, where = reference_solutions(solutions), str(solutions)
    if exercise_id not in reference:
        known = ", ".join(reference)
        raise FmnistLabError(f"no exercise {exercise_id!r} in {where}; known exercises: {known}")
    return f"{reference[exercise_id]['notebook']} ({where})", reference[exercise_id]["code"]
