"""The `fmnist-lab` command: data, train, evaluate, export, and the course's notebook tools. Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import math
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fmnist_lab.errors import FmnistLabError
from fmnist_lab.original import ORIGINAL

if TYPE_CHECKING:
    from fmnist_lab.distributed import World

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def cmd_data(args: argparse.Namespace) -> int:
    """Say where the Fashion-MNIST files are and whether each one verifies."""
    from fmnist_lab import data

    location = data.find_data(args.root)
    for line in location.searched:
        print(f"  searched  {line}")
    print(f"Fashion-MNIST found: {location.source}")
    shapes = data.verify(location)
    for (split, kind), spec in data.IDX_FILES.items():
        shape = "×".join(f"{n:,}" for n in shapes[spec.name])
        print(f"  [OK] {location.path(split, kind)}  {split} {kind} {shape}, {spec.size:,} bytes, SHA-256 verified")
    return EXIT_OK


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be above 0 and finite, got {value}")
    return value


SEED_MAX = 2**32 - 1  # NumPy's seeds stop here


def _seed(text: str) -> int:
    """An argparse type: a seed every generator accepts, 0 … 2**32−1."""
    value = int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32−1 ({SEED_MAX}), got {value}")
    return value


def _results_table(metrics: dict) -> str:
    """This run's key numbers beside the original notebook's."""
    from fmnist_lab.original import ORIGINAL_TEST_ACCURACY, ORIGINAL_TRAIN_SECONDS

    rows = [
        ("test accuracy", f"{metrics['test_accuracy']:.2%}", f"{ORIGINAL_TEST_ACCURACY:.2%}"),
        ("training time (s)", f"{metrics['train_seconds']:.1f}", f"{ORIGINAL_TRAIN_SECONDS:.2f}"),
        ("parameters", f"{metrics['params']:,}", f"{ORIGINAL.params:,}"),
        ("epochs", str(metrics["epochs"]), str(ORIGINAL.epochs)),
        ("batch size", str(metrics["batch_size"]), str(ORIGINAL.batch_size)),
        ("learning rate", f"{metrics['lr']:g}", f"{ORIGINAL.lr:g}"),
        (
            "image size",
            f"{metrics['image_size']}×{metrics['image_size']}",
            f"{ORIGINAL.image_size}×{ORIGINAL.image_size}",
        ),
    ]
    lines = [f"{'key result':<20}{'this run':>12}{'original':>12}"]
    lines += [f"{name:<20}{ours:>12}{theirs:>12}" for name, ours, theirs in rows]
    return "\n".join(lines)


def _epoch_table(history: list[dict]) -> str:
    """The original notebook's per-epoch table: summed cost and validation accuracy."""
    lines = [f"{'epoch':>5}{'cost':>10}{'mean loss':>11}{'accuracy':>10}{'seconds':>9}"]
    lines += [
        f"{r['epoch']:>5}{r['cost']:>10.2f}{r['mean_loss']:>11.4f}{r['val_accuracy']:>10.2%}{r['seconds']:>9.1f}"
        for r in history
    ]
    return "\n".join(lines)


LOCK_NAME = ".fmnist-lab.lock"


@contextlib.contextmanager
def _locked_output(out: Path):
    """Create `out` if needed, prove it writable, and hold `out/.fmnist-lab.lock` so one run at a time writes there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FmnistLabError(f"--out {out} is a file; give a folder for the results") from None
    except NotADirectoryError:
        raise FmnistLabError(f"--out {out}: a part of this path is a file, not a folder; give a folder") from None
    except OSError as exc:
        raise FmnistLabError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    lock = out / LOCK_NAME
    try:
        descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise FmnistLabError(
            f"--out {out} is in use by another fmnist-lab train ({lock} exists); wait for it to finish, "
            "use another --out, or delete the lock file if no run is going"
        ) from None
    except OSError as exc:
        raise FmnistLabError(f"--out {out}: cannot write in this folder ({exc.strerror or exc})") from None
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(f"{os.getpid()}\n")
        yield out
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


class _Diverged(Exception):
    """Raised from the forward hook when the training outputs stop being finite numbers."""


def _watch_divergence(model, steps_per_epoch: int):
    """A forward hook that stops training at the first training step whose outputs are NaN or infinite."""
    import torch

    calls = [0]

    def hook(module, inputs, output) -> None:
        if not module.training:
            return
        calls[0] += 1
        if not bool(torch.isfinite(output).all()):
            step = calls[0] - 1
            raise _Diverged(step // steps_per_epoch + 1, step % steps_per_epoch + 1)

    return model.register_forward_hook(hook)


def _check_finite_weights(model, source: object) -> None:
    """One line instead of meaningless scores when the weights hold NaN or infinity."""
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FmnistLabError(
                f"{source}: the weights hold NaN or infinity ({name}): training diverged; "
                "train again with a lower learning rate (--lr)"
            )


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model (the original settings by default) and write metrics, weights and figures."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FmnistLabError(f"--out {out} is a file; give a folder for the results")
    with _collection_paused():
        from fmnist_lab import distributed

    if distributed.launched_by_torchrun():
        try:  # before the ranks meet: a batch that does not split is bad input, said once (by rank 0)
            distributed.require_divisible(args.batch_size, distributed.launched_world_size())
        except FmnistLabError:
            if distributed.launched_rank() == 0:
                raise
            return 0  # rank 0 says it and fails the run; a failing rank here would make torchrun stop rank 0 first
        return _train_with_ranks(args, out)
    with _locked_output(out):
        return _train_into(args, out, _prepare_output(out, args.force))


def _train_with_ranks(args: argparse.Namespace, out: Path) -> int:
    """`train` as one rank of several (torchrun): all train one model; rank 0 alone checks `out`, prints, writes."""
    import torch

    from fmnist_lab import distributed
    from fmnist_lab.files import sigterm_interrupts
    from fmnist_lab.train import get_device

    device = distributed.device_for_rank(get_device())
    try:
        with sigterm_interrupts(), distributed.process_group(device) as world:  # torchrun stops ranks with SIGTERM
            return _train_as_rank(args, out, world)
    except torch.distributed.DistError as exc:  # another rank crashed or hung: this one stops too, in one line
        raise FmnistLabError(
            f"another process of this run stopped ({str(exc).splitlines()[0][:200]}); its own message says why"
        ) from None


def _train_as_rank(args: argparse.Namespace, out: Path, world: World) -> int:
    """One rank's part: rank 0 checks `out` and tells the others whether to go on; then all train."""
    from fmnist_lab import distributed

    if not world.is_main:
        return _train_into(args, out, [], world) if distributed.agree(True) else EXIT_BAD_INPUT
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_locked_output(out))
            foreign = _prepare_output(out, args.force)
        except FmnistLabError:
            distributed.agree(False)  # the other ranks stop too, instead of waiting for a rank that left
            raise
        distributed.agree(True)
        return _train_into(args, out, foreign, world)


FIGURES = ("training_curves", "confusion_matrix", "sample_predictions", "sample_images")
"""The figures `train` writes into `--out/images/`, as NAME.png."""
SAMPLE_IMAGES_FROM = 1000
"""How many training images the sample-images figure is drawn from: every image it shows is among them."""
ROOM_NEEDED = 4 * 2**20
"""Free bytes `train` wants in `--out` before it starts: what it writes (about 0.5 MiB) with a wide margin."""


def _outputs(out: Path) -> list[Path]:
    """Every file `train` writes into `out`."""
    weights = out / "model_weights.pth"
    return [weights, weights.with_suffix(".json"), out / "metrics.json"] + [
        out / "images" / f"{name}.png" for name in FIGURES
    ]


def _prepare_output(out: Path, force: bool) -> list[Path]:
    """Before training: refuse files fmnist-lab did not write (unless --force) and a disk without room."""
    foreign = _refuse_foreign(out, force)
    _require_room(out)
    return foreign


def _refuse_foreign(out: Path, force: bool) -> list[Path]:
    """The files in `out` that fmnist-lab did not write; refuse to go on unless --force (then they get copies)."""
    from fmnist_lab.files import not_ours

    foreign = not_ours(_outputs(out))
    for path in foreign:
        if path.is_dir():
            raise FmnistLabError(f"--out {out}: {path} is a folder; move it away or use another --out")
        if not force:
            raise FmnistLabError(
                f"{path} was not written by fmnist-lab (or was changed since); use another --out, or add --force "
                "to replace it (a copy is kept as NAME.bak-…)"
            )
    return foreign


def _require_room(out: Path) -> None:
    """Fail before training, not after, when the disk under `out` cannot hold the results."""
    import shutil

    free = shutil.disk_usage(out).free
    if free < ROOM_NEEDED:
        raise FmnistLabError(
            f"--out {out}: only {free / 2**20:.1f} MiB free on that disk, and train needs "
            f"{ROOM_NEEDED / 2**20:.0f} MiB; free some space or use another --out"
        )


def _write_results(out: Path, model, history: list[dict], metrics: dict, figures: dict) -> Path:
    """Write weights, figures and metrics, each atomically, and record them in the folders' manifests."""
    import io

    import matplotlib.pyplot as plt

    from fmnist_lab.files import atomic_write_bytes, atomic_write_text, record_ours
    from fmnist_lab.train import save_checkpoint

    config = {k: metrics[k] for k in ("epochs", "batch_size", "lr", "seed", "test_accuracy")}
    try:
        weights = save_checkpoint(model, out / "model_weights.pth", config, history)
        images = out / "images"
        images.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            png = io.BytesIO()
            figure.savefig(png, format="png", dpi=100)
            plt.close(figure)
            atomic_write_bytes(images / f"{name}.png", png.getvalue())
        record_ours(*(images / f"{name}.png" for name in figures))
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        record_ours(out / "metrics.json")
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise FmnistLabError(
            f"--out {out}: could not write the results{where}: {exc.strerror or exc}; free some space or use "
            "another --out (no file was left half-written)"
        ) from None
    return weights


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """No garbage collection while imports and data fill memory with objects that live until exit, then freeze them.

    Python's full collections would scan those objects again and again, during torch's imports and at exit,
    though none of them is garbage. Frozen, they are never scanned again.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _import_in_background(module: str) -> threading.Thread:
    """Import `module` on a thread while the main thread does work that releases the GIL (unzip, hash, resize)."""
    import importlib

    def load() -> None:
        with contextlib.suppress(Exception):  # a failure shows where the module is used, in the main thread
            importlib.import_module(module)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    return thread


def _train_into(args: argparse.Namespace, out: Path, foreign: list[Path], world: World | None = None) -> int:
    """`cmd_train` once `out` is ready and locked: train, then (rank 0 only, with several ranks) report and write."""
    import matplotlib

    matplotlib.use("Agg")

    from fmnist_lab import data, evaluate, plots
    from fmnist_lab.distributed import device_for_rank
    from fmnist_lab.engine import Plan, fit
    from fmnist_lab.files import backup
    from fmnist_lab.models import build_model, count_parameters
    from fmnist_lab.train import get_device, seed_everything

    main = world is None or world.is_main
    say = print if main else lambda *lines: None
    with _collection_paused():
        preload = _import_in_background("torch._dynamo")  # the optimizer imports it: a second, behind the data
        train_data = data.load("train", args.image_size)
        test_data = data.load("test", args.image_size)
        preload.join()
    seed_everything(args.seed)
    model = build_model(args.model, args.image_size)
    device = device_for_rank(get_device())
    params = count_parameters(model)
    ranks = f", {world.size} processes ({world.backend}, SyncBatchNorm)" if world else ""
    say(
        f"Training {type(model).__name__} ({params:,} parameters) on {len(train_data[1]):,} images "
        f"at {args.image_size}×{args.image_size}: SGD lr {args.lr:g}, batch {args.batch_size}, "
        f"{args.epochs} epochs, seed {args.seed}, {device.type}{ranks}"
    )
    watch = _watch_divergence(model, math.ceil(len(train_data[1]) / args.batch_size))
    try:
        run = fit(
            model,
            train_data,
            test_data,
            Plan(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr),
            seed=args.seed,
            device=device,
            progress=main and not args.no_progress,
        )
    except _Diverged as exc:
        epoch, step = exc.args
        raise FmnistLabError(
            f"training diverged at epoch {epoch}, step {step}: lower the learning rate (--lr, now {args.lr:g})"
        ) from None
    finally:
        watch.remove()
    history = run.history
    bad = next((r["epoch"] for r in history if not math.isfinite(r["cost"])), None)
    if bad is not None:
        raise FmnistLabError(f"training diverged at epoch {bad}: lower the learning rate (--lr, now {args.lr:g})")
    try:
        _check_finite_weights(model, "training")
    except FmnistLabError:
        raise FmnistLabError(
            f"training diverged at epoch {history[-1]['epoch']}: lower the learning rate (--lr, now {args.lr:g})"
        ) from None
    if not main:
        return EXIT_OK
    print(_epoch_table(history))
    predicted = run.val_predicted  # the last epoch's test predictions: the final model's
    metrics = {
        "model": args.model,
        "params": params,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "image_size": args.image_size,
        "device": device.type,
        "world_size": world.size if world else 1,
        "backend": world.backend if world else None,
        "train_seconds": sum(r["seconds"] for r in history),
        "test_accuracy": history[-1]["val_accuracy"],
        "per_class_accuracy": evaluate.per_class_accuracy(test_data[1], predicted),
        "history": history,
    }
    for path in foreign:  # --force: keep what we are about to replace
        print(f"{path} was not written by fmnist-lab: kept a copy as {backup(path)}")
    figures = {
        "training_curves": plots.training_curves(history),
        "confusion_matrix": plots.confusion_matrix(evaluate.confusion_matrix(test_data[1], predicted)),
        "sample_predictions": plots.sample_predictions(test_data[0], test_data[1], predicted),
        "sample_images": plots.sample_images(*data.load("train", 28, count=SAMPLE_IMAGES_FROM)),
    }
    weights = _write_results(out, model, history, metrics, figures)
    print()
    print(_results_table(metrics))
    print(f"\nWrote {out / 'metrics.json'}, {weights} (+ .json) and {len(figures)} figures in {out / 'images'}/")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate saved weights on the test set: accuracy, per-class accuracy, classification report."""
    from fmnist_lab import data, evaluate
    from fmnist_lab.train import load_checkpoint

    model, info = load_checkpoint(args.weights)
    _check_finite_weights(model, args.weights)
    image_size = args.image_size or int(info.get("image_size", 16))
    images, labels = data.load("test", image_size)
    predicted, _ = evaluate.predict(model, images)
    correct = int((predicted == labels).sum())
    print(f"{args.weights}: {type(model).__name__}, {image_size}×{image_size} inputs")
    print(f"test accuracy: {correct / len(labels):.2%} ({correct:,} of {len(labels):,})")
    print("per-class accuracy:")
    for name, value in evaluate.per_class_accuracy(labels, predicted).items():
        print(f"  {name:<12} {value:.2%}")
    print(evaluate.classification_report(labels, predicted))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Export saved weights to one ONNX file (dynamic batch), check it, and compare it with PyTorch."""
    import torch

    from fmnist_lab.export import INPUT_NAME, check_onnx, describe_onnx, export_to_onnx, onnx_logits, onnx_session
    from fmnist_lab.files import backup, not_ours
    from fmnist_lab.train import load_checkpoint

    out, weights = Path(args.out), Path(args.weights)
    if out.is_dir():
        raise FmnistLabError(f"--out {out} is a folder; give a file name such as {out / 'model.onnx'}")
    same = os.path.realpath(out) == os.path.realpath(weights)
    with contextlib.suppress(OSError):
        same = same or os.path.samefile(out, weights)
    if same:
        raise FmnistLabError(
            f"--out must differ from the weights ({weights}): it would overwrite them; give a name such as model.onnx"
        )
    if out.suffix.lower() != ".onnx" and not args.force:
        raise FmnistLabError(
            f"--out {out} does not end in .onnx; name it {out.with_suffix('.onnx')}, or add --force to write it anyway"
        )
    foreign = bool(not_ours([out]))
    if foreign and not args.force:
        raise FmnistLabError(
            f"--out {out} exists and is not an ONNX file fmnist-lab wrote (or was changed since); use another --out, "
            "or add --force to replace it (a copy is kept as NAME.bak-…)"
        )
    model, _ = load_checkpoint(weights, device="cpu")
    _check_finite_weights(model, weights)
    size = model.image_size
    if foreign:
        print(f"{out} was not written by fmnist-lab export: kept a copy as {backup(out)}")
    export_to_onnx(model, out)
    described = describe_onnx(check_onnx(out))
    # Agreement on seeded random images: no data needed, every batch size through the dynamic axis.
    images = torch.rand(37, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(images).numpy()
    got = onnx_logits(onnx_session(out), images, batch_size=16)
    gap = float(abs(got - expected).max())
    print(f"{args.weights}: {type(model).__name__}, {size}×{size} inputs")
    shape = " × ".join(map(str, described["inputs"][INPUT_NAME]))
    print(
        f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB, ONNX opset {described['opset']}, "
        f"input {INPUT_NAME} {shape}), passes onnx.checker"
    )
    print(f"ONNX Runtime vs PyTorch on 37 random images in batches of 16: max |Δlogit| {gap:.2g}")
    if not gap <= 1e-3:
        print(f"fmnist-lab export: ONNX Runtime differs from PyTorch by {gap:.3g} (more than 1e-3)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_build_lessons(args: argparse.Namespace) -> int:
    """Generate lessons/ (and the Colab stamps, the packaged reference) from solutions/, or --check them."""
    from fmnist_lab.notebooks import plan_lessons, write_lessons
    from fmnist_lab.paths import course_dir

    args.solutions = args.solutions or str(course_dir("solutions"))
    args.lessons = args.lessons or str(course_dir("lessons"))
    build = plan_lessons(Path(args.solutions), Path(args.lessons))  # every solution validated, nothing written
    differing = build.differing + build.extra if args.check else build.differing
    if args.check:
        if differing:
            print(
                f"{len(differing)} file(s) differ from what {args.solutions} generates "
                f"(run `fmnist-lab build-lessons`): {', '.join(str(p) for p in differing)}"
            )
            return EXIT_FAILED
        print(f"{args.lessons} matches what {args.solutions} generates")
        return EXIT_OK
    for edited, copy in zip(build.edited, write_lessons(build, force=args.force)):
        print(f"{edited} was edited by hand: kept a copy as {copy}")
    print(f"wrote {len(differing)} file(s): {', '.join(str(p) for p in differing) or 'all up to date'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Run notebooks on temporary copies and report every exercise: passed, failed, not attempted, error."""
    from fmnist_lab.checker import check_notebook
    from fmnist_lab.notebooks import read_notebook

    paths = [Path(p) for p in args.notebooks]
    for path in paths:
        read_notebook(path)  # a missing or unreadable file is bad input: say so before running anything
    rows = []
    for path in paths:
        rows += [(path, result) for result in check_notebook(path, timeout=args.timeout, exercise=args.exercise)]
    if args.json:
        print(json.dumps([{"notebook": str(p), **r.to_dict()} for p, r in rows], indent=2, ensure_ascii=False))
    else:
        for path in paths:
            print(f"{path}")
            print(f"  {'exercise':<9}{'title':<28}{'status':<15}message")
            for _, result in (row for row in rows if row[0] == path):
                print(f"  {result.exercise:<9}{result.title:<28}{result.status:<15}{result.message}")
        passed = sum(r.status == "passed" for _, r in rows)
        print(f"{passed} of {len(rows)} exercises passed")
    return EXIT_OK if all(r.status == "passed" for _, r in rows) else EXIT_FAILED


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade a class's notebooks for one lesson into a gradebook CSV and a JSON with every message."""
    from fmnist_lab.checker import Limits
    from fmnist_lab.grade import find_submissions, grade, lesson_exercises, refuse_output, summary_table, write_outputs

    if not args.submissions:
        raise FmnistLabError("no submissions: give notebooks, or folders of them (one per learner or for the class)")
    for flag in ("jobs", "timeout", "notebook_timeout"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise FmnistLabError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least 1")
    if args.memory is not None and not (args.memory > 0 and math.isfinite(args.memory)):
        raise FmnistLabError(f"--memory {args.memory}: give the kernel's memory cap in GB, above 0 (e.g. 4)")
    exercises = lesson_exercises(args.lesson)
    out = Path(args.out)
    report = refuse_output(out, args.force)
    submissions = find_submissions([Path(p) for p in args.submissions], args.lesson)
    if not any(s.path for s in submissions):
        raise FmnistLabError(f"no notebooks to grade in {', '.join(args.submissions)}: give .ipynb files or folders")
    limits = Limits(cell=args.timeout, notebook=args.notebook_timeout, memory_gb=args.memory)
    exercises, rows = grade(submissions, args.lesson, limits, args.jobs or os.cpu_count() or 1, not args.no_progress)
    write_outputs(out, exercises, rows, args.lesson, limits)
    print(summary_table(exercises, rows))
    print(f"wrote {out} and {report}")
    return EXIT_OK


def cmd_solution(args: argparse.Namespace) -> int:
    """Print the reference solution of one exercise."""
    from fmnist_lab.notebooks import solution_code

    where, code = solution_code(args.exercise, Path(args.solutions) if args.solutions else None)
    print(f"# Exercise {args.exercise}: reference solution from {where}")
    print(code)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check Python, the packages, the device, the data, the Jupyter kernel and the browser."""
    from fmnist_lab.doctor import run_doctor

    return run_doctor(requirements=Path(args.requirements) if args.requirements else None)


def _flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    """An on/off option (off unless given): --force, --no-progress, --json …"""
    parser.add_argument(name, action="store_true", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="fmnist-lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("data", help="find and verify the Fashion-MNIST files (downloading them if needed)")
    p.add_argument("--root", help="a folder to search first")
    p.set_defaults(func=cmd_data)

    p = commands.add_parser("train", help="train a model and write metrics, weights and figures")
    p.add_argument("--model", choices=["cnn_batch", "cnn"], default=ORIGINAL.model)
    p.add_argument("--epochs", type=_positive_int, default=ORIGINAL.epochs)
    p.add_argument("--lr", type=_positive_float, default=ORIGINAL.lr)
    p.add_argument("--batch-size", type=_positive_int, default=ORIGINAL.batch_size)
    p.add_argument("--seed", type=_seed, default=0, help=f"0 … 2**32−1 = {SEED_MAX} (default 0)")
    p.add_argument("--image-size", type=int, choices=[16, 28], default=ORIGINAL.image_size)
    p.add_argument("--out", default="results", help="folder for the results (default: results)")
    _flag(p, "--no-progress", "no progress bars")
    _flag(
        p, "--force", "replace weights or metrics in --out that fmnist-lab did not write, keeping a copy as NAME.bak-…"
    )
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("evaluate", help="evaluate saved weights on the test set")
    p.add_argument("weights", help="a model_weights.pth (ours or the original notebook's)")
    p.add_argument(
        "--image-size", type=int, choices=[16, 28], help="input size (default: from the JSON beside the weights)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("export", help="export saved weights to ONNX (dynamic batch) and check it")
    p.add_argument("weights", help="a model_weights.pth (ours or the original notebook's)")
    p.add_argument("--out", default="model.onnx", help="the ONNX file to write (default: model.onnx)")
    _flag(
        p,
        "--force",
        "write a name not ending in .onnx, or replace a file fmnist-lab did not write (kept as NAME.bak-…)",
    )
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("build-lessons", help="generate lessons/ from solutions/")
    p.add_argument("--solutions", help="default: solutions/ of the course checkout")
    p.add_argument("--lessons", help="default: lessons/ of the course checkout")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 and name the lessons that differ")
    _flag(p, "--force", "replace lessons edited by hand too, keeping a copy of each as NAME.bak-YYYYmmdd-HHMMSS")
    p.set_defaults(func=cmd_build_lessons)

    p = commands.add_parser("check", help="run notebooks on a copy and report every exercise")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument(
        "--timeout",
        type=_positive_int,
        default=600,
        help="seconds one cell may run before it is interrupted (default 600)",
    )
    p.add_argument(
        "--exercise",
        metavar="N.M",
        help="run the cells up to and including this exercise's check cell, and report only it (faster)",
    )
    p.set_defaults(func=cmd_check)

    p = commands.add_parser("grade", help="grade a class's notebooks for one lesson into a gradebook CSV")
    p.add_argument("submissions", nargs="*", metavar="SUBMISSION", help="notebooks, or folders of them")
    p.add_argument("--lesson", required=True, metavar="NN", help="the lesson the submissions are for, e.g. 03")
    p.add_argument("--out", required=True, help="the gradebook CSV to write (a JSON with every message goes beside it)")
    p.add_argument("--jobs", type=int, help="notebooks graded at once (default: the number of cores)")
    p.add_argument("--timeout", type=int, default=600, help="seconds one cell may run (default 600)")
    p.add_argument(
        "--notebook-timeout", type=int, default=3600, help="seconds one whole notebook may run (default 3600)"
    )
    p.add_argument("--memory", type=float, default=4.0, help="GB of memory each kernel may use (default 4)")
    _flag(p, "--force", "replace --out (and its JSON) if they exist")
    _flag(p, "--no-progress", "no progress bar")
    p.set_defaults(func=cmd_grade)

    p = commands.add_parser("solution", help="print the reference solution of one exercise")
    p.add_argument("exercise", help="an exercise id such as 3.2")
    p.add_argument("--solutions", help="a folder of solution notebooks (default: the copy inside the package)")
    p.set_defaults(func=cmd_solution)

    p = commands.add_parser("doctor", help="check your setup: one line per requirement, [OK] or [FAIL] with a fix")
    p.add_argument("--requirements", help="a requirements file to check (default: the course's own)")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a problem the user can fix is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FmnistLabError as exc:
        print(f"fmnist-lab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the output's reader left early (`fmnist-lab doctor | head -1`): nobody to tell
        return EXIT_FAILED
    except OSError as exc:  # a path the system refuses (too long, read-only, full disk) that no check foresaw
        print(f"fmnist-lab {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"fmnist-lab {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `fmnist-lab` command: `main()`, the exit handlers, then an exit that skips freeing objects one by one.

    Once torch and matplotlib are loaded, Python's own exit frees their objects one by one, memory that the
    operating system reclaims at once. By then every file is closed and every process waited for; the exit
    handlers (a coverage run's, matplotlib's temporary folder) still run, and the output is flushed.
    """
    code = main()
    atexit._run_exitfuncs()  # what Python runs at exit, before its teardown
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that left (`fmnist-lab … | head`) takes no more
            stream.flush()
    os._exit(code)


NAME_MAX = 255  # the longest file or folder name most file systems accept


def _shortened(path: object, keep: int = 60) -> str:
    """A path short enough to read in one line: its start and its end."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if len(text) <= 2 * keep else f"{text[:keep]}…{text[-keep // 2 :]} ({len(text):,} characters)"


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path (shortened), what the system said, and what to do."""
    import errno

    where = _shortened(exc.filename) if exc.filename is not None else "a file"
    if exc.errno == errno.ENAMETOOLONG:
        longest = max((len(part) for part in Path(os.fsdecode(exc.filename or "")).parts), default=0)
        return (
            f"{where}: the path is too long for this system (its longest name has {longest:,} characters, "
            f"most systems allow {NAME_MAX}); use a shorter name"
        )
    reasons = {errno.ENOSPC: "free some space", errno.EROFS: "use a writable folder", errno.EACCES: "check permissions"}
    return f"{where}: {exc.strerror or exc}; {reasons.get(exc.errno, 'check the path')} and try again"


if __name__ == "__main__":
    run()
