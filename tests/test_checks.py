"""fmnist_lab.checks: one line per check, never a traceback, whatever the answer is."""

from __future__ import annotations

import inspect
import re

import pytest

from fmnist_lab.checks import (
    EXERCISES,
    Mismatch,
    check,
    exercise,
    expect_close,
    expect_equal,
    expect_number,
    expect_tensor,
    run_check,
)


@exercise("99.1", "double", "multiply by two")
def _check_double(double) -> str:
    expect_equal(double(3), 6, "double(3)")
    return "double(3) = 6"


def _stub(_x):
    raise NotImplementedError("Exercise 99.1: double")


@pytest.mark.parametrize(
    "answer,status,fragment",
    [
        (lambda x: 2 * x, "passed", "double(3) = 6"),
        (lambda x: x + x, "passed", "double(3) = 6"),
        (lambda x: x + 2, "failed", "expected double(3) = 6, got 5 — hint: multiply by two"),
        (None, "failed", "got None"),
        (_stub, "not attempted", "not attempted yet"),
        (lambda x: 1 / 0, "error", "your code raised ZeroDivisionError: division by zero — hint"),
        (lambda: 1, "error", "TypeError"),
        ("not a function", "error", "TypeError"),
    ],
)
def test_every_kind_of_answer_gets_a_verdict(answer, status, fragment):
    result = run_check("99.1", answer)
    assert (result.status, result.exercise, result.title) == (status, "99.1", "double")
    assert fragment in result.message


def test_check_prints_one_line_and_keeps_no_log(capsys, tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("FMNIST_LAB_CHECK_LOG", str(log))  # the old channel: fmnist-lab check no longer reads one
    assert check("99.1", lambda x: 2 * x) is None
    check("99.1", lambda x: 7)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "✓ 99.1 double: double(3) = 6",
        "✗ 99.1 double: expected double(3) = 6, got 7 — hint: multiply by two",
    ]
    assert not log.exists()


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


# The contract every lesson's check keeps, whatever the exercise -------------------------------------

LESSON_EXERCISES = sorted(
    (k for k, e in EXERCISES.items() if e.run.__module__.startswith("fmnist_lab.checks.lesson")),
    key=lambda k: tuple(map(int, k.split("."))),
)  # not the 9x.y registered by tests


def _answers(exercise_id: str, answer) -> tuple:
    """The same answer for every function a check takes (2.3 takes two)."""
    return (answer,) * len(inspect.signature(EXERCISES[exercise_id].run).parameters)


def _raising(kind: str, exc: Exception):
    """A function, or a class whose constructor, raises `exc` whatever it is given."""

    def function(*args, **kwargs):
        raise exc

    class Class:
        def __init__(self, *args, **kwargs):
            raise exc

    return function if kind == "function" else Class


def test_every_lesson_registers_its_exercises():
    import pkgutil

    import fmnist_lab.checks

    modules = {m.name.removeprefix("lesson") for m in pkgutil.iter_modules(fmnist_lab.checks.__path__)}
    lessons = {int(n) for n in modules if n.isdigit()}
    assert {int(k.split(".")[0]) for k in LESSON_EXERCISES} == lessons >= set(range(1, 9))


@pytest.mark.parametrize("exercise_id", LESSON_EXERCISES)
def test_none_is_a_failed_line(exercise_id):
    result = run_check(exercise_id, None)
    assert result.status == "failed" and "got None" in result.message


@pytest.mark.parametrize("kind", ["function", "class"])
@pytest.mark.parametrize("exercise_id", LESSON_EXERCISES)
def test_an_untouched_stub_is_not_attempted(exercise_id, kind):
    stub = _raising(kind, NotImplementedError(f"Exercise {exercise_id}: {EXERCISES[exercise_id].title}"))
    result = run_check(exercise_id, *_answers(exercise_id, stub))
    assert result.status == "not attempted" and "not attempted yet" in result.message


@pytest.mark.parametrize("kind", ["function", "class"])
@pytest.mark.parametrize("exercise_id", LESSON_EXERCISES)
def test_a_crash_in_the_answer_is_an_error_line(exercise_id, kind):
    result = run_check(exercise_id, *_answers(exercise_id, _raising(kind, ValueError("boom"))))
    assert result.status == "error"
    assert "your code raised ValueError: boom — hint: " in result.message


@pytest.mark.parametrize("wrong", [42, [1, 2, 3], "a string"])
@pytest.mark.parametrize("exercise_id", LESSON_EXERCISES)
def test_the_wrong_type_is_a_failed_line(exercise_id, wrong):
    result = run_check(exercise_id, *_answers(exercise_id, wrong))
    assert result.status == "failed"
    assert "something callable" in result.message and "hint: " in result.message


# The toolkit the checks are written with ------------------------------------------------------------


def test_toolkit_parses_numbers_pairs_and_arrays_one_way():
    import numpy as np
    import torch

    from fmnist_lab.checks.toolkit import as_array, as_number, as_pair

    for value in (3, 3.0, np.int64(3), np.float32(3), torch.tensor(3), torch.tensor([3.0]), np.array([[3]])):
        assert as_number(value, "n") == 3.0
    for wrong, message in (
        (True, "expected n to be a number, got bool"),
        ("3", "got str"),
        ([3], "got list"),
        (torch.zeros(2), "expected n to be one number, got a tensor of shape (2,)"),
    ):
        with pytest.raises(Mismatch, match=re.escape(message)):
            as_number(wrong, "n")
    assert as_pair(torch.tensor([1.0, 2.0]), "f()") == (1.0, 2.0)
    with pytest.raises(Mismatch, match=re.escape("expected f() to return a pair (a, b), got tuple of length 3")):
        as_pair((1, 2, 3), "f()", "a pair (a, b)")
    assert as_array([1, 2], "v", 2).tolist() == [1.0, 2.0] and as_array(torch.ones(2, 2), "m").shape == (2, 2)
    with pytest.raises(Mismatch, match=re.escape("expected 3 values, got 2")):
        as_array(np.ones(2), "v", 3)
    with pytest.raises(Mismatch, match=re.escape("expected m to be a torch tensor or NumPy array, got list")):
        as_array([1.0], "m", lists=False)


def test_toolkit_compares_nan_safely_and_names_the_first_matching_mistake():
    import torch

    from fmnist_lab.checks.toolkit import diagnose, is_close, max_difference

    nan = torch.tensor([1.0, float("nan")])
    assert not is_close(nan, nan) and not is_close(float("nan"), 0.0) and not is_close("1", 1.0)
    assert is_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-6])) and is_close(100.0, 100.1, rtol=1e-2)
    assert not is_close(torch.ones(3), torch.ones(2)) and max_difference(torch.ones(2), torch.zeros(2)) == 1.0
    reached = []
    mistakes = [
        ("zeros", torch.zeros(2)),
        ("ones", lambda: torch.ones(2)),
        ("ones again", lambda: reached.append(True) or torch.ones(2)),
    ]
    assert diagnose(torch.ones(2), mistakes, 1e-5) == "ones" and not reached  # later variants are not computed
    assert diagnose(torch.full((2,), 5.0), mistakes, 1e-5) is None


def test_toolkit_catches_a_change_in_place_of_any_argument():
    import numpy as np
    import torch

    from fmnist_lab.checks.toolkit import call_unmodified, watch

    x, gamma = torch.ones(3), torch.ones(2)
    with pytest.raises(Mismatch, match="your function changed its input gamma in place; compute new tensors"):
        call_unmodified(lambda a, b: b.mul_(2), x, gamma, names=("x", "gamma"))
    assert torch.equal(gamma, torch.ones(2))  # the function worked on a copy
    with pytest.raises(Mismatch, match=r"changed its input images in place; .*images\.copy\(\)"):
        call_unmodified(lambda a: a.fill(1), np.zeros(3), names=("images",))
    assert call_unmodified(lambda a, b: a + b, x, gamma[:1], names=("x", "gamma")).tolist() == [2.0, 2.0, 2.0]
    with watch(x=x):
        pass
    with pytest.raises(Mismatch, match="changed its input x in place"), watch(x=x):
        x[0] = 5


def test_toolkit_tells_a_new_cpu_tensor_from_a_function_that_reads_values():
    import torch

    from fmnist_lab.checks.toolkit import expect_device_kept

    x = torch.ones(2, 3)
    expect_device_kept(lambda t: t * 2, x, what="double")
    expect_device_kept(lambda t: t * len(t.sum(1).tolist()), x, what="reads values")  # fine on a GPU: not a mistake
    expect_device_kept(lambda t: t / t.sum().item(), x, what="reads a number")
    with pytest.raises(Mismatch, match="zeros fails for inputs on another device"):
        expect_device_kept(lambda t: torch.zeros(t.shape) + t, x, what="zeros")
    with pytest.raises(Mismatch, match="cpu returns a tensor on the cpu for inputs on another device"):
        expect_device_kept(lambda t: torch.zeros(t.shape), x, what="cpu")


def test_toolkit_builds_seeded_models_without_touching_the_global_rng():
    import torch

    from fmnist_lab.checks.toolkit import first_line, random_cnn_batch, seeded

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, again = seeded(0, lambda: torch.nn.Linear(3, 2)), seeded(0, lambda: torch.nn.Linear(3, 2))
    model = random_cnn_batch(6)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(first.weight, again.weight)
    assert not model.training and torch.equal(
        model.state_dict()["conv1_bn.running_var"], random_cnn_batch(6).state_dict()["conv1_bn.running_var"]
    )
    assert (model.conv1_bn.running_var != 1).all() and (model.conv1_bn.running_mean != 0).all()
    assert first_line(ValueError("first\nsecond")) == "ValueError: first" and first_line(KeyError()) == "KeyError"
