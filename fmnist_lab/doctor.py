"""`fmnist-lab doctor`: check a setup, one line per requirement, every problem with the command that fixes it.

In the style of rasbt's `python_environment_check.py`. The lines, in order: Python against fmnist-lab's
`Requires-Python`; which fmnist-lab runs; torch and torchvision against their bounds and the device they
will use; every other requirement (what the installed package declares, plus the checkout's
`requirements.txt` or the file given with `--requirements`); the data; a Jupyter kernel that imports
fmnist_lab; Chromium for the site tests (optional: a warning, never a failure). Then one summary line.

Every probe is wrapped, so a broken package becomes a `[FAIL]` line, never a traceback, and heavy modules
(torch, jupyter_client) are imported inside the probes. Nothing is downloaded. Exit code 0 when nothing
failed (warnings allowed), 1 otherwise; an unreadable `--requirements` file raises `FmnistLabError`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist_lab import paths
from fmnist_lab.cli import EXIT_FAILED, EXIT_OK
from fmnist_lab.errors import FmnistLabError

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.specifiers import Specifier, SpecifierSet

OK, WARN, FAIL = "OK", "WARN", "FAIL"
DIST_NAME = "fmnist-lab"
DEFAULT_REQUIRES_PYTHON = ">=3.10"
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
KERNEL_TIMEOUT = 120.0  # seconds for the kernel's Python to import fmnist_lab (a cold disk can be slow)
KERNEL_PROBE = "import fmnist_lab, sys; print(fmnist_lab.__file__)"
DATA_FIX = "`fmnist-lab data` (finds or downloads the files) or `sudo apt-get install dataset-fashion-mnist`"
BROWSER_FIX = "apt-get install chromium"
REINSTALL_FIX = (
    "reinstall the course as the README shows: pip install . in a clone, or run a lesson's "
    "first code cell (it installs from the repository)"
)

VersionOf = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Check:
    """One line of the report: a status, what was checked, what was found, and the fix for a problem."""

    status: str
    what: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"[{self.status}] {self.what}: {self.detail}"
        return f"{line} — fix: {self.fix}" if self.fix and self.status != OK else line


def _one_line(text: object) -> str:
    """Any message squeezed onto one line, so each check stays one line."""
    return " ".join(str(text).split())


def _first_line(text: object) -> str:
    """The first line of a message that spans several (packaging's errors draw a caret below)."""
    return (str(text).strip().splitlines() or [""])[0].strip()


def _error_text(exc: BaseException) -> str:
    """An exception as one line a learner can search for: its type and message."""
    return _one_line(f"{type(exc).__name__}: {exc}")


def _safely(what: str, fix: str, probe: Callable[[], Check | Iterable[Check]], status: str = FAIL) -> list[Check]:
    """Run one probe; any exception becomes a line of its own, so the report never ends in a traceback."""
    try:
        result = probe()
        return [result] if isinstance(result, Check) else list(result)
    except Exception as exc:  # noqa: BLE001 - the whole point: report, don't crash
        return [Check(status, what, f"the check itself failed ({_error_text(exc)})", fix)]


def _command(executable: str) -> str:
    """An executable path as it can be pasted into a shell."""
    return f'"{executable}"' if " " in executable else executable


# --- Python and fmnist-lab itself -------------------------------------------------------------------


def requires_python() -> str:
    """fmnist-lab's declared `Requires-Python`, or `>=3.10` when the package metadata is unavailable."""
    try:
        declared = importlib.metadata.metadata(DIST_NAME).get("Requires-Python")
    except importlib.metadata.PackageNotFoundError:
        declared = None
    return declared or DEFAULT_REQUIRES_PYTHON


def check_python(requires: str | None = None) -> Check:
    """This Python against `requires` (default: fmnist-lab's `Requires-Python`)."""
    from packaging.specifiers import SpecifierSet

    specifier = SpecifierSet(requires or requires_python())
    found = ".".join(map(str, sys.version_info[:3]))
    wanted = spec_text(specifier)
    if specifier.contains(found, prereleases=True):
        return Check(OK, "Python", f"{found} at {sys.executable} (fmnist-lab needs {wanted})")
    return Check(
        FAIL,
        "Python",
        f"{found} at {sys.executable}, but fmnist-lab needs {wanted}",
        f"install a Python {wanted} (python.org or your package manager) and create the virtual environment with it",
    )


def check_package() -> Check:
    """Which fmnist-lab runs and from where, so a learner sees a stale copy at once."""
    where = paths.checkout()
    place = f"course checkout {where}" if where else "installed copy"
    try:
        version = importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return Check(
            WARN,
            "fmnist-lab",
            f"running from {paths.PACKAGE_DIR} without being installed, so its declared requirements can't be read",
            f"pip install -e {where}" if where else REINSTALL_FIX,
        )
    return Check(OK, "fmnist-lab", f"{version} from {paths.PACKAGE_DIR} ({place})")


# --- requirements -----------------------------------------------------------------------------------


def installed_version(name: str) -> str | None:
    """The installed version of a distribution (any spelling of its name), or None when it is missing."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def spec_text(specifier: SpecifierSet) -> str:
    """A specifier set as people write it, lower bounds first: `>=2.4,<3`."""

    def lower_first(spec: str) -> tuple[bool, str]:
        return (spec.startswith(("<", "!")), spec)

    return ",".join(sorted((str(spec) for spec in specifier), key=lower_first))


def _applies(requirement: Requirement) -> bool:
    """Whether a requirement's marker holds here (an extra's requirements don't apply by default)."""
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Requirement lines of a requirements file with their numbers: no comments, blanks or `-` options."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if not pending:
            start = number
        if line.endswith("\\"):  # a continuation: join it with the next line, as pip does
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line and not line.startswith("-"):
            yield start, line
    if pending.strip() and not pending.lstrip().startswith("-"):
        yield start, pending.strip()


def parse_requirements(text: str, source: str) -> tuple[list[Requirement], list[Check]]:
    """The requirements of a file that apply here, and a [FAIL] for each line that doesn't parse."""
    from packaging.requirements import InvalidRequirement, Requirement

    found, problems = [], []
    for number, line in _logical_lines(text):
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            problems.append(
                Check(
                    FAIL,
                    f"{source} line {number}",
                    f"cannot read {line!r} ({_first_line(exc)})",
                    f"write line {number} as name[extras] and bounds, e.g. numpy>=1.26,<3",
                )
            )
            continue
        if _applies(requirement):
            found.append(requirement)
    return found, problems


def declared_requirements() -> list[Requirement]:
    """What the installed fmnist-lab declares it needs, without extras: what every learner needs."""
    from packaging.requirements import Requirement

    try:
        lines = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [requirement for requirement in map(Requirement, lines) if _applies(requirement)]


def merge_requirements(requirements: Iterable[Requirement | str]) -> dict[str, list[Requirement]]:
    """Group requirements by normalised name, so each package is checked (and printed) once."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    merged: dict[str, list[Requirement]] = {}
    for requirement in requirements:
        requirement = Requirement(requirement) if isinstance(requirement, str) else requirement
        same = merged.setdefault(canonicalize_name(requirement.name), [])
        if all((r.specifier, r.extras) != (requirement.specifier, requirement.extras) for r in same):
            same.append(requirement)
    return merged


def checkout_requirements() -> Path | None:
    """The checkout's requirements.txt, when fmnist-lab runs from a course checkout that has one."""
    root = paths.checkout()
    path = root / "requirements.txt" if root else None
    return path if path and path.is_file() else None


def read_requirements_file(path: Path) -> str:
    """The text of a `--requirements` file; one line naming the file if it can't be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _error_text(exc)
        raise FmnistLabError(f"--requirements {path}: cannot read it ({reason})") from None


def gather_requirements(
    path: Path | None = None, text: str | None = None
) -> tuple[dict[str, list[Requirement]], list[Check]]:
    """The declared requirements merged with a requirements file's (default: the checkout's)."""
    requirements = declared_requirements()
    if text is None and path is None:
        path = checkout_requirements()
        text = path.read_text(encoding="utf-8") if path else None
    problems: list[Check] = []
    if text is not None:
        found, problems = parse_requirements(text, Path(path).name if path else "requirements")
        requirements += found
    return merge_requirements(requirements), problems


@dataclass(frozen=True)
class _Wanted:
    """Several requirements of one package as one: its name as written, the pip argument, the bounds."""

    what: str
    argument: str
    specifier: SpecifierSet

    @classmethod
    def of(cls, requirements: Iterable[Requirement | str]) -> _Wanted:
        """Merge requirements of one package: extras united, every bound kept."""
        from packaging.requirements import Requirement
        from packaging.specifiers import SpecifierSet

        parsed = [Requirement(r) if isinstance(r, str) else r for r in requirements]
        extras = sorted(set().union(*(r.extras for r in parsed)))
        specifier = SpecifierSet()
        for requirement in parsed:
            specifier &= requirement.specifier
        what = parsed[0].name + (f"[{','.join(extras)}]" if extras else "")
        return cls(what, f'"{what}{spec_text(specifier)}"', specifier)

    @property
    def needs(self) -> str:
        """The bounds in words, for the report."""
        return f"needs {spec_text(self.specifier)}" if len(self.specifier) else "any version"


def _violation(spec: Specifier) -> str:
    """Which way an installed version misses one bound."""
    if spec.operator in (">", ">="):
        return f"below the lower bound {spec}"
    if spec.operator in ("<", "<="):
        return f"above the cap {spec}"
    return f"excluded by {spec}"


def check_requirement(*requirements: Requirement | str, version_of: VersionOf = installed_version) -> Check:
    """One package (one or more requirements of it) against its installed version from `version_of`."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    wanted = _Wanted.of(requirements)
    fix = f"pip install {wanted.argument}"
    found = version_of(canonicalize_name(wanted.what.split("[")[0]))
    if found is None:
        return Check(FAIL, wanted.what, f"not installed ({wanted.needs})", fix)
    try:
        version = Version(found)
    except InvalidVersion:
        return Check(FAIL, wanted.what, f"version {found!r} can't be compared with bounds ({wanted.needs})", fix)
    missed = [spec for spec in wanted.specifier if not spec.contains(version, prereleases=True)]
    if missed:
        reasons = "; ".join(_violation(spec) for spec in sorted(missed, key=str))
        return Check(FAIL, wanted.what, f"{found} is installed, {reasons} ({wanted.needs})", fix)
    return Check(OK, wanted.what, f"{found} ({wanted.needs})")


def check_torch_package(
    name: str, requirements: Iterable[Requirement | str], version_of: VersionOf = installed_version
) -> Check:
    """torch or torchvision: within its bounds, and importable (a broken install is caught here)."""
    requirements = list(requirements)
    line = check_requirement(*requirements, version_of=version_of)
    if line.status != OK:
        return line
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - a broken wheel raises anything
        wanted = _Wanted.of(requirements)
        return Check(
            FAIL,
            line.what,
            f"installed, but `import {name}` fails ({_error_text(exc)})",
            f"pip install --force-reinstall {wanted.argument}",
        )
    return Check(OK, line.what, f"{line.detail}, imported from {Path(module.__file__).parent}")


def check_device() -> Check:
    """The device training will use (`fmnist_lab.train.get_device`): cuda (its name), mps or cpu."""
    import torch

    from fmnist_lab.train import get_device

    device = get_device()
    if device.type == "cuda":
        return Check(OK, "device", f"cuda ({torch.cuda.get_device_name(device)})")
    if device.type == "mps":
        return Check(OK, "device", "mps (Apple GPU)")
    return Check(
        OK, "device", f"{device.type} ({torch.get_num_threads()} threads; no CUDA or MPS GPU, which no lesson needs)"
    )


# --- data, Jupyter, browser -------------------------------------------------------------------------


def check_data() -> Check:
    """The four Fashion-MNIST files, found without downloading and verified by size and SHA-256."""
    from fmnist_lab import data

    try:
        location = data.find_data(download=False)
        data.verify(location)
    except FmnistLabError as exc:
        # The message ends with its own "Fix: …"; the report gives the fix once, after the dash.
        return Check(FAIL, "data", _one_line(str(exc).split(" Fix: ")[0]), DATA_FIX)
    return Check(OK, "data", f"{location.source}, all four files verified (size and SHA-256)")


def kernel_fix() -> str:
    """How to register this Python (which has fmnist_lab) as the `python3` Jupyter kernel."""
    register = f"{_command(sys.executable)} -m ipykernel install --user"
    if installed_version("ipykernel") is None or installed_version("jupyterlab") is None:
        return f"pip install jupyterlab ipykernel, then {register}"
    return register


def kernel_python(argv0: str) -> str | None:
    """The executable a kernel spec's argv[0] names, resolved as jupyter_client resolves it."""
    major, minor = sys.version_info[:2]
    if argv0 in {"python", f"python{major}", f"python{major}.{minor}"}:
        return sys.executable  # jupyter_client runs these with the Python that started Jupyter
    if os.path.isabs(argv0):
        return argv0 if Path(argv0).is_file() else None
    return shutil.which(argv0) if argv0 else None


def check_kernel(timeout: float = KERNEL_TIMEOUT) -> Check:
    """The `python3` Jupyter kernel's Python, and whether it imports fmnist_lab (and which copy)."""
    what = "Jupyter kernel"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jupyter_core's notices about platform dirs
            from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

            try:
                spec = KernelSpecManager().get_kernel_spec("python3")
            except NoSuchKernel:
                return Check(FAIL, what, "no python3 kernel is registered", kernel_fix())
    except ImportError as exc:
        return Check(FAIL, what, f"jupyter_client is missing ({_error_text(exc)})", kernel_fix())
    argv0 = spec.argv[0] if spec.argv else ""
    python = kernel_python(argv0)
    if python is None:
        return Check(
            FAIL, what, f"the python3 kernel ({spec.resource_dir}) runs {argv0!r}, which is not found", kernel_fix()
        )
    return _kernel_imports(python, timeout)


def _kernel_imports(python: str, timeout: float) -> Check:
    """Run `import fmnist_lab` in the kernel's Python, away from the checkout so cwd can't help it."""
    what = "Jupyter kernel"
    try:
        done = subprocess.run(
            [python, "-c", KERNEL_PROBE], capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir()
        )
    except subprocess.TimeoutExpired:
        return Check(FAIL, what, f"{python} did not import fmnist_lab within {timeout:g} s", kernel_fix())
    except OSError as exc:
        return Check(FAIL, what, f"{python} does not run ({_error_text(exc)})", kernel_fix())
    printed = done.stdout.strip().splitlines()
    if done.returncode != 0 or not printed:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return Check(FAIL, what, f"python3 kernel {python} cannot import fmnist_lab ({_one_line(last)})", kernel_fix())
    imported = Path(printed[-1]).resolve().parent
    if imported != paths.PACKAGE_DIR:
        return Check(
            WARN,
            what,
            f"python3 kernel {python} imports fmnist_lab from {imported}, not from this copy ({paths.PACKAGE_DIR})",
            kernel_fix(),
        )
    return Check(OK, what, f"python3 kernel {python} imports fmnist_lab from {imported}")


def check_browser(system: Path | None = None, which: Callable[[str], str | None] | None = None) -> Check:
    """Chromium for the site tests: optional, so a missing one is a warning, never a failure."""
    what = "Chromium (site tests)"
    system = SYSTEM_CHROMIUM if system is None else system
    which = which or shutil.which
    tried = []
    chosen = os.environ.get("FMNIST_LAB_BROWSER")
    if chosen:
        if Path(chosen).is_file():
            return Check(OK, what, f"{chosen} ($FMNIST_LAB_BROWSER)")
        tried.append(f"$FMNIST_LAB_BROWSER={chosen} is not a file")
    if system.is_file():
        return Check(OK, what, str(system))
    tried.append(f"no {system}")
    found = which("chromium")
    if found:
        return Check(OK, what, f"{found} (on PATH)")
    tried.append("no chromium on PATH")
    return Check(WARN, what, f"not found ({'; '.join(tried)}); only the site tests need it", BROWSER_FIX)


# --- the report -------------------------------------------------------------------------------------


def run_checks(
    requirements: Path | None = None, text: str | None = None, version_of: VersionOf = installed_version
) -> Iterator[Check]:
    """Every check in report order; `text` is the requirements file's (None: the checkout's own)."""
    yield from _safely("Python", REINSTALL_FIX, check_python)
    yield from _safely("fmnist-lab", REINSTALL_FIX, check_package)
    try:
        merged, problems = gather_requirements(requirements, text)
    except Exception as exc:  # noqa: BLE001
        merged, problems = {}, [Check(FAIL, "requirements", f"cannot read them ({_error_text(exc)})", REINSTALL_FIX)]
    yield from problems
    for name in ("torch", "torchvision"):
        probe = functools.partial(check_torch_package, name, merged.pop(name, None) or [name], version_of)
        yield from _safely(name, f'pip install --force-reinstall "{name}"', probe)
    yield from _safely("device", 'pip install --force-reinstall "torch"', check_device)
    for group in merged.values():
        probe = functools.partial(check_requirement, *group, version_of=version_of)
        yield from _safely(group[0].name, f'pip install "{group[0]}"', probe)
    yield from _safely("data", DATA_FIX, check_data)
    yield from _safely("Jupyter kernel", "pip install jupyterlab ipykernel", check_kernel)
    yield from _safely("Chromium (site tests)", BROWSER_FIX, check_browser, status=WARN)


def _plural(count: int, word: str) -> str:
    """`1 warning`, `2 warnings`."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(checks: list[Check]) -> str:
    """The last line: how many checks passed, warned and failed, and which failed."""
    failed = [check.what for check in checks if check.status == FAIL]
    warned = sum(check.status == WARN for check in checks)
    passed = sum(check.status == OK for check in checks)
    counts = f"{passed} OK, {_plural(warned, 'warning')}, {len(failed)} failed"
    if failed:
        return (
            f"doctor: {counts} ({', '.join(failed)}) — run the fix of each [FAIL] line, then `fmnist-lab doctor` again"
        )
    return f"doctor: {counts} — ready for the course"


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check failed, else 0: warnings are for optional things."""
    return EXIT_FAILED if any(check.status == FAIL for check in checks) else EXIT_OK


def _tolerant_stdout() -> None:
    """Let a console that can't show '—' print a replacement character instead of raising."""
    try:
        sys.stdout.reconfigure(errors="replace")
    except (AttributeError, ValueError, OSError):
        pass


def run_doctor(requirements: Path | None = None) -> int:
    """Print one line per check and a summary; return 0 when nothing failed, 1 otherwise."""
    text = read_requirements_file(requirements) if requirements is not None else None
    _tolerant_stdout()
    checks = []
    for check in run_checks(requirements, text):
        print(check, flush=True)
        checks.append(check)
    print(summary(checks))
    return exit_code(checks)
