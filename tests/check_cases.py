"""What the tests of the lessons' checks assert about an answer: it passes, or it fails and the message names why."""

from __future__ import annotations

from typing import Any

from fmnist_lab.checks import CheckResult, run_check


def passes(exercise_id: str, *answers: Any, fragment: str = "") -> CheckResult:
    """The answer (2.3 takes two) passes, and its message holds `fragment`."""
    result = run_check(exercise_id, *answers)
    assert result.status == "passed", result.message
    assert fragment in result.message, result.message
    return result


def fails(exercise_id: str, *answers: Any, fragment: str) -> CheckResult:
    """The answer fails (not an error): the message holds `fragment`, the cause, and ends with the hint."""
    result = run_check(exercise_id, *answers)
    assert result.status == "failed", result.message
    assert fragment in result.message, result.message
    assert "— hint: " in result.message, result.message
    return result
