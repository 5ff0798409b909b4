"""The notebook checker behind `fmnist-lab check` and `fmnist-lab grade`: run a copy, trust only its own checks.

A learner's notebook is never run in place: the checker copies it into a temporary folder of its own, with a
private copy of the `fmnist_lab` package first on the kernel's path, and deletes the folder afterwards.

It takes verdicts only from check cells it controls. Before the run it restores each check cell from the
pristine lesson (the packaged reference, by exercise id, the way nbgrader restores its test cells). A cell of
its own arms `fmnist_lab.checks.guard` before any of the notebook's code runs, with a random token; the
restored check cells publish their verdicts with that token, and only those cells' outputs are read. The
package files and the solutions are hashed before and after the run: a change is tampering and earns nothing.

The kernel runs in a process group of its own, behind a small parent that also sets its memory cap, with a
timeout per cell and per notebook; a cell that ignores the interrupt gets its kernel killed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from fmnist_lab.checks import EXERCISES, STATUSES, CheckResult
from fmnist_lab.checks.guard import MIME_TYPE
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.notebooks import check_ids, read_notebook
from fmnist_lab.paths import PACKAGE_DIR, REFERENCE_FILE, results_dir

INTERRUPT_GRACE = 5.0  # seconds a timed-out cell gets to stop after the interrupt, before its kernel is killed
GUARD_TIMEOUT = 300  # seconds the checker's own first cell may take (it imports torch), whatever --timeout says
GIB = 1024**3


@dataclass(frozen=True)
class Limits:
    """How long a cell and a whole notebook may run (seconds) and how much memory its kernel may take (GiB)."""

    cell: int = 600
    notebook: int | None = None
    memory_gb: float | None = None
    threads: int | None = None  # torch/OpenMP threads in the kernel; grade sets cores ÷ jobs so kernels don't fight


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # what torch and NumPy read


@dataclass(frozen=True)
class PlannedCheck:
    """One exercise to report: the index of its check cell in the run (None: missing) and what restoring did."""

    exercise: str
    index: int | None
    source: str
    note: str = ""
    protected: bool = True  # False: an exercise the course doesn't know, whose check cell can't be restored


@dataclass
class NotebookRun:
    """What happened when a notebook ran: the cells with their outputs, cell errors, how the run ended."""

    cells: list
    errors: dict[int, str]
    stopped: str | None
    ran: set[int] = field(default_factory=set)  # the code cells that started
    token: str = ""
    tampered: list[str] = field(default_factory=list)  # files the run changed


# Pristine check cells ------------------------------------------------------------------------------


@functools.cache
def pristine_checks() -> dict[str, dict]:
    """Each exercise's pristine check cell (`{"id", "source"}`) and exercise cell id, from the packaged reference."""
    try:
        reference = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FmnistLabError(
            f"{REFERENCE_FILE} is missing or unreadable ({exc}): reinstall fmnist-lab, or run "
            f"`fmnist-lab build-lessons` in a checkout"
        ) from None
    return {key: value for key, value in reference.items() if isinstance(value.get("check_cell"), dict)}


def lesson_of(exercise_id: str) -> str:
    """The lesson number of an exercise id, as the reference writes it (`3` for `3.2`)."""
    return exercise_id.split(".")[0]


def _number_key(exercise_id: str) -> tuple[int, ...]:
    """Sort exercise ids as numbers: 3.2 before 3.10."""
    return tuple(int(part) for part in exercise_id.split(".") if part.isdigit())


def check_ids_of(nb: nbformat.NotebookNode) -> list[str]:
    """Every exercise id the notebook's code cells check."""
    return [key for cell in nb.cells if cell.cell_type == "code" for key in check_ids(cell.source)]


def lesson_from_name(path: Path) -> set[str]:
    """The lesson a file name like `03_batch_norm.ipynb` names (empty when it names none)."""
    number = path.name.split("_", 1)[0]
    return {str(int(number))} if number.isdigit() and "_" in path.name else set()


def _restored_cell(source: str) -> nbformat.NotebookNode:
    """A fresh code cell holding a pristine check (the notebook's tags and metadata don't come along)."""
    return nbformat.v4.new_code_cell(source)


def _check_cells(nb: nbformat.NotebookNode, pristine: dict[str, dict]) -> dict[str, int]:
    """Each exercise's check cell in the notebook: the one with the pristine cell's id, else one calling its check.

    A cell calling `check` that is an exercise cell (a learner testing their answer) is never taken: restoring
    it would replace their work. Among the others, a one-line call is preferred, then the last one.
    """
    by_cell_id = {value["check_cell"].get("id"): key for key, value in pristine.items()}
    exercise_cells = {value.get("exercise_cell") for value in pristine.values()}
    found: dict[str, int] = {}
    calls: dict[str, list[int]] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("id") in by_cell_id:
            found.setdefault(by_cell_id[cell.get("id")], index)
        elif cell.get("id") not in exercise_cells:
            for exercise_id in check_ids(cell.source):
                calls.setdefault(exercise_id, []).append(index)
    for exercise_id, indexes in calls.items():
        if exercise_id not in found:
            one_line = [i for i in indexes if len(nb.cells[i].source.strip().splitlines()) == 1]
            found[exercise_id] = (one_line or indexes)[-1]
    return found


def plan_checks(
    nb: nbformat.NotebookNode,
    lessons: set[str] | None = None,
    keep_unknown: bool = True,
    pristine: dict[str, dict] | None = None,
) -> tuple[nbformat.NotebookNode, list[PlannedCheck]]:
    """Restore every check cell of the notebook's lessons from the pristine lesson; say what was modified or missing.

    `lessons`: the lesson numbers to report (default: those the notebook's check calls name). Exercises the
    course doesn't know (a notebook that registers its own checks) keep their own check cell, unprotected,
    when `keep_unknown`. `pristine`: the check cells to restore (default: the packaged reference's).
    """
    pristine = pristine_checks() if pristine is None else pristine
    run = nbformat.from_dict(json.loads(json.dumps(nb)))
    found = _check_cells(run, pristine)
    wanted = lessons if lessons is not None else {lesson_of(key) for key in found}
    plans = []
    known = {key for key in pristine if lesson_of(key) in wanted}
    for exercise_id in sorted(known | {key for key in found if key not in pristine}, key=_number_key):
        index = found.get(exercise_id)
        if exercise_id not in pristine:
            if keep_unknown and index is not None:
                plans.append(PlannedCheck(exercise_id, index, run.cells[index].source, protected=False))
            continue
        source = pristine[exercise_id]["check_cell"]["source"]
        if index is None:
            plans.append(PlannedCheck(exercise_id, None, source, "check cell was deleted"))
            continue
        note = "" if _same_code(run.cells[index].source, source) else MODIFIED
        run.cells[index] = _restored_cell(source)
        plans.append(PlannedCheck(exercise_id, index, source, note))
    return run, plans


MODIFIED = "check cell was modified: restored"


def _same_code(mine: str, pristine: str) -> bool:
    """Whether a check cell is the lesson's, up to blank lines and trailing spaces (what an editor changes)."""
    return [line.rstrip() for line in mine.splitlines() if line.strip()] == [
        line.rstrip() for line in pristine.splitlines() if line.strip()
    ]


# Running a notebook --------------------------------------------------------------------------------

# On POSIX the kernel runs under this small parent, in a session of its own (jupyter_client's launcher starts
# one), so a notebook that kills "its parent" or its process group takes down only itself, never the checker.
# The parent also caps the memory the kernel can allocate (RLIMIT_DATA, inherited); argv[1]: the cap in bytes, 0: none.
KERNEL_SHIM = """\
import os, resource, signal, subprocess, sys
signal.signal(signal.SIGINT, lambda *_: None)  # interrupts are for the kernel (its handler is the default again)
if int(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[1]), int(sys.argv[1])))  # heap and anonymous maps
os.environ["JPY_PARENT_PID"] = str(os.getpid())  # the kernel exits by itself when this process is killed
sys.exit(subprocess.call(sys.argv[2:]))
"""

GUARD_CELL = 'import fmnist_lab.checks.guard as _fmnist_lab_guard\n_fmnist_lab_guard.arm("{token}", "{slot}")\ndel _fmnist_lab_guard'
PROTECTED_CALL = '__import__("builtins").__dict__["{slot}"]({source!r}, globals())'


@functools.cache
def _checker() -> tuple[type, type]:
    """nbclient's client and kernel manager, hardened for code we don't trust to stop or to leave us alone."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError
    from nbclient.util import ensure_async

    class ShieldedKernelManager(AsyncKernelManager):
        """Starts the kernel behind `KERNEL_SHIM` on POSIX, so killing its parent kills the shim, not us."""

        memory_bytes: int = 0

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            """The kernel's command line, behind the shim."""
            command = super().format_kernel_cmd(extra_arguments)
            if os.name != "posix":
                return command
            return [sys.executable, "-c", KERNEL_SHIM, str(self.memory_bytes), *command]

    class CheckerClient(NotebookClient):
        """Kills a kernel that ignores the interrupt, runs protected cells outside the history, notes what ran."""

        timed_out: int | None = None  # the index of the cell whose kernel was killed
        kernel_group: int | None = None  # the kernel's process group, killed once the run is over
        protected: frozenset = frozenset()  # cells run with store_history=False (the guard, the restored checks)
        guard: nbformat.NotebookNode | None = None  # the checker's own first cell
        memory_bytes: int = 0  # the kernel's memory cap (0: none)

        def create_kernel_manager(self) -> object:
            """nbclient's own kernel manager (so it cleans up after itself), told the memory cap."""
            manager = super().create_kernel_manager()
            manager.memory_bytes = self.memory_bytes
            return manager

        def _get_timeout(self, cell: nbformat.NotebookNode | None) -> int | None:
            """The per-cell timeout; the guard cell gets at least `GUARD_TIMEOUT` (importing torch under load)."""
            timeout = super()._get_timeout(cell)
            return max(timeout or 0, GUARD_TIMEOUT) if cell is not None and cell is self.guard else timeout

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.started: set[int] = set()

        async def async_start_new_kernel(self, **kwargs: object) -> None:
            """Start the kernel and note its process group."""
            await super().async_start_new_kernel(**kwargs)
            self.kernel_group = getattr(self.km.provisioner, "pgid", None)

        async def async_execute_cell(
            self,
            cell: nbformat.NotebookNode,
            cell_index: int,
            execution_count: int | None = None,
            store_history: bool = True,
        ) -> nbformat.NotebookNode:
            """Run one cell; the checker's own cells leave no trace in the kernel's input history."""
            if cell.cell_type == "code" and cell.source.strip():
                self.started.add(cell_index)
            store = store_history and cell_index not in self.protected
            return await super().async_execute_cell(cell, cell_index, execution_count, store)

        async def _async_handle_timeout(self, timeout: int, cell: nbformat.NotebookNode | None = None) -> None:
            """Interrupt; when the cell still runs `INTERRUPT_GRACE` s later, kill the kernel and end the run."""
            if cell is None:  # not a cell (the kernel's start-up reply): nbclient's own handling
                return await super()._async_handle_timeout(timeout, cell)
            await ensure_async(self.km.interrupt_kernel())
            deadline = time.monotonic() + INTERRUPT_GRACE
            while time.monotonic() < deadline:
                if await ensure_async(self.kc.shell_channel.msg_ready()):
                    return None  # the cell stopped: nbclient reads its reply next
                await asyncio.sleep(0.1)
            self.timed_out = next((i for i, c in enumerate(self.nb.cells) if c is cell), None)
            await ensure_async(self.km.shutdown_kernel(now=True))
            raise CellTimeoutError.error_from_timeout_and_cell("Cell execution timed out", timeout, cell)

    return CheckerClient, ShieldedKernelManager


def _kill_group(group: int | None) -> None:
    """Leave nothing of a checked notebook running: its kernel, or processes it started, after the run."""
    if group and hasattr(os, "killpg") and group != os.getpgrp():
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)


def _cell_error(cell: nbformat.NotebookNode, timeout: int) -> str | None:
    """The first error a cell's outputs hold, as `Name: message` (an interrupt means it timed out)."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            if output.get("ename") == "KeyboardInterrupt":
                return f"ran past the {timeout} s timeout (an endless loop?) and was interrupted"
            lines = str(output.get("evalue") or "").strip().splitlines()
            return f"raised {output.get('ename')}: {lines[0] if lines else ''}".rstrip(": ")
    return None


def watched_files(*packages: Path) -> list[Path]:
    """The files a run must not change: the check code and reference of the kernel's private package (and its source).

    This install's own files are not watched while a notebook runs (the run doesn't use them, and in a checkout
    you may be editing them); `installed_changes` compares them with what pip installed before every run.
    """
    return [path for folder in dict.fromkeys(packages) for path in sorted(folder.rglob("*")) if _is_watched(path)]


def installed_changes() -> list[str]:
    """The package files that differ from the hashes pip recorded when it installed fmnist-lab (none in a checkout)."""
    import base64
    from importlib import metadata

    try:
        files = metadata.distribution("fmnist-lab").files or []
    except metadata.PackageNotFoundError:
        return []
    changed = []
    for record in files:
        path = Path(str(record.locate())).resolve()
        if record.hash is None or record.hash.mode != "sha256" or not path.is_relative_to(PACKAGE_DIR):
            continue
        try:
            digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        except OSError:
            digest = "missing"
        if digest != record.hash.value:
            changed.append(f"{path} (installed)")
    return changed


def _is_watched(path: Path) -> bool:
    """Source and reference files, not the bytecode caches Python rewrites at will."""
    return path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json")


def hash_files(paths: list[Path]) -> dict[str, str]:
    """The sha256 of each file (`missing` for one that is gone)."""
    digests = {}
    for path in paths:
        try:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digests[str(path)] = "missing"
    return digests


def private_package(folder: Path, source: Path = PACKAGE_DIR) -> Path:
    """Copy the `fmnist_lab` package into `folder` (first on the kernel's path): a notebook can't change ours."""
    shutil.copytree(source, folder / "fmnist_lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder / "fmnist_lab"


def _private_results(folder: Path) -> Path:
    """A copy of the saved lesson checkpoints, so a notebook reuses them without changing the originals."""
    lessons = results_dir() / "lessons"
    target = folder / "results"
    if lessons.is_dir():
        shutil.copytree(lessons, target / "lessons", ignore=shutil.ignore_patterns("*.lock", "*.tmp"))
    target.mkdir(exist_ok=True)
    return target


def _kernel_env(package_parent: Path, results: Path, threads: int | None = None) -> dict[str, str]:
    """The kernel's environment: the private package first on its path, private results and temporary folder
    (what the notebook or torch leaves there goes with the checker's folder), no inherited channels."""
    env = {key: value for key, value in os.environ.items() if key != "FMNIST_LAB_CHECK_LOG"}
    temporary = package_parent.parent / "tmp"
    temporary.mkdir(exist_ok=True)
    env.update(dict.fromkeys(("TMPDIR", "TEMP", "TMP"), str(temporary)))
    env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)) if threads else {})
    env["PYTHONPATH"] = os.pathsep.join([str(package_parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["FMNIST_LAB_RESULTS"] = str(results)
    env["IPYTHONDIR"] = str(package_parent.parent / "ipython")  # no startup files, no shared history
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def execute(
    nb: nbformat.NotebookNode, protected: set[int], name: str, limits: Limits, package_source: Path = PACKAGE_DIR
) -> NotebookRun:
    """Run a notebook in a fresh, isolated kernel (continuing past errors), the guard armed first.

    The kernel imports a private copy of `package_source` (default: this install's `fmnist_lab`).
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client_class, manager_class = _checker()
    token, slot = secrets.token_hex(16), "_" + secrets.token_hex(12)
    cells = [nbformat.from_dict(json.loads(json.dumps(cell))) for cell in nb.cells]
    for index, cell in enumerate(cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None  # only what runs now counts, never saved outputs
            if index in protected:
                cell.source = PROTECTED_CALL.format(slot=slot, source=cell.source)
    guard = nbformat.v4.new_code_cell(GUARD_CELL.format(token=token, slot=slot))
    run_nb = nbformat.v4.new_notebook(cells=[guard, *cells], metadata=nb.get("metadata", {}))
    with tempfile.TemporaryDirectory(prefix="fmnist-lab-check-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        (work / Path(name).name).write_text(nbformat.writes(nb), encoding="utf-8")  # the notebook's own copy
        package = private_package(Path(tmp) / "package", package_source)
        files = watched_files(package, package_source) if package_source != PACKAGE_DIR else watched_files(package)
        before = hash_files(files)
        altered = installed_changes()
        client = client_class(
            run_nb,
            kernel_manager_class=manager_class,
            timeout=limits.cell,
            kernel_name="python3",
            allow_errors=True,
            interrupt_on_timeout=True,
            resources={"metadata": {"path": str(work)}},
            extra_arguments=["--HistoryManager.enabled=False"],
        )
        client.protected = frozenset({0, *(index + 1 for index in protected)})
        client.guard = run_nb.cells[0]
        client.memory_bytes = int(limits.memory_gb * GIB) if limits.memory_gb else 0
        over_time = threading.Event()

        def stop_notebook() -> None:
            over_time.set()
            _kill_group(client.kernel_group)

        timer = threading.Timer(limits.notebook, stop_notebook) if limits.notebook else None
        stopped = None
        try:
            if timer:
                timer.start()
            client.execute(
                stderr=subprocess.DEVNULL, env=_kernel_env(package.parent, _private_results(Path(tmp)), limits.threads)
            )
        except DeadKernelError:
            stopped = "the kernel died (crashed, ran out of memory, or was killed)"
        except CellTimeoutError:
            cell = "a cell" if client.timed_out in (None, 0) else f"cell {client.timed_out}"
            stopped = f"the kernel was stopped after {cell} ran past the {limits.cell} s timeout"
        except Exception as exc:  # noqa: BLE001 - report, never raise
            stopped = f"the run stopped: {type(exc).__name__}: {exc}"
        finally:
            if timer:
                timer.cancel()
            _kill_group(client.kernel_group)
        if over_time.is_set():
            stopped = f"the notebook ran past its {limits.notebook} s timeout, so its kernel was stopped"
        after = hash_files(files)
        tampered = altered + [_shown_file(Path(path), Path(tmp)) for path in before if after.get(path) != before[path]]
    return _collect(run_nb, client, stopped, limits.cell, token, tampered)


def _shown_file(path: Path, tmp: Path) -> str:
    """A watched file as the report names it (the private copy as `fmnist_lab/...`)."""
    with contextlib.suppress(ValueError):
        return str(Path("fmnist_lab") / path.relative_to(tmp / "package" / "fmnist_lab")) + " (private copy)"
    return str(path)


def _collect(
    run_nb: nbformat.NotebookNode, client: object, stopped: str | None, timeout: int, token: str, tampered: list[str]
) -> NotebookRun:
    """The run's cells, errors and started cells, numbered as in the notebook (the guard cell dropped)."""
    guard, cells = run_nb.cells[0], run_nb.cells[1:]
    errors = {
        i: error for i, cell in enumerate(cells) if cell.cell_type == "code" and (error := _cell_error(cell, timeout))
    }
    if client.timed_out not in (None, 0):
        errors[client.timed_out - 1] = (
            f"ran past the {timeout} s timeout and did not stop when interrupted, so its kernel was stopped"
        )
    guard_error = _cell_error(guard, timeout)
    if guard_error or client.timed_out == 0:
        stopped = stopped or f"the checker could not arm its protected checks ({guard_error or 'timed out'})"
    ran = {i - 1 for i in client.started if i > 0}
    return NotebookRun(cells, dict(sorted(errors.items())), stopped, ran, token, tampered)


# Verdicts -------------------------------------------------------------------------------------------


def protected_verdict(cell: nbformat.NotebookNode, exercise_id: str, token: str) -> CheckResult | None:
    """The last verdict the restored check cell published with the run's token (junk and forgeries skipped)."""
    found = None
    for output in cell.get("outputs", []):
        data = output.get("data", {}) if output.get("output_type") == "display_data" else {}
        record = data.get(MIME_TYPE) if isinstance(data, dict) else None
        if isinstance(record, str):
            with contextlib.suppress(ValueError):
                record = json.loads(record)
        if not isinstance(record, dict) or record.get("token") != token or record.get("exercise") != exercise_id:
            continue
        fields = [record.get(key) for key in ("exercise", "title", "status", "message")]
        if all(isinstance(value, str) for value in fields) and fields[2] in STATUSES:
            found = CheckResult(*fields)
    return found


def _title(exercise_id: str) -> str:
    """An exercise's title, from the registry (a notebook's own exercises may not be there)."""
    return EXERCISES[exercise_id].title if exercise_id in EXERCISES else "unknown exercise"


def _with_note(result: CheckResult, note: str) -> CheckResult:
    """A verdict with what restoring its check cell did, in brackets; a pass behind an edited check earns nothing."""
    if note == MODIFIED and result.status == "passed":
        message = (
            f"no credit: the {note}; the restored check passed, so put the check cell back as the lesson has it "
            "and check again"
        )
        return CheckResult(result.exercise, result.title, "error", message)
    return CheckResult(result.exercise, result.title, result.status, f"{result.message} ({note})") if note else result


RESTORE_HINT = (
    "if a file outside the private copy changed, restore it: reinstall fmnist-lab "
    "(`pip install --force-reinstall fmnist-lab`), or in a checkout `git checkout -- fmnist_lab`"
)


def verdicts(run: NotebookRun, plans: list[PlannedCheck], shown: list[str]) -> list[CheckResult]:
    """One verdict per planned check: from its protected output, or why there is none (`shown`: cell sources)."""
    results, region_start = [], 0
    for plan in sorted(plans, key=lambda p: (p.index is None, p.index or 0)):
        title = _title(plan.exercise)
        if plan.index is None:
            results.append(
                CheckResult(
                    plan.exercise,
                    title,
                    "error",
                    f"no verdict from the protected check: the check cell was deleted; add a cell "
                    f"`{plan.source.strip()}` after the exercise, as in the lesson",
                )
            )
            continue
        region = [i for i in run.errors if region_start <= i <= plan.index]
        region_start = plan.index + 1
        if run.tampered:
            names = ", ".join(run.tampered[:3]) + (" …" if len(run.tampered) > 3 else "")
            message = f"tampering: the run changed {names}, so no check of it can be trusted: no credit; {RESTORE_HINT}"
            results.append(CheckResult(plan.exercise, title, "error", message))
            continue
        verdict = protected_verdict(run.cells[plan.index], plan.exercise, run.token)
        if verdict is not None:
            results.append(_with_note(verdict, plan.note))
        elif any(run.errors[i].startswith("raised NotImplementedError: Exercise ") for i in region):
            message = "not attempted yet: the exercise still raises NotImplementedError"
            results.append(_with_note(CheckResult(plan.exercise, title, "not attempted", message), plan.note))
        elif region:
            first = region[0]
            opening = (shown[first].strip().splitlines() or [""])[0][:40]
            message = f"cell {first + 1} (`{opening}`) {run.errors[first]}"
            results.append(_with_note(CheckResult(plan.exercise, title, "error", message), plan.note))
        elif plan.index in run.ran and not run.stopped:
            message = (
                "no verdict from the protected check: its cell ran but published no verdict (did the "
                "notebook patch printing or displaying, or end the check early?)"
            )
            results.append(_with_note(CheckResult(plan.exercise, title, "error", message), plan.note))
        else:
            reason = run.stopped or "the check cell did not run"
            results.append(CheckResult(plan.exercise, title, "error", f"not checked: {reason}"))
    return sorted(results, key=lambda r: _number_key(r.exercise))


def check_notebook(
    path: Path, timeout: int = 600, exercise: str | None = None, limits: Limits | None = None
) -> list[CheckResult]:
    """One verdict per exercise of the notebook, in order: passed, failed, not attempted or error.

    `exercise`: run the cells up to and including that exercise's check cell, and report only it.
    """
    nb = read_notebook(path)
    named = {lesson_of(key) for key in check_ids_of(nb)} | lesson_from_name(path)
    run_nb, plans = plan_checks(nb, named)
    if not plans:
        raise FmnistLabError(f'{path}: no exercise checks (check("N.M", …) calls) in this notebook')
    return run_plans(run_nb, plans, path, limits or Limits(cell=timeout), exercise)


def run_plans(
    run_nb: nbformat.NotebookNode,
    plans: list[PlannedCheck],
    path: Path,
    limits: Limits,
    exercise: str | None = None,
    package_source: Path = PACKAGE_DIR,
) -> list[CheckResult]:
    """Run a planned notebook up to its last check cell (or `exercise`'s) and gather the verdicts."""
    if exercise is not None:
        chosen = [plan for plan in plans if plan.exercise == exercise]
        if not chosen:
            known = ", ".join(plan.exercise for plan in plans)
            raise FmnistLabError(f"--exercise {exercise}: {path} has no such exercise; it has {known}")
        plans = chosen
    last = max((plan.index for plan in plans if plan.index is not None), default=-1)
    run_nb.cells = run_nb.cells[: last + 1]  # cells after the last check can't change a verdict
    protected = {plan.index for plan in plans if plan.index is not None and plan.protected}
    unprotected = {plan.index for plan in plans if plan.index is not None and not plan.protected}
    shown = [cell.source for cell in run_nb.cells]
    run = execute(run_nb, protected | unprotected, path.name, limits, package_source)
    return verdicts(run, plans, shown)
