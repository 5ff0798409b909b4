"""Exercise checks: `check("3.2", CNNBatch)` prints one line, ✓ or ✗, saying what matched or what differs.

A check compares the learner's answer with the reference by *behaviour* (outputs on fixed inputs,
shapes, counts, values within a stated tolerance), never by the code's text, so any correct answer
passes. It never raises: a wrong answer, `None`, the wrong type, or an exception inside the learner's
code all become one line. Each lesson's checks live in `fmnist_lab.checks.lessonNN`.

`fmnist-lab check NOTEBOOK` doesn't believe what this `check` prints: it restores each check cell from the
pristine lesson and gathers verdicts through the protected channel of `fmnist_lab.checks.guard`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("passed", "failed", "not attempted", "error")
SYMBOLS = {"passed": "✓", "failed": "✗", "not attempted": "·", "error": "✗"}


class Mismatch(Exception):
    """A wrong answer: the message says what was expected and what was found."""


# The helpers for writing checks live in the toolkit; re-exported here so `from fmnist_lab.checks import
# expect_close` keeps working.
from fmnist_lab.checks.toolkit import (  # noqa: E402,F401
    expect_callable,
    expect_close,
    expect_equal,
    expect_number,
    expect_tensor,
    first_line,
    isolated,
)


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
        return CheckResult(exercise_id, "unknown exercise", "error", f"no exercise {exercise_id!r}; known: {known}")
    try:
        if not answer or answer[0] is None:
            raise Mismatch("got None: define your answer in the exercise cell above, then run this cell")
        with isolated():  # the learner's RNG untouched, one thread
            message = found.run(*answer)
        return CheckResult(found.id, found.title, "passed", message)
    except Mismatch as exc:
        return CheckResult(found.id, found.title, "failed", f"{exc} — hint: {found.hint}")
    except Exception as exc:  # noqa: BLE001 - any error in the learner's code becomes one line
        if is_stub_error(exc):
            return CheckResult(
                found.id,
                found.title,
                "not attempted",
                "not attempted yet: replace `raise NotImplementedError(...)` with your code",
            )
        return CheckResult(found.id, found.title, "error", f"your code raised {first_line(exc)} — hint: {found.hint}")


def check(exercise_id: str, *answer: Any) -> None:
    """Check an answer and print one line: ✓ what matched, or ✗ what differs with a hint."""
    print(run_check(exercise_id, *answer).line())


from fmnist_lab.checks import lessons  # noqa: E402,F401  (registers every lesson's exercises)
