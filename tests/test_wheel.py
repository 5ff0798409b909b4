"""What learners install: the wheel, installed *not* editable into a fresh virtual environment.

The wheel is built from a copy of the sources, installed into a new venv that borrows the heavy
dependencies (torch, jupyter, …) from this environment through a `.pth` file, and used from a folder
that is not a checkout: every module imports from the new venv, the console script runs `--help`,
`data`, `solution 3.2` and `doctor`, and two solution notebooks run top to bottom in a kernel of the
new venv. Every step asserts where `fmnist_lab` was imported from, so the test cannot pass because the
checkout happens to be importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import REPO

NOTEBOOKS = ["01_data.ipynb", "08_deployment.ipynb"]  # the data end to end; training, ONNX and export
WHERE = "import fmnist_lab, fmnist_lab.paths as p; print(fmnist_lab.__file__); print(p.checkout())"


def _sources(target: Path) -> Path:
    """Copy the files git would ship (tracked or new, not ignored) into `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:  # not a git checkout (a tarball): copy all but the heavy folders
        shutil.copytree(
            REPO,
            target,
            ignore=shutil.ignore_patterns(
                ".venv", "node_modules", "site", "data", "results", ".git", "__pycache__", "*.egg-info"
            ),
        )
        return target
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _venv_paths(venv: Path) -> tuple[Path, Path, Path]:
    """The new venv's python, its scripts folder and its site-packages."""
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return python, scripts, Path(purelib)


def _fresh_venv(tmp: Path) -> dict:
    """A new venv borrowing this one's dependencies (not fmnist_lab), and a folder that is no checkout."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python, scripts, site = _venv_paths(tmp / "venv")
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "borrowed_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n", encoding="utf-8")
    work = tmp / "work"  # not a checkout: no pyproject.toml, no solutions/, no fmnist_lab/ here
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "FMNIST_LAB_DATA_DIR", "FMNIST_LAB_RESULTS", "VIRTUAL_ENV")
    }
    env.update(
        XDG_CACHE_HOME=str(tmp / "cache"),
        HOME=str(tmp / "home"),
        PATH=str(scripts) + os.pathsep + env.get("PATH", ""),
        PYTHONNOUSERSITE="1",
    )
    before = subprocess.run([python, "-c", "import fmnist_lab"], cwd=work, env=env, capture_output=True)
    assert before.returncode != 0, "fmnist_lab is importable before the wheel is installed"
    return {"tmp": tmp, "python": python, "scripts": scripts, "site": site, "work": work, "env": env}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the sources; install it, not editable, into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _sources(tmp / "src")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    fresh = {**_fresh_venv(tmp), "wheel": next((tmp / "dist").glob("fmnist_lab-*.whl"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(fresh["python"]),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(fresh["wheel"]),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return fresh


def run(venv: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A command from the new venv, in the folder that is not a checkout."""
    return subprocess.run(
        list(args), cwd=venv["work"], env=venv["env"], capture_output=True, text=True, timeout=timeout
    )


def assert_from_the_wheel(venv: dict, printed: str) -> None:
    """`fmnist_lab` came from the new venv's site-packages, and it sees no checkout."""
    location, checkout = printed.strip().splitlines()[-2:]
    assert Path(location).resolve().is_relative_to(venv["site"].resolve()), location
    assert checkout == "None"


def test_wheel_contents(venv):
    from fmnist_lab import paths

    names = set(zipfile.ZipFile(venv["wheel"]).namelist())
    modules = {
        f"fmnist_lab/{p.relative_to(paths.PACKAGE_DIR).as_posix()}"
        for p in paths.PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules <= names, sorted(modules - names)
    assert "fmnist_lab/checks/lesson03.py" in names and "fmnist_lab/reference/solutions.json" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(venv["wheel"]).read(metadata).decode()
    assert "License-Expression: MIT" in text and "Requires-Dist: torch" in text


def test_every_module_imports_from_the_installed_copy(venv):
    modules = sorted(
        n[:-3].replace("/", ".").removesuffix(".__init__")
        for n in zipfile.ZipFile(venv["wheel"]).namelist()
        if n.startswith("fmnist_lab/") and n.endswith(".py") and not n.endswith("__main__.py")
    )
    code = f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\n{WHERE}"
    result = run(venv, str(venv["python"]), "-c", code)
    assert result.returncode == 0, result.stderr
    assert_from_the_wheel(venv, result.stdout)


def test_the_command_works_with_no_checkout(venv):
    command = shutil.which("fmnist-lab", path=str(venv["scripts"]))  # fmnist-lab.exe on Windows
    assert command, f"the wheel installed no fmnist-lab command into {venv['scripts']}"
    result = run(venv, command, "--help")
    assert result.returncode == 0 and "solution" in result.stdout and "doctor" in result.stdout
    result = run(venv, command, "data")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[OK]") == 4
    result = run(venv, command, "solution", "3.2")
    assert result.returncode == 0, result.stderr
    assert "reference solution from 03_batch_norm.ipynb (the installed course)" in result.stdout
    assert "nn.BatchNorm2d" in result.stdout
    result = run(venv, command, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[FAIL]" not in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert list(venv["work"].iterdir()) == []  # nothing written into the working folder


def _execute(venv: dict, notebook: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a notebook top to bottom with nbclient, in a kernel of the new venv, in the notebook's folder."""
    code = (
        "import sys, pathlib, nbformat, nbclient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        f"nbclient.NotebookClient(nb, timeout={timeout}, kernel_name='python3',\n"
        "    resources={'metadata': {'path': str(pathlib.Path(sys.argv[1]).parent)}}).execute()\n"
        "nbformat.write(nb, sys.argv[1])\n"
    )
    return run(venv, str(venv["python"]), "-c", code, str(notebook), timeout=2 * timeout)


def test_the_install_cell_fails_in_one_line_and_stops_the_notebook(tmp_path):
    """Where fmnist_lab is missing and pip can't fetch the course, one line says so and what to try."""
    installed = _fresh_venv(tmp_path)
    solution = nbformat.read(REPO / "solutions" / NOTEBOOKS[0], as_version=4)
    install = next(cell for cell in solution.cells if cell.cell_type == "code")
    nb = nbformat.v4.new_notebook(cells=[install, nbformat.v4.new_code_cell("print('after')")])
    nb.metadata = solution.metadata
    path = installed["tmp"] / "install_only.ipynb"
    nbformat.write(nb, path)
    env = {**installed["env"], "GIT_ALLOW_PROTOCOL": "file"}  # git refuses https: the install fails
    code = (
        "import sys, nbformat, nbclient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "try:\n    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3').execute()\n"
        "except nbclient.exceptions.CellExecutionError:\n    pass\n"
        "nbformat.write(nb, sys.argv[1])\n"
    )
    result = subprocess.run(
        [str(installed["python"]), "-c", code, str(path)],
        cwd=installed["work"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    ran = nbformat.read(path, as_version=4)
    printed = "".join(o.get("text", "") for o in ran.cells[0].outputs if o.output_type == "stream")
    assert "fmnist_lab is not installed here: installing the course from git+https://github.com/" in printed
    errors = [o for o in ran.cells[0].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "InstallFailed"
    assert len(errors[0].traceback) == 1  # one line, not a traceback
    assert "could not install git+https://github.com/" in errors[0].traceback[0]
    assert "@main" in errors[0].traceback[0]
    assert ran.cells[1].outputs == []  # the rest of the notebook did not run


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_notebooks_run_top_to_bottom_from_the_installed_copy(venv, name):
    copy = venv["tmp"] / name.removesuffix(".ipynb") / name  # a folder of its own, as a learner's
    copy.parent.mkdir()
    nb = nbformat.read(REPO / "solutions" / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    nbformat.write(nb, copy)
    result = _execute(venv, copy)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = nbformat.read(copy, as_version=4)
    assert_from_the_wheel(venv, ran.cells[-1].outputs[0]["text"])
    install = next(cell for cell in ran.cells if cell.cell_type == "code")
    assert install.outputs == []  # installed already: the Colab cell says nothing and does nothing
    checks = [o.get("text", "") for c in ran.cells if c.cell_type == "code" and "check(" in c.source for o in c.outputs]
    assert checks and all(line.startswith("✓") for line in checks), checks
    if "original_run()" in "".join(cell.source for cell in ran.cells):
        # trained weights land where the docs say: ./results beside the notebook, for an installed copy
        assert (copy.parent / "results" / "lessons" / "seed0" / "model_weights.pth").is_file()
