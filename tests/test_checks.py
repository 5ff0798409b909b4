"""fmnist_lab.checks: one line per check, never a traceback, whatever the answer is."""

from __future__ import annotations

import json

import pytest

from fmnist_lab.checks import (EXERCISES, Mismatch, check, exercise, expect_close, expect_equal,
                               expect_number, expect_tensor, run_check)


@exercise("99.1", "double", "multiply by two")
def _check_double(double) -> str:
    expect_equal(double(3), 6, "double(3)")
    return "double(3) = 6"


def _stub(_x):
    raise NotImplementedError("Exercise 99.1: double")


@pytest.mark.parametrize("answer,status,fragment", [
    (lambda x: 2 * x, "passed", "double(3) = 6"),
    (lambda x: x + x, "passed", "double(3) = 6"),
    (lambda x: x + 2, "failed", "expected double(3) = 6, got 5 — hint: multiply by two"),
    (None, "failed", "got None"),
    (_stub, "not attempted", "not attempted yet"),
    (lambda x: 1 / 0, "error", "your code raised ZeroDivisionError: division by zero — hint"),
    (lambda: 1, "error", "TypeError"),
    ("not a function", "error", "TypeError"),
])
def test_every_kind_of_answer_gets_a_verdict(answer, status, fragment):
    result = run_check("99.1", answer)
    assert (result.status, result.exercise, result.title) == (status, "99.1", "double")
    assert fragment in result.message


def test_check_prints_one_line_and_logs_json(capsys, tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("FMNIST_LAB_CHECK_LOG", str(log))
    assert check("99.1", lambda x: 2 * x) is None
    check("99.1", lambda x: 7)
    out = capsys.readouterr().out.splitlines()
    assert out == ["✓ 99.1 double: double(3) = 6",
                   "✗ 99.1 double: expected double(3) = 6, got 7 — hint: multiply by two"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in records] == ["passed", "failed"]
    assert set(records[0]) == {"exercise", "title", "status", "message"}


def test_unknown_exercise_lists_the_known_ones():
    result = run_check("42.7", lambda: None)
    assert result.status == "error" and "no exercise '42.7'" in result.message and "99.1" in result.message


def test_registering_an_id_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        exercise("99.1", "again", "")(lambda f: "")
    assert EXERCISES["99.1"].title == "double"


def test_expect_helpers_say_what_differs():
    import torch

    with pytest.raises(Mismatch, match=r"expected x to be a torch.Tensor, got list"):
        expect_tensor([1, 2], "x")
    with pytest.raises(Mismatch, match=r"expected x of shape \(2, 3\), got \(3, 2\)"):
        expect_tensor(torch.zeros(3, 2), "x", (2, 3))
    with pytest.raises(Mismatch, match=r"differs from the reference by up to 0.5 \(tolerance 1e-05\)"):
        expect_close(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), "x")
    with pytest.raises(Mismatch, match=r"expected n to be a number, got str"):
        expect_number("five", 5, "n")
    assert expect_number(torch.tensor(5.0), 5, "n") == 5.0
