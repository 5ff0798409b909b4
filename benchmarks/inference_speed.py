"""Inference speed on the CPU: PyTorch eager against ONNX Runtime, at batch 1 and batch 256.

Both run the original run's `CNNBatch` (`fmnist_lab.train.original_run`, seed 0) on test images, the
ONNX file exported by `fmnist_lab.export.export_to_onnx`. Each engine and batch size is measured with
`fmnist_lab.export.measure_latency` (warm-up, then the median of `--repeats` calls) in `--rounds`
interleaved rounds, and the best round is kept (the machine is shared), once with each engine on one
thread and once with its default number of threads. Before timing, ONNX Runtime is checked against
PyTorch on the whole test set. The load average before and after is stored with the results.
Prints the table and writes benchmarks/results/inference_speed.json.
Usage: python benchmarks/inference_speed.py [--repeats 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from machine import save

from fmnist_lab import data
from fmnist_lab.export import compare_with_pytorch, export_to_onnx, latency_table, onnx_session
from fmnist_lab.train import original_run

BATCH_SIZES = (1, 256)


def measure(model, onnx_path: Path, images: torch.Tensor, threads: int | None, repeats: int, rounds: int) -> list[dict]:
    """Best-of-rounds latency rows with `threads` threads for both engines (None: their defaults)."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    session = onnx_session(onnx_path, threads=threads)
    try:
        best: dict[int, dict] = {}
        for _ in range(rounds):
            for row in latency_table(model, session, images, BATCH_SIZES, repeats):
                kept = best.setdefault(row["batch"], dict(row))
                kept["pytorch_ms"] = min(kept["pytorch_ms"], row["pytorch_ms"])
                kept["onnxruntime_ms"] = min(kept["onnxruntime_ms"], row["onnxruntime_ms"])
    finally:
        torch.set_num_threads(default_threads)
    rows = []
    for batch in BATCH_SIZES:
        row = best[batch]
        rows.append(
            {
                "batch": batch,
                "threads": threads or "default",
                "pytorch_ms": row["pytorch_ms"],
                "onnxruntime_ms": row["onnxruntime_ms"],
                "speedup": row["pytorch_ms"] / row["onnxruntime_ms"],
                "onnxruntime_images_per_second": 1000 * batch / row["onnxruntime_ms"],
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, best kept (default 5)")
    args = parser.parse_args()
    import onnxruntime

    load_before = os.getloadavg()
    model, history = original_run()
    model = model.cpu().eval()
    images, _ = data.load("test", 16)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export_to_onnx(model, Path(folder) / "model.onnx")
        agreement = compare_with_pytorch(model, onnx_session(onnx_path), images)
        if agreement["equal_predictions"] != len(images) or agreement["max_abs_probability_difference"] > 1e-4:
            print(f"ONNX Runtime disagrees with PyTorch: {agreement}", file=sys.stderr)
            return 1
        single = measure(model, onnx_path, images, 1, args.repeats, args.rounds)
        default = measure(model, onnx_path, images, None, args.repeats, args.rounds)
    load_after = os.getloadavg()

    print(
        f"ONNX Runtime vs PyTorch on {agreement['images']:,} test images: "
        f"{agreement['equal_predictions']:,} equal predictions, max |Δprob| "
        f"{agreement['max_abs_probability_difference']:.1e}"
    )
    print(f"{'threads':>8} {'batch':>6} {'PyTorch ms':>11} {'ORT ms':>9} {'speed-up':>9} {'ORT img/s':>10}")
    for row in single + default:
        print(
            f"{row['threads']:>8} {row['batch']:>6} {row['pytorch_ms']:>11.3f} {row['onnxruntime_ms']:>9.3f} "
            f"{row['speedup']:>8.1f}× {row['onnxruntime_images_per_second']:>10,.0f}"
        )
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores")
    path = save(
        "inference_speed",
        {
            "model": type(model).__name__,
            "seed": 0,
            "test_accuracy": history[-1]["val_accuracy"],
            "onnxruntime": onnxruntime.__version__,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "agreement": agreement,
            "latency": default,
            "latency_one_thread": single,
            "load_average": {"before": list(load_before), "after": list(load_after)},
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
