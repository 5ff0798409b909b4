# toolkit: ready
"""The one way to write a check: parse the learner's answer, compare it, name the mistake.

A check reads as *cases → reference → mistake table*. Everything here raises `Mismatch` with
"expected …, got …" (never another exception for a wrong answer) or answers a yes/no question
without raising, and none of it touches the learner's global random state.

    got = call_unmodified(batch_norm_forward, x, gamma, beta, eps, names=("x", "gamma", "beta"))
    expect_tensor(got, what, tuple(expected.shape))
    if not is_close(got, expected, atol=1e-5):
        reason = diagnose(got, [("you used the unbiased variance …", unbiased)], close=1e-5)
        ...
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from fmnist_lab.checks import Mismatch

T = TypeVar("T")


# --- the learner's answer as a number, a tuple, an array -------------------------------------------


def as_scalar(value: Any, what: str) -> Any:
    """A one-element tensor/array or NumPy scalar as a Python scalar (else unchanged): `{got!r}` then prints `5120`."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if len(value.reshape(-1)) != 1:
            kind = "a tensor" if isinstance(value, torch.Tensor) else "an array"
            raise Mismatch(f"expected {what} to be one number, got {kind} of shape {tuple(value.shape)}")
        return value.item()
    return value.item() if isinstance(value, np.generic) else value


def as_number(value: Any, what: str) -> float:
    """A number however the learner returns it (int, float, NumPy scalar, 0-d or 1-element tensor or array)."""
    item = as_scalar(value, what)
    if isinstance(item, bool) or not isinstance(item, numbers.Real):
        raise Mismatch(f"expected {what} to be a number, got {type(item).__name__}")
    return float(item)


def as_tuple(value: Any, what: str, length: int, returns: str) -> tuple:
    """`length` results (a tuple, a list, or a tensor/array holding them) as a tuple, so unpacking cannot crash."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1:
        flat = value.reshape(-1)
        value = tuple(value) if len(value) == length else tuple(flat) if len(flat) == length else value
    if not isinstance(value, (tuple, list)) or len(value) != length:
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, (torch.Tensor, np.ndarray)) else ""
        size = f" of length {len(value)}" if isinstance(value, (tuple, list)) else shape
        raise Mismatch(f"expected {what} to return {returns}, got {type(value).__name__}{size}")
    return tuple(value)


def as_pair(value: Any, what: str, returns: str = "a pair") -> tuple[Any, Any]:
    """Two results, e.g. `as_pair(result, "pixel_mean_std(images)", "two numbers (mean, std)")`."""
    return as_tuple(value, what, 2, returns)  # type: ignore[return-value]


def as_array(value: Any, what: str, length: int | None = None, *, lists: bool = True, why: str = "") -> np.ndarray:
    """A tensor, array (or, with `lists`, a list or tuple) of numbers as float64; with `length`, one value each."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().double().numpy()
    elif isinstance(value, np.ndarray):
        try:
            array = value.astype(np.float64)
        except (TypeError, ValueError):
            raise Mismatch(f"expected {what} to hold numbers, got dtype {value.dtype}") from None
    elif lists and isinstance(value, (list, tuple)):
        array = np.array([as_number(v, f"each value of {what}") for v in value], dtype=np.float64)
    else:
        count = f"{length} " if length is not None else ""
        kinds = f"a tensor, array or list of {count}numbers" if lists else "a torch tensor or NumPy array"
        raise Mismatch(f"expected {what} to be {kinds}, got {type(value).__name__}")
    if length is not None:
        if array.ndim != 1:
            raise Mismatch(f"expected {what} to be {length} values, shape ({length},), got shape {array.shape}")
        if len(array) != length:
            raise Mismatch(f"expected {length} values{why}, got {len(array)}")
    return array


# --- comparing -----------------------------------------------------------------------------------


def _float64(value: Any) -> torch.Tensor | None:
    """A tensor, array or real number as a float64 tensor; None for anything else."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.float64))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    return None


def is_close(value: Any, expected: Any, atol: float = 1e-5, rtol: float = 0.0) -> bool:
    """Whether |value − expected| ≤ atol + rtol·|expected| everywhere (NaN never is); never raises."""
    try:
        got, want = _float64(value), _float64(expected)
        if got is None or want is None:
            return False
        if tuple(got.shape) != tuple(want.shape) and not (isinstance(expected, numbers.Real) or want.ndim == 0):
            return False
        return bool(torch.isclose(got, want.expand_as(got), rtol=rtol, atol=atol).all())
    except Exception:  # noqa: BLE001 - a strange value is simply "not close"
        return False


def max_difference(value: Any, expected: Any) -> float:
    """The largest absolute difference, for "differs by up to …" (NaN when either holds NaN)."""
    got, want = _float64(value), _float64(expected)
    if got is None or want is None:
        return float("nan")
    return (got - want).abs().max().item() if got.numel() else 0.0


def diagnose(
    got: Any, mistakes: Iterable[tuple[str, Any]], close: float | Callable[[Any, Any], bool] = 1e-5
) -> str | None:
    """The explanation of the first known mistake whose result equals `got` (mistakes tried in order), else None.

    Each mistake is `(explanation, wrong variant)`; a variant may be a function of no arguments (not a
    module), computed only when reached. `close` is an atol for `is_close`, or a predicate (got, variant).
    """
    same = close if callable(close) else functools.partial(is_close, atol=close)
    for explanation, variant in mistakes:
        if callable(variant) and not isinstance(variant, nn.Module):
            variant = variant()
        if same(got, variant):
            return explanation
    return None


# --- the learner's inputs stay as they were --------------------------------------------------------


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value.copy()


def _unchanged(before: Any, after: Any) -> bool:
    """Equal shape, dtype and values (NaN equal to NaN)."""
    if isinstance(after, torch.Tensor):
        after = after.detach()
        return (
            before.shape == after.shape
            and before.dtype == after.dtype
            and (
                torch.equal(before, after)
                or (after.is_floating_point() and torch.allclose(before, after, rtol=0, atol=0, equal_nan=True))
            )
        )
    return before.shape == after.shape and np.array_equal(before, after, equal_nan=after.dtype.kind in "fc")


@contextlib.contextmanager
def watch(*, advice: str | None = None, **tensors: Any) -> Iterator[None]:
    """Raise Mismatch when the block changed any of `tensors` (name=tensor or array) in place."""
    before = {name: _copy(value) for name, value in tensors.items() if isinstance(value, (torch.Tensor, np.ndarray))}
    yield
    for name, copy in before.items():
        if not _unchanged(copy, tensors[name]):
            how = advice or (
                f"compute new tensors instead (or work on a copy, "
                f"{name}.{'clone' if isinstance(copy, torch.Tensor) else 'copy'}())"
            )
            raise Mismatch(f"your function changed its input {name} in place; {how}")


def call_unmodified(
    fn: Callable[..., T], *args: Any, names: Sequence[str] = (), advice: str | None = None, **kwargs: Any
) -> T:
    """`fn(*args, **kwargs)` on copies of every tensor/array argument; Mismatch if it changed any in place."""
    args = tuple(_copy(a) if isinstance(a, (torch.Tensor, np.ndarray)) else a for a in args)
    kwargs = {k: _copy(v) if isinstance(v, (torch.Tensor, np.ndarray)) else v for k, v in kwargs.items()}
    labels = [names[i] if i < len(names) else f"argument {i + 1}" for i in range(len(args))]
    with watch(advice=advice, **dict(zip(labels, args)), **kwargs):
        return fn(*args, **kwargs)


# --- reference models without touching the learner's random state --------------------------------


def seeded(seed: int, build: Callable[[], T]) -> T:
    """`build()` after `torch.manual_seed(seed)` inside `fork_rng`: reproducible, the learner's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def random_cnn_batch(seed: int, image_size: int = 16) -> nn.Module:
    """A `CNNBatch` in eval mode with seeded random weights and batch-norm statistics far from the defaults."""
    from fmnist_lab.models import CNNBatch

    generator = torch.Generator().manual_seed(seed)
    model = seeded(seed, lambda: CNNBatch(image_size=image_size))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                values = 0.5 + torch.rand(tensor.shape, generator=generator)
            elif name.endswith("running_mean"):
                values = 0.1 * torch.randn(tensor.shape, generator=generator)
            elif "bn" in name and name.endswith("weight"):
                values = 1 + 0.2 * torch.randn(tensor.shape, generator=generator)
            elif name.endswith("weight"):
                values = torch.randn(tensor.shape, generator=generator) * (2 / tensor[0].numel()) ** 0.5
            else:
                values = 0.1 * torch.randn(tensor.shape, generator=generator)
            tensor.copy_(values)
    return model.eval()


def state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Each state-dict key with its shape, to compare a learner's architecture with the reference's."""
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def own_rng(check: Callable[..., T]) -> Callable[..., T]:
    """Run a check inside `fork_rng`: whatever it or the learner's code draws, the learner's global RNG is unchanged."""

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> T:
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return run


def one_thread(check: Callable[..., T]) -> Callable[..., T]:
    """Run a check on one CPU thread: its tensors are tiny, and on a busy machine a second thread only waits."""

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> T:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """`ValueError: the first line of its message` (at most `limit` characters of it), so an error stays one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:limit] if limit is not None else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- expectations: each raises Mismatch with "expected …, got …" -----------------------------------


def expect_callable(answer: Any, what: str) -> None:
    """The answer must be a function or class."""
    if not callable(answer):
        raise Mismatch(f"expected {what} (something callable), got {type(answer).__name__}")


def expect_tensor(
    value: Any, what: str, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The value must be a tensor (of `shape` and `dtype`, when given)."""
    if not isinstance(value, torch.Tensor):
        raise Mismatch(f"expected {what} to be a torch.Tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Mismatch(f"expected {what} of shape {tuple(shape)}, got {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise Mismatch(f"expected {what} of dtype {dtype}, got {value.dtype}")
    return value


def expect_close(value: Any, expected: torch.Tensor, what: str, atol: float = 1e-5) -> torch.Tensor:
    """The value must be a tensor of the expected shape, equal within `atol`."""
    value = expect_tensor(value, what, tuple(expected.shape))
    difference = max_difference(value, expected)
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
    number = as_number(value, what)
    if not abs(number - expected) <= tolerance:
        raise Mismatch(f"expected {what} = {expected:.6g} (± {tolerance:g}), got {number:.6g}")
    return number


def expect_int(value: Any, expected: int, what: str) -> int:
    """A size or a count must be a whole number (int, NumPy integer, integer tensor) equal to `expected`."""
    as_number(value, what)
    item = as_scalar(value, what)
    if item != expected:
        raise Mismatch(f"expected {what} = {expected:,}, got {item!r}")
    if not isinstance(item, numbers.Integral):
        raise Mismatch(
            f"{what} returned {item!r}, a {type(item).__name__}; a size or a count is a whole number: return an int"
        )
    return int(item)
