"""fmnist_lab.checker: verdicts come only from the check cells it restored, through the guard's channel.

Each notebook here is a tiny lesson 02: the real exercise 2.1 (`conv_output_size`, a pure function, so a
kernel run takes seconds) with its pristine check cell, and one way of faking a pass. None earns credit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat
import pytest
from conftest import run_cli

from fmnist_lab.checker import Limits, check_notebook, hash_files, pristine_checks, protected_verdict
from fmnist_lab.checks.guard import MIME_TYPE
from fmnist_lab.paths import PACKAGE_DIR

RIGHT = "def conv_output_size(n, kernel, padding=0, stride=1):\n    return (n + 2 * padding - kernel) // stride + 1"
WRONG = "def conv_output_size(n, kernel, padding=0, stride=1):\n    return n - kernel + 1"  # ignores padding, stride
FAKE_LINE = "✓ 2.1 conv_output_size: matches the reference"


def lesson02(answer: str, check_source: str | None = None, check_id: str | None = None) -> nbformat.NotebookNode:
    """Setup, the exercise cell holding `answer`, and exercise 2.1's check cell (pristine unless given)."""
    pristine = pristine_checks()["2.1"]["check_cell"]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lesson 02, exercise 2.1 only"),
        nbformat.v4.new_code_cell("from fmnist_lab.checks import check"),
        nbformat.v4.new_code_cell(answer),
        nbformat.v4.new_code_cell(
            pristine["source"] if check_source is None else check_source, id=check_id or pristine["id"]
        ),
    ]
    return nb


def verdict(tmp_path: Path, nb: nbformat.NotebookNode, **limits: int) -> dict:
    """Check the notebook's exercise 2.1 on a copy; assert the file is untouched; return the verdict as a dict."""
    path = tmp_path / "02_plain_cnn.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    (result,) = check_notebook(path, exercise="2.1", limits=Limits(cell=limits.get("cell", 120)))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["02_plain_cnn.ipynb"]
    return result.to_dict()


@pytest.mark.process
def test_a_right_answer_passes_and_a_wrong_one_fails(tmp_path):
    assert verdict(tmp_path, lesson02(RIGHT))["status"] == "passed"
    wrong = verdict(tmp_path, lesson02(WRONG))
    assert wrong["status"] == "failed" and "hint:" in wrong["message"]


FAKES = {
    "redefines check": WRONG + f"\ndef check(*args):\n    print({FAKE_LINE!r})",
    "prints a fake verdict": WRONG + f"\nprint({FAKE_LINE!r})",
    "writes the old check log": (
        WRONG + "\nimport json, os\n"
        "log = os.environ.get('FMNIST_LAB_CHECK_LOG') or 'checks.jsonl'\n"
        "open(log, 'a').write(json.dumps({'exercise': '2.1', 'title': 'conv_output_size', "
        "'status': 'passed', 'message': 'ok'}) + '\\n')"
    ),
    "publishes a verdict with a guessed token": (
        WRONG + "\nfrom IPython.display import publish_display_data\n"
        "_real = conv_output_size\n"
        "def conv_output_size(*args, **kwargs):\n"
        f"    publish_display_data({{{MIME_TYPE!r}: {{'token': '0' * 32, 'exercise': '2.1', 'title': 't', "
        "'status': 'passed', 'message': 'forged'}})\n"
        "    return _real(*args, **kwargs)"
    ),
}


@pytest.mark.process
@pytest.mark.parametrize("name", FAKES)
def test_a_fake_that_leaves_the_checks_alone_gets_the_genuine_verdict(tmp_path, name):
    result = verdict(tmp_path, lesson02(FAKES[name]))
    assert result["status"] == "failed" and "forged" not in result["message"], result


PATCHES = {
    "fmnist_lab.checks.run_check": (
        "import fmnist_lab.checks as c\n"
        "c.run_check = lambda i, *a: c.CheckResult(i, 'conv_output_size', 'passed', 'ok')"
    ),
    "fmnist_lab.checks.check": "import fmnist_lab.checks as c\nc.check = lambda *a: print('ok')",
    "the check of exercise 2.1": (
        "import dataclasses, fmnist_lab.checks as c\n"
        "c.EXERCISES['2.1'] = dataclasses.replace(c.EXERCISES['2.1'], run=lambda f: 'ok')"
    ),
    "fmnist_lab.checks.lesson02.": (  # the check function's code swapped in place
        "import fmnist_lab.checks as c\nc.EXERCISES['2.1'].run.__code__ = (lambda f: 'ok').__code__"
    ),
    "fmnist_lab.checks.toolkit.": (  # every helper the checks compare with, made to agree
        "import fmnist_lab.checks.toolkit as t\n"
        "for name in dir(t):\n"
        "    if name.startswith('expect_'):\n"
        "        setattr(t, name, lambda *a, **k: a[0] if a else None)"
    ),
    "torch.allclose": "import torch\ntorch.allclose = lambda *a, **k: True",
}


@pytest.mark.process
@pytest.mark.parametrize("target", PATCHES)
def test_patching_the_checks_or_what_they_rely_on_is_tampering(tmp_path, target):
    result = verdict(tmp_path, lesson02(WRONG + "\n" + PATCHES[target]))
    assert result["status"] == "error", result
    assert result["message"].startswith("tampering: ") and target in result["message"]
    assert "no credit" in result["message"]


@pytest.mark.process
def test_an_edited_check_cell_is_restored_and_earns_no_credit(tmp_path):
    for edited in (f"print({FAKE_LINE!r})", 'check("2.1", lambda *a: 1)'):
        result = verdict(tmp_path, lesson02(WRONG, check_source=edited))
        assert result["status"] == "failed" and result["message"].endswith("(check cell was modified: restored)")
    result = verdict(tmp_path, lesson02(RIGHT, check_source="check('2.1', conv_output_size)  # mine", check_id="x1"))
    assert result["status"] == "error", result
    assert result["message"].startswith("no credit: the check cell was modified: restored; the restored check passed")


@pytest.mark.process
def test_blank_lines_and_trailing_spaces_are_not_an_edit(tmp_path):
    result = verdict(tmp_path, lesson02(RIGHT, check_source='\ncheck("2.1", conv_output_size)   \n\n'))
    assert result["status"] == "passed", result


@pytest.mark.process
def test_a_deleted_check_cell_earns_no_verdict(tmp_path):
    nb = lesson02(RIGHT)
    del nb.cells[-1]
    path = tmp_path / "02_plain_cnn.ipynb"
    nbformat.write(nb, path)
    results = {r.exercise: r for r in check_notebook(path, limits=Limits(cell=120))}
    assert set(results) == {"2.1", "2.2", "2.3", "2.4"}  # the lesson's exercises, from the file name
    assert results["2.1"].status == "error"
    assert results["2.1"].message.startswith("no verdict from the protected check: the check cell was deleted")
    assert 'check("2.1", conv_output_size)' in results["2.1"].message


@pytest.mark.process
def test_silencing_the_channel_is_no_verdict_and_junk_in_it_is_skipped(tmp_path):
    silenced = RIGHT + "\nget_ipython().display_pub.publish = lambda *a, **k: None"
    result = verdict(tmp_path, lesson02(silenced))
    assert result["status"] == "error" and result["message"].startswith("no verdict from the protected check")
    junk = (
        RIGHT + "\nfrom IPython.display import publish_display_data\n_real = conv_output_size\n"
        "def conv_output_size(*args, **kwargs):\n"
        f"    for junk in ('not json', [1, 2], {{'token': None}}, {{'exercise': 5}}):\n"
        f"        publish_display_data({{{MIME_TYPE!r}: junk}})\n"
        "    return _real(*args, **kwargs)"
    )
    assert verdict(tmp_path, lesson02(junk))["status"] == "passed"


@pytest.mark.process
def test_rewriting_the_package_is_tampering_and_ours_is_untouched(tmp_path):
    real = PACKAGE_DIR / "checks" / "__init__.py"
    before = hashlib.sha256(real.read_bytes()).hexdigest()
    rewrite = RIGHT + "\nimport fmnist_lab.checks as c\nopen(c.__file__, 'a').write('\\n# rewritten\\n')"
    result = verdict(tmp_path, lesson02(rewrite))
    assert result["status"] == "error" and result["message"].startswith("tampering: the run changed ")
    assert "fmnist_lab/checks/__init__.py (private copy)" in result["message"] and "reinstall" in result["message"]
    assert hashlib.sha256(real.read_bytes()).hexdigest() == before


def test_a_protected_verdict_needs_the_token_the_exercise_and_known_fields():
    good = {"token": "t" * 32, "exercise": "2.1", "title": "x", "status": "passed", "message": "ok"}
    cell = nbformat.v4.new_code_cell("")
    for record in (dict(good, token="u" * 32), dict(good, exercise="2.2"), dict(good, status="great"), "junk", 5):
        cell.outputs = [nbformat.v4.new_output("display_data", data={MIME_TYPE: record})]
        assert protected_verdict(cell, "2.1", "t" * 32) is None
    cell.outputs = [nbformat.v4.new_output("display_data", data={MIME_TYPE: json.dumps(good)})]
    assert protected_verdict(cell, "2.1", "t" * 32).status == "passed"
    assert hash_files([Path("/no/such/file")]) == {"/no/such/file": "missing"}


@pytest.mark.process
def test_check_exercise_runs_up_to_that_check_and_reports_it_alone(tmp_path):
    nb = lesson02(RIGHT)
    nb.cells.append(nbformat.v4.new_code_cell("raise SystemExit('cells after the check never run')"))
    path = tmp_path / "02_plain_cnn.ipynb"
    nbformat.write(nb, path)
    result = run_cli("check", str(path), "--exercise", "2.1", "--json")
    assert result.returncode == 0, result.stderr
    assert [(r["exercise"], r["status"]) for r in json.loads(result.stdout)] == [("2.1", "passed")]
    result = run_cli("check", str(path), "--exercise", "9.9")
    assert result.returncode == 2 and "--exercise 9.9" in result.stderr and "2.1, 2.2" in result.stderr


@pytest.mark.process
def test_a_check_call_inside_the_learners_answer_cell_keeps_their_answer(tmp_path):
    nb = lesson02(RIGHT + '\ncheck("2.1", conv_output_size)  # trying it out')
    nb.cells.insert(3, nbformat.v4.new_code_cell('check("2.1", conv_output_size)'))  # and once more, alone
    result = verdict(tmp_path, nb)
    assert result["status"] == "passed" and "modified" not in result["message"]


@pytest.mark.process
def test_the_kernel_runs_with_the_threads_it_is_given(tmp_path):
    # the answer is right only in a kernel with one torch thread: what grade gives each of 2 jobs on 2 cores
    single = RIGHT + "\nimport torch\nif torch.get_num_threads() != 1:\n    conv_output_size = None"
    path = tmp_path / "02_plain_cnn.ipynb"
    nbformat.write(lesson02(single), path)
    (result,) = check_notebook(path, exercise="2.1", limits=Limits(cell=120, threads=1))
    assert result.status == "passed", result
