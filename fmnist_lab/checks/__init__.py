"""Exercise checks: `check("3.2", CNNBatch)` prints one line, ✓ or ✗, saying what matched or what differs.

A check compares the learner's answer with the reference by *behaviour* (outputs on fixed inputs,
shapes, counts, values within a stated tolerance), never by the code's text, so any correct answer
passes. It never raises: a wrong answer, `None`, the wrong type, or an exception inside the learner's
code all become one line. Each lesson's checks live in `fmnist_lab.checks.lessonNN`.

When `$FMNIST_LAB_CHECK_LOG` names a file, every result is also appended to it as a JSON line; that is
how `fmnist-lab check NOTEBOOK` collects the results of a notebook it runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

STATUSES = ("passed", "failed", "not attempted", "error")
SYMBOLS = {"passed": "✓", "failed": "✗", "not attempted": "·", "error": "✗"}


class Mismatch(Exception):
    """A wrong answer: the message says what was expected and what was found."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its id (`3.2`), title, the hint shown on a wrong answer, and its check."""

    id: str
    title: str
    hint: str
    run: Callable[..., str]


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one exercise, as the notebook line and the CLI table show it."""

    exercise: str
    title: str
    status: str
    message: str

    def line(self) -> str:
        """The one line a learner sees: `✓ 3.2 CNNBatch: …`."""
        return f"{SYMBOLS[self.status]} {self.exercise} {self.title}: {self.message}"

    def to_dict(self) -> dict:
        """`{"exercise", "title", "status", "message"}` for `--json`."""
        return asdict(self)


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, title: str, hint: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a check function: it returns the success message or raises `Mismatch`."""

    def register(run: Callable[..., str]) -> Callable[..., str]:
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, title, hint, run)
        return run

    return register


def is_stub_error(exc: BaseException) -> bool:
    """True for the `NotImplementedError("Exercise 3.2: …")` that an untouched exercise raises."""
    return isinstance(exc, NotImplementedError) and str(exc).startswith("Exercise ")


def run_check(exercise_id: str, *answer: Any) -> CheckResult:
    """Check an answer and return the verdict (never raises)."""
    found = EXERCISES.get(exercise_id)
    if found is None:
        known = ", ".join(sorted(EXERCISES, key=lambda k: tuple(map(int, k.split(".")))))
        return CheckResult(exercise_id, "unknown exercise", "error",
                           f"no exercise {exercise_id!r}; known: {known}")
    try:
        if not answer or answer[0] is None:
            raise Mismatch("got None: define your answer in the exercise cell above, then run this cell")
        message = found.run(*answer)
        return CheckResult(found.id, found.title, "passed", message)
    except Mismatch as exc:
        return CheckResult(found.id, found.title, "failed", f"{exc} — hint: {found.hint}")
    except Exception as exc:  # noqa: BLE001 - any error in the learner's code becomes one line
        if is_stub_error(exc):
            return CheckResult(found.id, found.title, "not attempted",
                               "not attempted yet: replace `raise NotImplementedError(...)` with your code")
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return CheckResult(found.id, found.title, "error",
                           f"your code raised {type(exc).__name__}{': ' + detail if detail else ''}"
                           f" — hint: {found.hint}")


def check(exercise_id: str, *answer: Any) -> None:
    """Check an answer and print one line: ✓ what matched, or ✗ what differs with a hint."""
    result = run_check(exercise_id, *answer)
    print(result.line())
    log = os.environ.get("FMNIST_LAB_CHECK_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(result.to_dict()) + "\n")


# Helpers for writing checks: each raises Mismatch with "expected …, got …".

def expect_callable(answer: Any, what: str) -> None:
    """The answer must be a function or class."""
    if not callable(answer):
        raise Mismatch(f"expected {what} (something callable), got {type(answer).__name__}")


def expect_tensor(value: Any, what: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The value must be a tensor (of `shape`, when given)."""
    if not isinstance(value, torch.Tensor):
        raise Mismatch(f"expected {what} to be a torch.Tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Mismatch(f"expected {what} of shape {tuple(shape)}, got {tuple(value.shape)}")
    return value


def expect_close(value: Any, expected: torch.Tensor, what: str, atol: float = 1e-5) -> torch.Tensor:
    """The value must be a tensor of the expected shape, equal within `atol`."""
    value = expect_tensor(value, what, tuple(expected.shape))
    difference = (value.detach().double() - expected.detach().double()).abs().max().item()
    if not difference <= atol:
        raise Mismatch(f"{what} differs from the reference by up to {difference:.3g} (tolerance {atol:g})")
    return value


def expect_equal(value: Any, expected: Any, what: str) -> Any:
    """The value must equal the expected one exactly (numbers, tuples, strings)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not isinstance(expected, torch.Tensor):
        value = value.item()
    if value != expected:
        raise Mismatch(f"expected {what} = {expected!r}, got {value!r}")
    return value


def expect_number(value: Any, expected: float, what: str, tolerance: float = 1e-6) -> float:
    """The value must be a number within `tolerance` of the expected one."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Mismatch(f"expected {what} to be a number, got {type(value).__name__}") from None
    if not abs(number - expected) <= tolerance:
        raise Mismatch(f"expected {what} = {expected:.6g} (± {tolerance:g}), got {number:.6g}")
    return number


from fmnist_lab.checks import lessons  # noqa: E402,F401  (registers every lesson's exercises)
