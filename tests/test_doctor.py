"""`fmnist-lab doctor`: every requirement one line, a broken setup is [FAIL] with a fix, never a traceback."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from fmnist_lab import data, doctor
from fmnist_lab.doctor import FAIL, OK, WARN, Check

STATUS_PREFIXES = ("[OK] ", "[WARN] ", "[FAIL] ")


def report_lines(stdout: str) -> tuple[list[str], str]:
    """The check lines and the summary line of a doctor run."""
    lines = stdout.strip().splitlines()
    return lines[:-1], lines[-1]


def line_for(lines: list[str], prefix: str) -> str:
    """The one line starting with `prefix` (fails if there is none or more than one)."""
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, f"expected one line starting {prefix!r}, got {found}"
    return found[0]


def assert_no_traceback(done) -> None:
    """A doctor run never ends in (or prints) a Python traceback."""
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr


def env_with_pythonpath(folder: Path) -> dict[str, str]:
    """The environment with `folder` first on PYTHONPATH."""
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(folder), *([rest] if rest else [])])}


# --- end to end, in subprocesses --------------------------------------------------------------------


@pytest.mark.process
def test_doctor_passes_in_this_environment():
    done = run_cli("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_traceback(done)
    lines, last = report_lines(done.stdout)
    assert all(line.startswith(STATUS_PREFIXES) for line in lines), lines
    assert not [line for line in lines if line.startswith("[FAIL]")]
    for what in ("Python", "torch", "torchvision", "device", "data", "Jupyter kernel"):
        line_for(lines, f"[OK] {what}: ")
    assert sys.executable in line_for(lines, "[OK] Python: ")
    assert "imports fmnist_lab from" in line_for(lines, "[OK] Jupyter kernel: ")
    # Both sources are checked: pillow is only declared by the package, pytest only in requirements.txt,
    # and torch (in both) is printed once (line_for asserts exactly one line).
    line_for(lines, "[OK] pillow: ")
    line_for(lines, "[OK] pytest: ")
    line_for(lines, "[OK] mkdocstrings[python]: ")
    whats = [line.split("] ", 1)[1].split(": ", 1)[0] for line in lines]
    assert len(whats) == len(set(whats)), whats
    assert last.startswith("doctor: ") and "0 failed" in last


@pytest.mark.process
def test_torch_below_its_bound_fails_with_the_fix(tmp_path):
    info = tmp_path / "fake" / "torch-2.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.0.0\n")
    done = run_cli("doctor", env=env_with_pythonpath(tmp_path / "fake"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert_no_traceback(done)
    lines, last = report_lines(done.stdout)
    line = line_for(lines, "[FAIL] torch: ")
    assert "2.0.0" in line and "below the lower bound >=2.4" in line
    assert line.endswith('— fix: pip install "torch>=2.4,<3"')
    assert "1 failed (torch)" in last


@pytest.mark.process
def test_a_requirements_file_with_a_missing_package_fails(tmp_path):
    file = tmp_path / "requirements.txt"
    file.write_text(
        "# extra packages\ndefinitely-not-a-package-xyz>=1\n"
        "numpy>=1.26  # merged with the declared numpy, not repeated\n"
    )
    done = run_cli("doctor", "--requirements", str(file))
    assert done.returncode == 1, done.stdout + done.stderr
    assert_no_traceback(done)
    lines, last = report_lines(done.stdout)
    line = line_for(lines, "[FAIL] definitely-not-a-package-xyz: ")
    assert "not installed" in line and 'fix: pip install "definitely-not-a-package-xyz>=1"' in line
    line_for(lines, "[OK] numpy: ")
    # The file replaces the checkout's requirements.txt: pytest is only listed there.
    assert not [line for line in lines if line.split("] ", 1)[1].startswith("pytest:")]
    assert "definitely-not-a-package-xyz" in last


def test_a_missing_requirements_file_is_bad_input(tmp_path):
    missing = tmp_path / "no-such-requirements.txt"
    done = run_cli("doctor", "--requirements", str(missing))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(missing) in done.stderr
    assert_no_traceback(done)


def serve_real_files(real: data.DataLocation, folder: Path) -> None:
    """Put the real files, gzipped as the official mirrors serve them, in a local mirror's folder."""
    for path in real.files.values():
        name = path.name if path.name.endswith(".gz") else f"{path.name}.gz"
        if path.name.endswith(".gz"):
            (folder / name).symlink_to(path)
        else:
            (folder / name).write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))


@pytest.mark.process
def test_no_data_anywhere_fails_without_downloading(tmp_path, real_location, mirror):
    for name in ("cwd", "data", "course", "system"):
        (tmp_path / name).mkdir()
    # A mirror that would serve the real files: had doctor downloaded, the data line would be [OK].
    folder, url = mirror
    serve_real_files(real_location, folder)
    env = {
        "FMNIST_DATA": str(tmp_path / "data"),
        "FMNIST_LAB_DATA_DIR": str(tmp_path / "course"),
        "FMNIST_LAB_SYSTEM_DATA": str(tmp_path / "system"),
        "FMNIST_LAB_MIRRORS": url,
    }
    done = run_cli("doctor", env=env, cwd=tmp_path / "cwd")
    assert done.returncode == 1, done.stdout + done.stderr
    assert_no_traceback(done)
    lines, last = report_lines(done.stdout)
    line = line_for(lines, "[FAIL] data: ")
    assert "not found" in line and "fix: `fmnist-lab data`" in line and "dataset-fashion-mnist" in line
    assert "1 failed (data)" in last
    assert not any((tmp_path / "course").iterdir()), "doctor must not download"


def test_a_missing_browser_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FMNIST_LAB_BROWSER", "/nonexistent")
    monkeypatch.setattr(doctor, "SYSTEM_CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on PATH (the probes run executables by path)
    assert doctor.run_doctor() == 0
    lines, last = report_lines(capsys.readouterr().out)
    line = line_for(lines, "[WARN] Chromium")
    assert "/nonexistent" in line
    assert line.endswith("only the site tests need it — fix: apt-get install chromium")
    assert "1 warning, 0 failed" in last


# --- the probes, with injected versions and paths ---------------------------------------------------


def versions(**installed: str):
    """A `version_of` that knows only `installed` (keys spelled with _ for -) and records its calls."""
    asked: list[str] = []

    def version_of(name: str) -> str | None:
        asked.append(name)
        return installed.get(name.replace("-", "_"))

    version_of.asked = asked
    return version_of


def test_requirement_satisfied():
    check = doctor.check_requirement("numpy>=1.26,<3", version_of=versions(numpy="2.1.0"))
    assert check == Check(OK, "numpy", "2.1.0 (needs >=1.26,<3)")
    assert str(check) == "[OK] numpy: 2.1.0 (needs >=1.26,<3)"


def test_requirement_below_its_bound():
    check = doctor.check_requirement("torch>=2.4,<3", version_of=versions(torch="2.0.0"))
    assert check.status == FAIL
    assert "below the lower bound >=2.4" in check.detail and "<3" not in check.detail.split("(")[0]
    assert str(check).endswith('— fix: pip install "torch>=2.4,<3"')


def test_requirement_above_its_cap():
    check = doctor.check_requirement("numpy>=1.26,<3", version_of=versions(numpy="3.0.1"))
    assert check.status == FAIL
    assert "above the cap <3" in check.detail
    assert check.fix == 'pip install "numpy>=1.26,<3"'


def test_requirement_missing():
    check = doctor.check_requirement("tqdm>=4.66,<5", version_of=versions())
    assert check == Check(FAIL, "tqdm", "not installed (needs >=4.66,<5)", 'pip install "tqdm>=4.66,<5"')


def test_requirement_names_are_normalised():
    version_of = versions(scikit_learn="1.5.2", mkdocstrings="0.27.0", mkdocs_material="9.5.1")
    assert doctor.check_requirement("Scikit_Learn>=1.4,<2", version_of=version_of).status == OK
    extras = doctor.check_requirement("mkdocstrings[python]>=0.26,<2", version_of=version_of)
    assert extras.status == OK and extras.what == "mkdocstrings[python]"
    assert doctor.check_requirement("mkdocs.material>=9.5", version_of=version_of).status == OK
    assert version_of.asked == ["scikit-learn", "mkdocstrings", "mkdocs-material"]


def test_requirement_accepts_local_and_pre_release_versions():
    assert doctor.check_requirement("torch>=2.4,<3", version_of=versions(torch="2.14.1+cu130")).status == OK
    assert doctor.check_requirement("torch>=2.4,<3", version_of=versions(torch="2.6.0rc1")).status == OK


def test_requirement_from_two_sources_checks_both_bounds():
    merged = doctor.merge_requirements(["scikit-learn>=1.4", "scikit_learn<2", "Scikit-Learn>=1.4"])
    assert list(merged) == ["scikit-learn"] and len(merged["scikit-learn"]) == 2
    group = merged["scikit-learn"]
    assert doctor.check_requirement(*group, version_of=versions(scikit_learn="1.6")).status == OK
    too_new = doctor.check_requirement(*group, version_of=versions(scikit_learn="2.1"))
    assert too_new.status == FAIL and "above the cap <2" in too_new.detail
    too_old = doctor.check_requirement(*group, version_of=versions(scikit_learn="1.3"))
    assert too_old.status == FAIL and "below the lower bound >=1.4" in too_old.detail
    assert too_old.fix == 'pip install "scikit-learn>=1.4,<2"'


def test_parse_requirements_skips_comments_options_and_markers_that_do_not_apply():
    text = "\n".join(
        [
            "# a comment",
            "",
            "-r other.txt",
            "--index-url https://example.org/simple",
            "numpy>=1.26,<3  # inline comment",
            "tqdm>=4.66,\\",
            "    <5",
            'oldthing>=1; python_version < "3"',
            'testonly>=1; extra == "test"',
            "not a requirement>>1",
        ]
    )
    found, problems = doctor.parse_requirements(text, "requirements.txt")
    assert [str(r) for r in found] == ["numpy<3,>=1.26", "tqdm<5,>=4.66"]
    assert len(problems) == 1 and problems[0].status == FAIL
    assert problems[0].what == "requirements.txt line 10" and "\n" not in str(problems[0])


def test_declared_requirements_are_the_package_dependencies():
    names = [r.name for r in doctor.declared_requirements()]
    assert {"torch", "torchvision", "numpy", "pillow"} <= set(names)
    assert "pytest" not in names  # a test tool, not something a learner needs


def test_python_against_requires_python():
    assert doctor.check_python(">=3.10").status == OK
    too_old = doctor.check_python(">=99")
    assert too_old.status == FAIL and "needs >=99" in too_old.detail and too_old.fix


def test_a_crashing_probe_becomes_one_fail_line():
    def broken() -> Check:
        raise RuntimeError("the wheel is broken\nsecond line")

    (check,) = doctor._safely("torch", 'pip install --force-reinstall "torch"', broken)
    assert check.status == FAIL and "RuntimeError: the wheel is broken second line" in check.detail
    assert "\n" not in str(check)


def test_browser_probe(tmp_path, monkeypatch):
    nowhere = tmp_path / "no-chromium"
    monkeypatch.setenv("FMNIST_LAB_BROWSER", "/nonexistent")
    missing = doctor.check_browser(system=nowhere, which=lambda name: None)
    assert missing.status == WARN and missing.fix == "apt-get install chromium"
    found_on_path = doctor.check_browser(system=nowhere, which=lambda name: f"/opt/bin/{name}")
    assert found_on_path.status == OK and "/opt/bin/chromium" in found_on_path.detail
    browser = tmp_path / "my-chromium"
    browser.write_text("")
    monkeypatch.setenv("FMNIST_LAB_BROWSER", str(browser))
    chosen = doctor.check_browser(system=nowhere, which=lambda name: None)
    assert chosen.status == OK and str(browser) in chosen.detail


def test_exit_code_counts_failures_only():
    passed, warned, failed = Check(OK, "a", "x"), Check(WARN, "b", "y", "z"), Check(FAIL, "c", "y", "z")
    assert doctor.exit_code([passed, warned]) == 0
    assert doctor.exit_code([passed, warned, failed]) == 1
    assert "1 OK, 1 warning, 1 failed (c)" in doctor.summary([passed, warned, failed])


def write_kernel(jupyter_path: Path, argv0: str) -> None:
    """A `python3` kernel spec under `jupyter_path` whose argv[0] is `argv0`."""
    folder = jupyter_path / "kernels" / "python3"
    folder.mkdir(parents=True)
    spec = {
        "argv": [argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))


def test_kernel_whose_python_is_missing(tmp_path, monkeypatch):
    write_kernel(tmp_path / "jupyter", str(tmp_path / "gone" / "python"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    check = doctor.check_kernel()
    assert check.status == FAIL and "not found" in check.detail
    assert "-m ipykernel install --user" in check.fix


@pytest.mark.skipif(os.name == "nt", reason="the stand-in kernel python is a shell script")
def test_kernel_that_cannot_import_fmnist_lab(tmp_path, monkeypatch):
    python = tmp_path / "python-without-fmnist-lab"
    python.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'fmnist_lab'\" >&2\nexit 1\n")
    python.chmod(0o755)
    write_kernel(tmp_path / "jupyter", str(python))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    check = doctor.check_kernel()
    assert check.status == FAIL
    assert str(python) in check.detail and "No module named 'fmnist_lab'" in check.detail
    assert "-m ipykernel install --user" in check.fix


def test_kernel_python_resolves_bare_names():
    assert doctor.kernel_python("python") == sys.executable
    assert doctor.kernel_python(f"python{sys.version_info[0]}") == sys.executable
    assert doctor.kernel_python("/definitely/not/here/python") is None
