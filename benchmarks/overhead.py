"""Where the fixed cost of `fmnist-lab train` goes: whole runs (the original settings, seed 0), timed phase by phase.

Each run is a fresh Python that imports what `fmnist-lab train` imports, in the same order and with garbage
collection paused as the command pauses it, puts timers around the command's phases (the data, each epoch's
training and validation, the figures, the files) and runs the command itself; this script's own clock adds
Python's start and the exit. The phases add up to the whole wall time; the fixed cost is everything but the
training steps, as in `reproduce.py`. The timers change nothing in what the command computes or writes.
Prints the table (the median of each phase over the runs) and writes benchmarks/results/overhead.json.
Usage: python benchmarks/overhead.py
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 3
PHASES = {  # name in the JSON: what the phase is, as the table says it
    "start": "Python's start",
    "import_torch": "importing torch",
    "import_rest": "importing matplotlib and the course's modules",
    "data": "load the data (unzip, verify, resize); the compiler that torch.optim needs is imported beside it",
    "until_training": "wait for that import; build the model and the optimizer",
    "training": "the training steps (5 epochs)",
    "validation": "the test set after each epoch (the epoch table's accuracy)",
    "figures_drawn": "draw the four figures",
    "files_written": "render them to PNG; write weights, metrics and figures",
    "rest": "everything else (tables, output checks)",
    "exit": "Python's exit",
}

RECORDED = ("data", "training", "validation", "figures_drawn", "files_written")
"""The phases the child's wrappers record, call by call."""


def _timed(events: list, phase: str, function):
    """`function`, recording (phase, start, end) of each of its calls in `events`."""

    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            events.append((phase, start, time.time()))

    return timed


def child(out: str, report: str) -> None:
    """One run, inside the fresh Python: the command with timers around its phases; the times go to `report`."""
    marks, events = {"child_started": time.time()}, []
    from fmnist_lab import cli

    with cli._collection_paused():  # as cmd_train imports torch
        import torch  # noqa: F401
    marks["torch_imported"] = time.time()
    import matplotlib

    matplotlib.use("Agg")
    from fmnist_lab import data, engine, plots

    marks["rest_imported"] = time.time()
    data.load = _timed(events, "data", data.load)
    engine._train_epoch = _timed(events, "training", engine._train_epoch)
    engine._validate = _timed(events, "validation", engine._validate)
    cli._write_results = _timed(events, "files_written", cli._write_results)
    for name in cli.FIGURES:
        setattr(plots, name, _timed(events, "figures_drawn", getattr(plots, name)))
    main = cli.main

    def main_timed() -> int:
        marks["main_started"] = time.time()
        code = main()
        marks["main_returned"] = time.time()
        Path(report).write_text(json.dumps({"marks": marks, "events": events}))
        return code

    cli.main = main_timed
    sys.argv = ["fmnist-lab", "train", "--out", out, "--no-progress", "--seed", "0"]
    cli.run()  # as the command runs: main(), then its exit


def phases_of(launched: float, ended: float, marks: dict[str, float], events: list) -> dict[str, float]:
    """The seconds of each phase of PHASES, from the child's marks and events and this script's own clock."""
    first_epoch = min(start for phase, start, _ in events if phase == "training")
    loads_before = [end for phase, _, end in events if phase == "data" and end <= first_epoch]
    phases = {
        "start": marks["child_started"] - launched,
        "import_torch": marks["torch_imported"] - marks["child_started"],
        "import_rest": marks["rest_imported"] - marks["torch_imported"],
        "until_training": first_epoch - max(loads_before),
        "exit": ended - marks["main_returned"],
    }
    for phase in RECORDED:
        phases[phase] = sum(end - start for name, start, end in events if name == phase)
    inside = phases["until_training"] + sum(phases[phase] for phase in RECORDED)
    phases["rest"] = marks["main_returned"] - marks["rest_imported"] - inside
    return {key: phases[key] for key in PHASES}


def run_once(folder: Path) -> dict[str, float]:
    """One whole timed run in a fresh Python: the seconds of each phase, the wall time and the fixed cost."""
    report = folder / "times.json"
    launched = time.time()
    subprocess.run(
        [sys.executable, __file__, "--child", str(folder / "out"), str(report)], check=True, stdout=subprocess.DEVNULL
    )
    ended = time.time()
    times = json.loads(report.read_text())
    phases = phases_of(launched, ended, times["marks"], times["events"])
    return {**phases, "wall": ended - launched, "fixed": ended - launched - phases["training"]}


def main() -> int:
    """Time RUNS whole runs; print each phase's median and save them all."""
    from machine import save

    runs = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_once(Path(tmp)))
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"{'phase':<100}{'seconds':>8}")
    for key, text in PHASES.items():
        print(f"{text:<100}{median[key]:>8.2f}")
    print(f"{'whole run':<100}{median['wall']:>8.2f}")
    print(f"{'fixed cost (all but the training steps)':<100}{median['fixed']:>8.2f}")
    path = save("overhead", {"runs": runs, "median": median, "phases": PHASES})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:4])
    sys.exit(main())
