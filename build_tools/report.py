"""The one place that turns benchmark results (benchmarks/results/*.json) into Markdown.

The README's results block, the site's home and benchmarks pages and the demo page's latency table
all come from here. `python build_tools/report.py` rewrites the block between the README's markers;
`python build_tools/report.py --check` exits 1 when the README's block differs from the results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fmnist_lab.original import ORIGINAL_TEST_ACCURACY, ORIGINAL_TRAIN_SECONDS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def load(name: str) -> dict:
    """One benchmark's saved output."""
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def machine_line(machine: dict) -> str:
    """'Measured on …' with CPU, cores, torch and date."""
    device = machine["gpu"] or f"CPU only, {machine['cores']} cores ({machine['cpu']})"
    return f"Measured on {device}, PyTorch {machine['torch']}, {machine['date']}"


def results_markdown() -> str:
    """The README's results block, every number read from benchmarks/results."""
    accuracy, speed = load("reproduce"), load("train_speed")
    rows = [
        f"| seed {seed} | {acc:.2%} | {sec:.1f} s | {wall:.1f} s | {original:.1f} s | {ratio:.2f}× |"
        for seed, acc, sec, wall, original, ratio in zip(
            accuracy["seeds"],
            accuracy["test_accuracy"],
            accuracy["train_seconds"],
            accuracy["wall_seconds"],
            accuracy["original_wall_seconds"],
            accuracy["ratios"],
        )
    ]
    mean_seconds = sum(accuracy["train_seconds"]) / len(accuracy["train_seconds"])
    rate = speed["steps_per_second"]
    return "\n".join(
        [
            "| run (original settings, 5 epochs) | test accuracy | training | whole `fmnist-lab train` | "
            "whole original pipeline | ratio |",
            "|---|---|---|---|---|---|",
            f"| the original notebook (as published, its own machine) | {ORIGINAL_TEST_ACCURACY:.2%} | "
            f"{ORIGINAL_TRAIN_SECONDS:.2f} s | | | |",
            *rows,
            f"| mean of {len(rows)} seeds | {accuracy['mean_test_accuracy']:.2%} | {mean_seconds:.1f} s | | | "
            f"median {accuracy['median_ratio']:.2f}× |",
            "",
            f"Each round runs the original pipeline (`benchmarks/original_pipeline.py`: torchvision + PIL `Resize` + "
            f"`DataLoader`, 5 epochs, its figures) and `fmnist-lab train` as whole processes, one after the other, on "
            f"the same machine: the whole course pipeline is {accuracy['median_ratio']:.2f}× as fast (the median of "
            f"the rounds). Its fixed cost around the training steps (Python, the imports, the data, the test set "
            f"after each epoch, the figures and the files) is {min(accuracy['overhead_seconds']):.1f}–"
            f"{max(accuracy['overhead_seconds']):.1f} s (`python benchmarks/overhead.py` times each part). "
            f"{machine_line(accuracy['machine'])}, load average "
            f"{accuracy['machine']['load_average_1min']:.2f} (`python benchmarks/reproduce.py`).",
            "",
            "| training pipeline (CNNBatch, batch 100) | steps/s | ms/step |",
            "|---|---|---|",
            f"| original: torchvision + PIL `Resize` + `DataLoader` | {rate['original']:.1f} | "
            f"{1000 / rate['original']:.1f} |",
            f"| fmnist_lab: tensors in memory | {rate['fmnist_lab']:.1f} | {1000 / rate['fmnist_lab']:.1f} |",
            f"| compute ceiling: one batch already in memory | {rate['ceiling']:.1f} | {1000 / rate['ceiling']:.1f} |",
            "",
            f"fmnist_lab trains {speed['speedup_vs_original']:.1f}× faster than the original pipeline, at "
            f"{speed['fraction_of_ceiling']:.0%} of the compute ceiling. {machine_line(speed['machine'])} "
            "(`python benchmarks/train_speed.py`).",
            "",
            going_further_markdown(),
            "",
            speed_runs_markdown(),
        ]
    )


def seed_table_head(first: list[str], seeds: list[int], last: list[str]) -> list[str]:
    """A Markdown table's header and rule: the `first` columns, one column per seed, then the `last` ones."""
    columns = [*first, *(f"seed {seed}" for seed in seeds), *last]
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def going_further_markdown() -> str:
    """Lesson 07's two headline results: test accuracy per seed of the final fits, with training times."""
    result = load("going_further")
    rows = seed_table_head(
        ["lesson 07, final fit on 60,000 images", "parameters", "multiply-adds"],
        result["seeds"],
        ["training time (longest)"],
    )
    for key, name in (("cnn_batch", "CNNBatch 16×16"), ("resnet", "ResNet 28×28")):
        model = result[key]
        runs = model["runs"]
        longest = max(r["train_seconds"] for r in runs)
        rows.append(
            f"| {name}, {model['recipe']['epochs']} epochs | {model['params']:,} | "
            f"{model['multiply_adds'] / 1e6:.2f} M | "
            + " | ".join(f"{r['test_accuracy']:.2%}" for r in runs)
            + f" | {longest:.1f} s |"
        )
    return "\n".join(rows + ["", f"{machine_line(result['machine'])} (`python benchmarks/going_further.py`)."])


def speed_runs_markdown() -> str:
    """The ResNet's speed runs: test accuracy per seed within each training budget, against the target, and
    each budget's validation runs (float32 or bf16 autocast: the trick alone, measured)."""
    result = load("speed_runs")
    rows = seed_table_head(
        ["lesson 07's ResNet, speed runs", "training budget", "epochs"],
        result["seeds"],
        ["training time (longest)", "chosen on validation"],
    )
    for point in result["budgets"]:
        runs = point["runs"]
        rows.append(
            f"| ResNet 28×28{', bf16' if point['recipe']['bf16'] else ''} | {point['budget_seconds'] / 60:.0f} min | "
            f"{point['recipe']['epochs']} | "
            + " | ".join(f"{r['test_accuracy']:.2%}" for r in runs)
            + f" | {max(r['train_seconds'] for r in runs):.1f} s | {point['selected']} |"
        )
    trials = [
        "| validation run (seed 0, 55,000 images) | training budget | epochs | precision | validation accuracy "
        "(its best candidate) | training time | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in result["budgets"]:
        for trial in point["candidates"]:
            validation = trial["validation_run"]
            trials.append(
                f"| ResNet 28×28 | {point['budget_seconds'] / 60:.0f} min | {trial['recipe']['epochs']} | "
                f"{'bf16 autocast' if trial['recipe']['bf16'] else 'float32'} | "
                f"{max(validation['selection_val_accuracy'].values()):.2%} | {validation['train_seconds']:.1f} s | "
                f"{'yes' if trial['recipe'] == point['recipe'] else 'no'} |"
            )
    loads = [r[key] for point in result["budgets"] for r in point["runs"] for key in ("load_before", "load_after")]
    bf16 = {True: "this CPU has them", False: "this CPU lacks them", None: "not known for this CPU"}[
        result["machine"].get("cpu_bf16")
    ]
    return "\n".join(
        rows
        + [
            "",
            "The same recipe and protocol as the ResNet above, for as many epochs as fit each budget: in float32, "
            "and with bfloat16 autocast (`Recipe(bf16=True)`: the forward pass in bfloat16, the weights and the "
            "optimizer in float32), which makes each epoch faster so more of them fit. A validation run of each "
            "chooses; the test set measures only the chosen one's final fits:",
            "",
            *trials,
            "",
            f"bf16 autocast pays on a CPU with bfloat16 instructions (AVX-512 BF16 or AMX: {bf16}) and "
            "on recent GPUs; elsewhere it is emulated, and slower than float32. "
            f"{machine_line(result['machine'])}, load average {min(loads):.1f}–{max(loads):.1f} during the final "
            f"fits, whose own {result['machine']['torch_threads']} threads count in it "
            "(`python benchmarks/going_further.py --speed-runs`):",
            "",
            *(f"- [{'OK' if met else 'FAIL'}] {name}" for name, met in result["checks"].items()),
        ]
    )


def ablation_markdown() -> str:
    """Lesson 07's ablation: CNNBatch with each trick alone, validation accuracy against the baseline."""
    result = load("going_further")
    if "ablation" not in result:
        return "Not measured in the last run: run `python benchmarks/going_further.py` without `--skip-ablation`."
    rows = [
        "| CNNBatch 16×16, 5 epochs | validation accuracy | Δ vs baseline (points) | training time |",
        "|---|---|---|---|",
    ]
    baseline = result["ablation"][0]["val_accuracy"]
    for row in result["ablation"]:
        rows.append(
            f"| {row['trick']} | {row['val_accuracy']:.2%} | {100 * (row['val_accuracy'] - baseline):+.2f} | "
            f"{row['train_seconds']:.1f} s |"
        )
    return "\n".join(rows + ["", f"{machine_line(result['machine'])} (`python benchmarks/going_further.py`)."])


def overhead_markdown() -> str:
    """Where the fixed cost of `fmnist-lab train` goes, phase by phase (benchmarks/overhead.py)."""
    result = load("overhead")
    median, runs = result["median"], result["runs"]
    rows = ["| phase of one whole `fmnist-lab train` | seconds |", "|---|---|"]
    rows += [f"| {text} | {median[key]:.2f} |" for key, text in result["phases"].items()]
    rows += [
        f"| **whole run** | **{median['wall']:.2f}** |",
        f"| **fixed cost: all but the training steps** | **{median['fixed']:.2f}** |",
    ]
    note = (
        f"The median of each phase over {len(runs)} runs. Importing torch, matplotlib and the compiler that "
        "`torch.optim` loads is work that holds Python's lock, so a thread can hide only the data's loading behind "
        "it; the test set after each epoch is the epoch table's accuracy. "
    )
    return "\n".join(
        rows
        + [
            "",
            note + f"{machine_line(result['machine'])}, load average "
            f"{result['machine']['load_average_1min']:.2f} (`python benchmarks/overhead.py`).",
        ]
    )


def inference_markdown() -> str:
    """The latency table of benchmarks/inference_speed.py, with its machine and date."""
    if not (RESULTS / "inference_speed.json").is_file():
        return "Run `python benchmarks/inference_speed.py` to measure the latencies."
    result = load("inference_speed")
    rows = [
        "| threads | batch | PyTorch eager (ms) | ONNX Runtime (ms) | ONNX Runtime speed-up |",
        "|---|---|---|---|---|",
    ]
    rows += [
        f"| {r['threads']} | {r['batch']} | {r['pytorch_ms']:.3f} | {r['onnxruntime_ms']:.3f} | {r['speedup']:.1f}× |"
        for r in result.get("latency_one_thread", []) + result["latency"]
    ]
    machine = result["machine"]
    agreement = result["agreement"]
    load_average = result.get("load_average", {}).get("before", [None])[0]
    return "\n".join(
        rows
        + [
            "",
            f"The best of {result['rounds']} rounds of the median of {result['repeats']} calls, in milliseconds per "
            f"batch, on the CPU: {machine['cores']} cores ({machine['cpu']}), PyTorch {machine['torch']}, "
            f"ONNX Runtime {result['onnxruntime']}, {machine['date']}"
            + (f", load average {load_average:.1f} when it started" if load_average is not None else "")
            + f" (`python benchmarks/inference_speed.py`). On the {agreement['images']:,} test images, "
            f"{agreement['equal_predictions']:,} predictions are equal and the probabilities differ by at most "
            f"{agreement['max_abs_probability_difference']:.1e}. The browser runs the WebAssembly build on one "
            "thread; its speed depends on your device.",
        ]
    )


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    wanted = replace_block(current, results_markdown())
    if args.check:
        if wanted != current:
            print("README.md's results differ from benchmarks/results: run python build_tools/report.py")
            return 1
        print("README.md's results match benchmarks/results")
        return 0
    README.write_text(wanted, encoding="utf-8")
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
