"""The one way to write a check: parse the learner's answer, compare it, name the mistake.

A check reads as *cases → reference → mistake table*. Everything here raises `Mismatch` with
"expected …, got …" (never another exception for a wrong answer) or answers a yes/no question
without raising, and none of it touches the learner's global random state.

    got = call_unmodified(batch_norm_forward, x, gamma, beta, eps, names=("x", "gamma", "beta"))
    expect_tensor(got, what, tuple(expected.shape))
    expect_same(got, expected, what, [("you used the unbiased variance …", unbiased)], atol=1e-5)

Beyond the values: `expect_finite` (NaN and inf), `expect_dtype_kept`, `expect_device_kept` (on the
`meta` device), `expect_gradients`, `forbid_call` and `without_package` (a shortcut the lesson rules
out) and `other_input` for functions; `expect_class`, `build_module`, `forward_batches` (other batch
sizes, a squeezed output, the mode), `expect_model_gradients`, `expect_model_device_and_dtype` and
`expect_constructor_arguments` for models.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import deepcopy
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from fmnist_lab.checks import Mismatch

T = TypeVar("T")
Mistakes = Iterable[tuple[str, Any]]  # a mistake table: (explanation, the wrong variant's result)


# --- the learner's answer as a number, a tuple, an array -------------------------------------------


def as_scalar(value: Any, what: str) -> Any:
    """A one-element tensor/array or NumPy scalar as a Python scalar (else unchanged): `{got!r}` then prints `5120`."""
    if isinstance(value, (Tensor, np.ndarray)):
        if len(value.reshape(-1)) != 1:
            kind = "a tensor" if isinstance(value, Tensor) else "an array"
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
    if isinstance(value, (Tensor, np.ndarray)) and value.ndim >= 1:
        flat = value.reshape(-1)
        value = tuple(value) if len(value) == length else tuple(flat) if len(flat) == length else value
    if not isinstance(value, (tuple, list)) or len(value) != length:
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, (Tensor, np.ndarray)) else ""
        size = f" of length {len(value)}" if isinstance(value, (tuple, list)) else shape
        raise Mismatch(f"expected {what} to return {returns}, got {type(value).__name__}{size}")
    return tuple(value)


def as_pair(value: Any, what: str, returns: str = "a pair") -> tuple[Any, Any]:
    """Two results, e.g. `as_pair(result, "pixel_mean_std(images)", "two numbers (mean, std)")`."""
    return as_tuple(value, what, 2, returns)  # type: ignore[return-value]


def as_array(value: Any, what: str, length: int | None = None, *, lists: bool = True, why: str = "") -> np.ndarray:
    """A tensor, array (or, with `lists`, a list or tuple) of numbers as float64; with `length`, one value each."""
    if isinstance(value, Tensor):
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


def _float64(value: Any) -> Tensor | None:
    """A tensor, array or real number as a float64 tensor; None for anything else."""
    if isinstance(value, Tensor):
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
        if got is None or want is None or (got.shape != want.shape and want.ndim != 0):
            return False  # a number (0-d) is compared with every element, anything else needs the same shape
        return bool(torch.isclose(got, want.expand_as(got), rtol=rtol, atol=atol).all())
    except Exception:  # noqa: BLE001 - a strange value is simply "not close"
        return False


def max_difference(value: Any, expected: Any) -> float:
    """The largest absolute difference, for "differs by up to …" (NaN when either holds NaN)."""
    got, want = _float64(value), _float64(expected)
    if got is None or want is None:
        return float("nan")
    return (got - want).abs().max().item() if got.numel() else 0.0


def diagnose(got: Any, mistakes: Mistakes, close: float | Callable[[Any, Any], bool] = 1e-5) -> str | None:
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


def name_the_mistake(got: Any, mistakes: Mistakes, close: Any = 1e-5, *, found: str = "", otherwise: str) -> NoReturn:
    """Raise Mismatch: `found` followed by the first mistake `got` matches (as `diagnose`), else `otherwise`."""
    reason = diagnose(got, mistakes, close)
    raise Mismatch(found + reason if reason else otherwise)


def expect_same(
    got: Any,
    expected: Any,
    what: str,
    mistakes: Mistakes = (),
    *,
    atol: float = 1e-5,
    close: float | None = None,
    found: str | None = None,
    otherwise: str = "",
) -> None:
    """`got` equals `expected` within `atol`; else the first mistake it matches (within `close`) is named, else the gap.

    A matched mistake reads `found` (by default `what` and a space) followed by its explanation; the gap
    reads `otherwise`, by default `expect_close`'s "… differs from the reference by up to …".
    """
    if is_close(got, expected, atol=atol):
        return
    if reason := diagnose(got, mistakes, atol if close is None else close):
        raise Mismatch((f"{what} " if found is None else found) + reason)
    if otherwise:
        raise Mismatch(otherwise)
    expect_close(got, expected, what, atol=atol)


# --- the learner's inputs stay as they were --------------------------------------------------------


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, Tensor) else value.copy()


def _unchanged(before: Any, after: Any) -> bool:
    """Equal shape, dtype and values (NaN equal to NaN)."""
    if isinstance(after, Tensor):
        after = after.detach()
        if before.shape != after.shape or before.dtype != after.dtype:
            return False
        if after.is_floating_point():  # a tolerance of 0 with equal_nan: equal values, NaN equal to NaN
            return torch.allclose(before, after, rtol=0, atol=0, equal_nan=True)
        return torch.equal(before, after)
    return before.shape == after.shape and np.array_equal(before, after, equal_nan=after.dtype.kind in "fc")


@contextlib.contextmanager
def watch(*, advice: str | None = None, **tensors: Any) -> Iterator[None]:
    """Raise Mismatch when the block changed any of `tensors` (name=tensor or array) in place."""
    before = {name: _copy(value) for name, value in tensors.items() if isinstance(value, (Tensor, np.ndarray))}
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
    args = tuple(_copy(a) if isinstance(a, (Tensor, np.ndarray)) else a for a in args)
    kwargs = {k: _copy(v) if isinstance(v, (Tensor, np.ndarray)) else v for k, v in kwargs.items()}
    labels = [names[i] if i < len(names) else f"argument {i + 1}" for i in range(len(args))]
    with watch(advice=advice, **dict(zip(labels, args)), **kwargs):
        return fn(*args, **kwargs)


def watch_module(model: nn.Module, what: str, advice: str) -> contextlib.AbstractContextManager[None]:
    """`watch` over every tensor of `model.state_dict()` (weights and buffers), named `what.key`."""
    return watch(advice=advice, **{f"{what}.{key}": value for key, value in model.state_dict().items()})


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


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """What every check runs in (`run_check` enters it): `fork_rng`, so the learner's global RNG is left as it was
    whatever the check or the learner's code draws, and one CPU thread (the tensors are small: on a busy machine a
    second thread only waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """`ValueError: the first line of its message` (at most `limit` characters of it), so an error stays one line."""
    text = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- what kind of answer: a function, a class, an instance ----------------------------------------


def expect_function(answer: Any, what: str) -> None:
    """A function, not a built layer: `check("3.1", batch_norm_forward)`, not `check("3.1", nn.BatchNorm2d(3))`."""
    if isinstance(answer, nn.Module):
        raise Mismatch(f"expected {what}, got a {type(answer).__name__} layer (an instance): write the function")
    expect_callable(answer, what)


def expect_class(answer: Any, what: str, example: str) -> None:
    """A class, not an instance of it: `check("3.2", CNNBatch)`, not `check("3.2", CNNBatch())`."""
    if isinstance(answer, nn.Module):
        raise Mismatch(
            f"expected {what}, got an instance of {type(answer).__name__}: pass the class itself, {example}, "
            "without the parentheses that build a model"
        )
    expect_callable(answer, what)


LIBRARIES = frozenset({"torch", "torchvision", "fmnist_lab", "sklearn", "numpy", "scipy", "onnx", "onnxruntime"})


def expect_plain_function(answer: Any, what: str) -> None:
    """A function, neither a built layer nor a layer's or a library's class: `ema_update`, not `recipes.EMA`.

    A class of the learner's own that is not a layer is called like a function (it may be a stub).
    """
    if isinstance(answer, type) and (issubclass(answer, nn.Module) or answer.__module__.split(".")[0] in LIBRARIES):
        raise Mismatch(f"expected {what}, got the class {answer.__name__}: pass your function, without building it")
    expect_function(answer, what)


def build_module(answer: Callable[..., Any], call: str, advice: str, **kwargs: Any) -> nn.Module:
    """`answer(**kwargs)` as an nn.Module; a constructor that refuses the arguments says `advice`."""
    try:
        model = answer(**kwargs)
    except TypeError as exc:
        raise Mismatch(f"{call} raised {first_line(exc, 160)}: {advice}") from None
    if not isinstance(model, nn.Module):
        raise Mismatch(f"expected {call} to be an nn.Module, got {type(model).__name__}")
    return model


OTHER_SIZES = {"out_1": 8, "out_2": 12, "number_of_classes": 7}  # non-default constructor arguments of the CNNs
USE_THE_SIZES = "build the layers from out_1, out_2 and number_of_classes instead of the numbers 16, 32 and 10"


def expect_constructor_arguments(answer: Callable[..., Any], name: str, reference: type, images: int = 0) -> None:
    """`name(out_1=8, out_2=12, number_of_classes=7)` has the reference's layer shapes (and, with `images`, runs)."""
    call = f"{name}(" + ", ".join(f"{k}={v}" for k, v in OTHER_SIZES.items()) + ")"
    small = build_module(answer, call, f"keep the constructor's arguments and {USE_THE_SIZES}", **OTHER_SIZES)
    got = state_shapes(small)
    for key, shape in state_shapes(reference(**OTHER_SIZES)).items():
        if key in got and got[key] != shape:
            raise Mismatch(f"{call} gives {key} the shape {got[key]}, expected {shape}: {USE_THE_SIZES}")
    if images:
        with torch.no_grad():
            out = small.eval()(torch.rand(images, 1, 16, 16, generator=torch.Generator().manual_seed(4)))
        expect_tensor(out, f"the output of {call} for {images} images", (images, OTHER_SIZES["number_of_classes"]))


# --- the answer behaves like a PyTorch operation: finite, same dtype and device, differentiable ---


def expect_finite(value: Any, what: str) -> None:
    """NaN or infinity in the answer gets its own message instead of "differs by up to nan"."""
    values = _float64(value)
    if values is None:
        return
    nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
    if nan or inf:
        found = " and ".join(text for count, text in ((nan, f"{nan:,} NaN"), (inf, f"{inf:,} infinite")) if count)
        raise Mismatch(
            f"{what} holds {found} value{'s' if nan + inf > 1 else ''} (of {values.numel():,}): look for a "
            "division by zero, or the square root or logarithm of a negative number"
        )


def expect_dtype_kept(value: Tensor, like: Tensor, what: str) -> None:
    """The result has its input's dtype, as every PyTorch layer's has: float64 from float32 would not fit the next layer."""
    if value.dtype != like.dtype:
        raise Mismatch(
            f"expected {what} of dtype {like.dtype} like its input, got {value.dtype}: compute in the input's "
            "dtype (no .double() or .float() on the way, no NumPy float64 round trip)"
        )


_DEVICE_ERRORS = ("same device", "expected device", "cannot copy out of meta")
_READS_VALUES = ("tolist", "item", "numpy", "__array__", "__bool__", "__float__", "__int__", "__index__")


class _ReadsValues(Exception):
    """The function reads a tensor's values (`.tolist()`, `.item()`, NumPy, `if x > 0`), which `meta` has none of."""


class _StopAtValueReads(torch.overrides.TorchFunctionMode):
    """Raise `_ReadsValues` where a function reads values: fine on a GPU, impossible on `meta`, so not a mistake."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _READS_VALUES:
            raise _ReadsValues(func.__name__)
        return func(*args, **(kwargs or {}))


def expect_device_kept(fn: Callable[..., Any], *args: Any, what: str) -> None:
    """Run `fn` on copies of its tensor arguments on PyTorch's `meta` device: every tensor it returns must be there too.

    This machine has no GPU, so the `meta` device stands in for one: a result built with `torch.zeros(…)`
    and no `device=` comes back on the CPU. A function that reads values (`.item()`, `.tolist()`, NumPy) cannot
    run on `meta`; it is then checked on the CPU only, which is the limit of this check.
    """
    meta = tuple(a.detach().to("meta") if isinstance(a, Tensor) else a for a in args)
    advice = "create new tensors on the input's device (torch.zeros_like(x), or device=x.device)"
    try:
        with _StopAtValueReads():
            result = fn(*meta)
    except _ReadsValues:
        return
    except Exception as exc:  # noqa: BLE001 - only a device error is a mistake here
        if any(text in str(exc).lower() for text in _DEVICE_ERRORS):
            raise Mismatch(f"{what} fails for inputs on another device ({first_line(exc, 100)}): {advice}") from None
        return
    results = result if isinstance(result, (tuple, list)) else (result,)
    for item in results:
        if isinstance(item, Tensor) and item.device.type != "meta":
            raise Mismatch(f"{what} returns a tensor on the {item.device.type} for inputs on another device: {advice}")


def on_meta(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of `model` on PyTorch's `meta` device (it stands in for a GPU), optionally in another dtype."""
    return deepcopy(model).to(device="meta", dtype=dtype)


def expect_gradients(
    fn: Callable[..., Any], reference: Callable[..., Any], inputs: dict[str, Tensor], *rest: Any, what: str
) -> None:
    """Gradients flow from `fn(*inputs, *rest)` back to each input, equal to the reference's (both run in float64)."""
    weights: list[Tensor] = []

    def backward(function: Callable[..., Any]) -> list[Tensor]:
        leaves = [value.detach().double().requires_grad_(True) for value in inputs.values()]
        output = function(*leaves, *rest)
        if not isinstance(output, Tensor) or output.grad_fn is None:
            raise Mismatch(
                f"no gradient flows back through {what}: its output is cut off from its inputs (torch.no_grad(), "
                ".detach(), .item() or NumPy inside); a network trains through this step, so keep it in tensors"
            )
        if not weights:  # random weights: with equal weights, batch norm's gradient for x would be 0
            weights.append(torch.randn(output.shape, generator=torch.Generator().manual_seed(0), dtype=output.dtype))
        (output * weights[0]).sum().backward()
        return [leaf.grad for leaf in leaves]

    mine, theirs = backward(fn), backward(reference)
    for name, got, expected in zip(inputs, mine, theirs):
        if got is None:
            raise Mismatch(f"no gradient reaches {name} through {what}: keep {name} in the computation as a tensor")
        if not is_close(got, expected, atol=1e-6, rtol=1e-4):
            raise Mismatch(
                f"{what} is right, but its gradient with respect to {name} differs from the reference's by up to "
                f"{max_difference(got, expected):.3g}: part of the computation was detached (e.g. the mean or the "
                "variance); keep every step differentiable"
            )


@contextlib.contextmanager
def forbid_call(owner: Any, name: str, why: str) -> Iterator[None]:
    """Raise Mismatch(`why`) when the block called `owner.name`: a library shortcut the lesson's text rules out.

    It sees calls made through the attribute at call time (`F.batch_norm` and `nn.BatchNorm2d` both go
    through `torch.batch_norm`); a name bound before the check runs, or a private alias, is not seen.
    """
    original, calls = getattr(owner, name), []

    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield
    finally:
        setattr(owner, name, original)
    if calls:
        raise Mismatch(why)


@contextlib.contextmanager
def forbid_calls(owners_and_names: Iterable[tuple[Any, str]], why: str) -> Iterator[None]:
    """`forbid_call` for several shortcuts at once, e.g. the package's own copy of the answer and a library's."""
    with contextlib.ExitStack() as stack:
        for owner, name in owners_and_names:
            if hasattr(owner, name):
                stack.enter_context(forbid_call(owner, name, why))
        yield


PACKAGE = "the package's own {} is the answer itself: write the function, as the exercise asks"


def without_package(
    owner: Any, *names: str, also: Iterable[tuple[Any, str]] = (), why: str = ""
) -> contextlib.AbstractContextManager[None]:
    """`forbid_calls` on the package's own answer (`owner.names`, e.g. `recipes.ema_update`) and on `also`."""
    label = f"{owner.__name__.rsplit('.', 1)[-1]}.{names[0]}"
    return forbid_calls([*((owner, name) for name in names), *also], why or PACKAGE.format(label))


@contextlib.contextmanager
def other_input(first: str, now: str) -> Iterator[None]:
    """An error on a second, differently sized input becomes Mismatch: the answer worked on `first`, not on `now`.

    With `now == first` (the first input itself) an error is left as it is.
    """
    try:
        yield
    except Mismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's code on another size
        from fmnist_lab.checks import is_stub_error  # defined after the toolkit is imported

        if now == first or is_stub_error(exc):
            raise
        raise Mismatch(
            f"your function works on {first} but fails on {now} ({first_line(exc, 100)}): do not write sizes "
            "into it; take them from the input's shape"
        ) from None


# --- a model: other batch sizes, the mode it was set to, gradients, dtype and device ---------------


def forward_batches(model: nn.Module, x: Tensor, sizes: Sequence[int], classes: int) -> list[Tensor]:
    """The model's outputs (N, classes) for the first N images of x, each N in `sizes` (the first is the usual one).

    A batch size written into `forward` (`x.reshape(100, -1)`) and a squeezed output (shape `(10,)` for
    one image) are named, and so is a forward that switches the mode the caller chose.
    """
    outputs, training = [], model.training
    for size in sizes:
        try:
            out = model(x[:size].clone())
            expect_mode_kept(model, training, "your forward")
        except Exception as exc:  # noqa: BLE001 - the learner's forward on another batch size
            if size == sizes[0]:
                raise
            raise Mismatch(
                f"your model works on {sizes[0]} images but fails on {size} ({first_line(exc, 100)}): do not write "
                "the batch size into forward; flatten with torch.flatten(x, 1) or x.view(x.size(0), -1)"
            ) from None
        if isinstance(out, Tensor) and size == 1 and tuple(out.shape) == (classes,):
            raise Mismatch(
                f"for one image your model returns shape ({classes},), expected (1, {classes}): keep the batch "
                "dimension (no .squeeze())"
            )
        expect_tensor(out, f"the output for a batch of {size}", (size, classes))
        expect_finite(out, f"the output for a batch of {size}")
        outputs.append(out)
    return outputs


def expect_mode_kept(model: nn.Module, training: bool, what: str) -> None:
    """After a forward pass every submodule is still in the mode the caller chose: forward never switches it."""
    switched = [name or type(model).__name__ for name, module in model.named_modules() if module.training != training]
    if switched:
        mode, other = ("training", "eval") if training else ("eval", "training")
        raise Mismatch(
            f"{what} in {mode} mode left {', '.join(switched[:3])} in {other} mode: the caller chooses the mode, "
            "so do not call .train() or .eval() inside forward"
        )


def expect_mode_restored(model: nn.Module, training: bool, what: str) -> None:
    """After a function (not a forward) used the model, every submodule is back in the mode the caller gave it."""
    if any(module.training != training for module in model.modules()):
        given, left = ("training", "eval") if training else ("eval", "training")
        raise Mismatch(
            f"{what} was given the model in {given} mode and left it in {left} mode: the caller chooses the mode; "
            "if you must switch it, restore it (was_training = model.training … model.train(was_training))"
        )


def expect_model_gradients(model: nn.Module, reference: nn.Module, x: Tensor, what: str) -> None:
    """In training mode, the loss's gradient reaches every parameter, equal to the reference's (same weights loaded)."""
    model, reference = deepcopy(model).train(), deepcopy(reference).train()
    out = model(x.clone())
    if not isinstance(out, Tensor) or out.grad_fn is None:
        raise Mismatch(
            f"no gradient flows from {what} back to the weights: forward runs under torch.no_grad() or detaches "
            "(.detach(), .item(), NumPy); training needs the gradients"
        )
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    (out * weights).sum().backward()
    (reference(x.clone()) * weights).sum().backward()
    theirs = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        if name not in theirs:
            continue
        if parameter.grad is None:
            raise Mismatch(f"no gradient reaches {name} from {what}: that layer is cut off from the output")
        if not is_close(parameter.grad, theirs[name].grad, atol=1e-4, rtol=1e-3):
            raise Mismatch(
                f"{what} is right, but the gradient of {name} differs from the reference's by up to "
                f"{max_difference(parameter.grad, theirs[name].grad):.3g}: part of forward is detached"
            )


def expect_model_device_and_dtype(model: nn.Module, x: Tensor, what: str) -> None:
    """The model moved to float64 on the `meta` device (it stands in for a GPU) runs there and returns float64 there."""
    try:
        out = on_meta(model, torch.float64)(x.detach().to(device="meta", dtype=torch.float64))
    except Exception as exc:  # noqa: BLE001 - the learner's forward on another device and dtype
        raise Mismatch(
            f"{what} fails once the model and its input are moved to float64 on another device "
            f"({first_line(exc, 100)}): inside forward, create no tensor with a fixed device or dtype"
        ) from None
    if isinstance(out, Tensor) and (out.device.type != "meta" or out.dtype != torch.float64):
        raise Mismatch(
            f"{what} for a float64 model and input on another device comes back as {out.dtype} on the "
            f"{out.device.type}: keep the input's device and dtype inside forward"
        )


# --- expectations: each raises Mismatch with "expected …, got …" -----------------------------------


def expect_callable(answer: Any, what: str) -> None:
    """The answer must be a function or class."""
    if not callable(answer):
        result = isinstance(answer, (Tensor, np.ndarray, numbers.Number, tuple, list))
        called = ", a result: pass the function or class itself, without calling it" if result else ""
        raise Mismatch(f"expected {what} (something callable), got {type(answer).__name__}{called}")


def expect_tensor(
    value: Any, what: str, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None, why: str = ""
) -> Tensor:
    """The value must be a tensor (of `shape` and `dtype`, when given); `why` explains a wrong shape."""
    if not isinstance(value, Tensor):
        raise Mismatch(f"expected {what} to be a torch.Tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        because = f": {why}" if why else ""
        raise Mismatch(f"expected {what} of shape {tuple(shape)}, got {tuple(value.shape)}{because}")
    if dtype is not None and value.dtype != dtype:
        raise Mismatch(f"expected {what} of dtype {dtype}, got {value.dtype}")
    return value


def expect_close(value: Any, expected: Tensor, what: str, atol: float = 1e-5) -> Tensor:
    """The value must be a tensor of the expected shape, equal within `atol`."""
    value = expect_tensor(value, what, tuple(expected.shape))
    expect_finite(value, what)
    difference = max_difference(value, expected)
    if not difference <= atol:
        raise Mismatch(f"{what} differs from the reference by up to {difference:.3g} (tolerance {atol:g})")
    return value


def expect_equal(value: Any, expected: Any, what: str) -> Any:
    """The value must equal the expected one exactly (numbers, tuples, strings)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not isinstance(expected, Tensor):
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
