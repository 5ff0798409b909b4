"""The kernel's end of the protected verdict channel of `fmnist-lab check` and `fmnist-lab grade`.

The checker runs `arm(token, slot)` in a cell of its own before any of the notebook's code, and never
stores it in the kernel's history. `arm` keeps the genuine `run_check`, snapshots every function and
class the checks rely on (the `fmnist_lab` modules, `builtins`, `math`, NumPy, `torch`,
`torch.nn.functional`, `torch.Tensor`, `torch.nn.Module`), and leaves one runner in `builtins` under the
random name `slot`. The restored check cells call that runner with their pristine source. It runs the
genuine check, refuses a verdict when anything in the snapshot was replaced, and publishes the verdict
with the token as a display output of its own MIME type: the checker reads verdicts only from there,
only in the cells it restored, and only with the right token.

This defeats a redefined `check`, a patched `fmnist_lab.checks`, a patched reference or library function,
a forged log line or a printed fake verdict. It cannot stop code in the same kernel that sets out to
find the runner or the token (for example by hooking IPython's execution): docs/grading.md says so.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

MIME_TYPE = "application/vnd.fmnist-lab.verdict+json"
WATCHED_MODULES = ("builtins", "math", "numpy", "torch", "torch.nn.functional")
WATCHED_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"))

Entry = tuple[str, Any, str, Any, Any]  # (label, owner's namespace, name, the object, its code object)


def _code(value: Any) -> Any:
    """A function's code object (None for anything else): replacing it in place is patching too."""
    return getattr(value, "__code__", None) if isinstance(value, types.FunctionType) else None


def _watched(value: Any) -> bool:
    """Whether a namespace entry is behaviour (a function or a class) rather than data."""
    return isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type))


def _entries(label: str, namespace: Any) -> list[Entry]:
    """The watched entries of one module's or class's namespace, as they are now."""
    return [
        (f"{label}.{name}", namespace, name, value, _code(value))
        for name, value in list(namespace.items())
        if _watched(value)
    ]


def _course_modules() -> dict[str, types.ModuleType]:
    """The `fmnist_lab` modules loaded in this kernel."""
    return {
        name: module
        for name, module in list(sys.modules.items())
        if isinstance(module, types.ModuleType) and (name == "fmnist_lab" or name.startswith("fmnist_lab."))
    }


def snapshot() -> list[Entry]:
    """Every function and class the checks rely on, with the object each name holds now."""
    entries: list[Entry] = []
    for name, module in _course_modules().items():
        namespace = vars(module)
        entries += _entries(name, namespace)
        for value in list(namespace.values()):
            if isinstance(value, type) and value.__module__ == name:
                entries += _entries(f"{name}.{value.__name__}", value.__dict__)
    for name in WATCHED_MODULES:
        if name in sys.modules:
            entries += _entries(name, vars(sys.modules[name]))
    for module_name, class_name in WATCHED_CLASSES:
        owner = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(owner, type):
            entries += _entries(f"{module_name}.{class_name}", owner.__dict__)
    return entries


MISSING = object()


def changed(entries: list[Entry], exercises: dict[str, Any], registry: dict[str, Any]) -> str | None:
    """The first watched name that now holds something else (or a swapped exercise check), else None."""
    for label, namespace, name, value, code in entries:
        now = namespace.get(name, MISSING)
        if now is not value or _code(now) is not code:
            return label
    for exercise_id, (record, run, code) in exercises.items():
        if registry.get(exercise_id) is not record or record.run is not run or _code(record.run) is not code:
            return f"the check of exercise {exercise_id}"
    return None


def arm(token: str, slot: str) -> None:
    """Keep the genuine checks and put the protected runner in `builtins` under `slot`."""
    checks = importlib.import_module("fmnist_lab.checks")
    from IPython.display import publish_display_data

    genuine: Callable[..., Any] = checks.run_check
    result_type, registry = checks.CheckResult, checks.EXERCISES
    exercises = {key: (record, record.run, _code(record.run)) for key, record in registry.items()}
    importlib.import_module("torch._dynamo")  # its import rewraps torch.manual_seed (torchvision and ONNX export
    # import it too): imported before the snapshot, so a lesson that imports them is not taken for tampering
    entries = snapshot()
    state = {"busy": False}

    def tampered(exercise_id: str, label: str, when: str) -> Any:
        """The verdict on a check whose code or reference was replaced in the kernel."""
        record = registry.get(exercise_id)
        title = record.title if record is not None and hasattr(record, "title") else "unknown exercise"
        return result_type(
            exercise_id,
            str(title),
            "error",
            f"tampering: {label} was replaced in the kernel {when}, so this check can't be trusted: no credit",
        )

    def protected_check(exercise_id: str, *answer: Any) -> None:
        """`check` as the restored check cells see it: the genuine check, verified, its verdict published."""
        if state["busy"]:
            print(f"✗ {exercise_id}: check() was called from inside an answer while a check ran: ignored")
            return
        state["busy"] = True
        try:
            label = changed(entries, exercises, registry)
            if label:
                result = tampered(exercise_id, label, "before the check")
            else:
                result = genuine(exercise_id, *answer)
                label = changed(entries, exercises, registry)
                if label:
                    result = tampered(exercise_id, label, "while the check ran")
        finally:
            state["busy"] = False
        print(result.line())
        publish_display_data({MIME_TYPE: {"token": token, **result.to_dict()}})

    def run_cell(source: str, namespace: dict) -> None:
        """Run a restored check cell's pristine source with `check` bound to the protected one."""
        exec(compile(source, "<restored check cell>", "exec"), {**namespace, "check": protected_check})

    setattr(builtins, slot, run_cell)
