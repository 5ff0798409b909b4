"""Lesson 07's targets: the ablation of each trick, the original CNNBatch trained better, and a small ResNet.

- Ablation: CNNBatch (16×16, 5 epochs) with the original settings, then each trick of
  `fmnist_lab.recipes.TRICKS` alone; validation accuracy on 5,000 images held out of the training set. The
  baseline also runs with seed 1: the gap between its two runs is the noise of a single run.
- CNNBatch trained better: the exact 18,494-parameter model, 16×16, 5 epochs, `recipes.CNN_BATCH_RECIPE`;
  target at least 90.0% test accuracy for every seed (the original: 88.74%).
- ResNet: `fmnist_lab.resnet.ResNet(**recipes.RESNET_ARCHITECTURE)` at 28×28 with `recipes.RESNET_RECIPE`;
  targets at least 93.0% test accuracy and at most 10 minutes of training for every seed.
Protocol, as in the lesson: a validation run (55,000 training images, the first seed) chooses the
candidate — trained or EMA weights, with or without flip TTA — by validation accuracy; then, for every
seed, a final fit of the same recipe on all 60,000 training images, whose chosen candidate is measured
on the test set once. Training time is the final fit's sum of training steps (augmentation and EMA
included). The load average before and after each run is recorded: the machine is shared, and a busy
machine inflates the times.
Prints the tables and [OK]/[FAIL] per target and writes benchmarks/results/going_further.json.

`--speed-runs` measures only the ResNet's speed runs instead (`recipes.SPEED_RUN_RECIPES`: for each training
budget, the same recipe for as many epochs as fit, in float32 and with bf16 autocast). A validation run of each
chooses; the chosen one has the final fits, against `recipes.SPEED_RUN_TARGET_ACCURACY` for every seed within the
largest budget. Writes benchmarks/results/speed_runs.json.
Usage: python benchmarks/going_further.py [--seeds 0 1 2] [--skip-ablation | --speed-runs]
"""

from __future__ import annotations

import argparse
import os
import sys

from machine import save

from fmnist_lab import data, recipes
from fmnist_lab.models import CNNBatch, count_parameters
from fmnist_lab.original import ORIGINAL_TEST_ACCURACY
from fmnist_lab.resnet import ResNet, count_multiply_adds
from fmnist_lab.train import seed_everything

CNN_MIN_ACCURACY, RESNET_MIN_ACCURACY = recipes.CNN_TARGET_ACCURACY, recipes.RESNET_TARGET_ACCURACY
RESNET_MAX_SECONDS = recipes.RESNET_BUDGET_SECONDS
FINAL_FITS_HEADER = f"{'final fit on 60,000 images':<28}{'seed':>5}{'test acc':>10}{'train s':>9}{'load':>11}"


def load_average() -> float:
    """The 1-minute load average (how busy the shared machine is)."""
    return round(os.getloadavg()[0], 2)


def splits(image_size: int) -> tuple[tuple, tuple, tuple]:
    """(train, validation, test) at `image_size`: 55,000 / 5,000 of the training set (seed 0), and the test set."""
    train, val = recipes.train_val_split(*data.load("train", image_size), val_size=5000, seed=0)
    return train, val, data.load("test", image_size)


def run(model_factory, recipe: recipes.Recipe, train: tuple, val: tuple | None, seed: int) -> tuple[dict, object]:
    """One seeded training run (validated on `val` after each epoch when given): its numbers and its result."""
    before = load_average()
    seed_everything(seed)
    result = recipes.train_recipe(model_factory(), train, val, recipe, seed=seed, device="cpu")
    last = result.history[-1]
    return (
        {
            "seed": seed,
            "val_accuracy": last["val_accuracy"],
            "val_accuracy_raw": last["val_accuracy_raw"],
            "train_seconds": result.train_seconds,
            "wall_seconds": result.wall_seconds,
            "load_before": before,
            "load_after": load_average(),
            "history": result.history,
        },
        result,
    )


def validate(name: str, model_factory, recipe: recipes.Recipe, train: tuple, val: tuple, seed: int) -> dict:
    """The validation run (55,000 images, `seed`): every candidate's validation accuracy, and the one it chooses."""
    validation, result = run(model_factory, recipe, train, val, seed)
    chosen, scores = recipes.select_on_validation(result, *val)
    print(
        f"{name}: validation run (seed {seed}, {validation['train_seconds']:.1f} s) chose "
        f"{chosen.label!r}: " + ", ".join(f"{c.label} {v:.2%}" for c, v in scores.items()),
        flush=True,
    )
    validation.update({"selected": chosen.label, "selection_val_accuracy": {c.label: v for c, v in scores.items()}})
    return {"validation_run": validation, "selected": chosen, "score": scores[chosen]}


def final_fits(name: str, model_factory, recipe: recipes.Recipe, splits_: tuple, chosen, seeds: list[int]) -> list:
    """For every seed, a final fit on all 60,000 images, its `chosen` candidate tested once."""
    train, val, test = splits_
    finals = []
    for seed in seeds:
        final, result = run(model_factory, recipe, recipes.combine(train, val), None, seed)
        final["test_accuracy"] = chosen.accuracy(result, *test)
        finals.append(final)
        print(
            f"{name:<28}{seed:>5}{final['test_accuracy']:>10.2%}{final['train_seconds']:>9.1f}"
            f"{final['load_before']:>5.1f}→{final['load_after']:<5.1f}",
            flush=True,
        )
    return finals


def headline(name: str, model_factory, recipe: recipes.Recipe, splits_: tuple, seeds: list[int]) -> dict:
    """Choose the candidate on the validation split (first seed), then fit on all 60,000 images per seed and test."""
    validation = validate(name, model_factory, recipe, *splits_[:2], seeds[0])
    finals = final_fits(name, model_factory, recipe, splits_, validation["selected"], seeds)
    return {"validation_run": validation["validation_run"], "selected": validation["selected"].label, "runs": finals}


def ablation(train: tuple, val: tuple) -> list[dict]:
    """The baseline (seeds 0 and 1: the noise of one run), then each trick alone (seed 0), on the validation split."""
    runs = {
        "baseline (original settings)": ({}, 0),
        "baseline, seed 1 (noise)": ({}, 1),
        **{name: (changes, 0) for name, changes in recipes.TRICKS.items()},
    }
    rows = []
    for name, (changes, seed) in runs.items():
        outcome, _ = run(CNNBatch, recipes.BASELINE.but(**changes), train, val, seed=seed)
        rows.append(
            {
                "trick": name,
                "changes": changes,
                "seed": seed,
                **{k: outcome[k] for k in ("val_accuracy", "train_seconds", "load_before", "load_after")},
            }
        )
        delta = outcome["val_accuracy"] - rows[0]["val_accuracy"]
        print(
            f"{name:<36}{outcome['val_accuracy']:>10.2%}{100 * delta:>+9.2f}{outcome['train_seconds']:>9.1f}",
            flush=True,
        )
    return rows


def new_resnet() -> ResNet:
    """Lesson 07's ResNet, built after `run` seeds it."""
    return ResNet(**recipes.RESNET_ARCHITECTURE)


def resnet_info() -> dict:
    """The ResNet's architecture, parameters and multiply-adds per image."""
    probe = new_resnet()
    return {
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in recipes.RESNET_ARCHITECTURE.items()},
        "params": count_parameters(probe),
        "multiply_adds": count_multiply_adds(probe),
    }


def speed_runs(seeds: list[int]) -> int:
    """The ResNet within each training budget of `recipes.SPEED_RUN_RECIPES`; writes results/speed_runs.json.

    Each budget's recipes (float32, and bfloat16 autocast for more epochs) each have a validation run; the best
    one's chosen candidate (the first recipe on a tie) has the final fits.
    """
    runs, checks, data28 = [], {}, splits(28)
    for budget, candidates in recipes.SPEED_RUN_RECIPES.items():
        trials = [
            {"recipe": recipe, **validate(speed_run_name(recipe), new_resnet, recipe, *data28[:2], seeds[0])}
            for recipe in candidates
        ]
        best = max(trials, key=lambda trial: trial["score"])  # max keeps the first of equal scores
        name = speed_run_name(best["recipe"])
        print(FINAL_FITS_HEADER)
        finals = final_fits(name, new_resnet, best["recipe"], data28, best["selected"], seeds)
        runs.append(
            {
                "budget_seconds": budget,
                "recipe": best["recipe"].to_dict(),
                "validation_run": best["validation_run"],
                "selected": best["selected"].label,
                "runs": finals,
                "candidates": [
                    {"recipe": t["recipe"].to_dict(), "validation_run": t["validation_run"]} for t in trials
                ],
            }
        )
        checks[f"{name}: every seed trains in <= {budget:.0f} s"] = all(r["train_seconds"] <= budget for r in finals)
    largest = max(recipes.SPEED_RUN_RECIPES)
    checks[f"ResNet within {largest:.0f} s: every seed >= {recipes.SPEED_RUN_TARGET_ACCURACY:.1%} test"] = all(
        r["test_accuracy"] >= recipes.SPEED_RUN_TARGET_ACCURACY for r in runs[-1]["runs"]
    )
    for name, passed in checks.items():
        print(f"[{'OK' if passed else 'FAIL'}] {name}")
    payload = {"seeds": seeds, "image_size": 28, **resnet_info(), "budgets": runs, "checks": checks}
    print(f"wrote {save('speed_runs', {'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'), **payload})}")
    return 0 if all(checks.values()) else 1


def speed_run_name(recipe: recipes.Recipe) -> str:
    """How the tables name a speed-run recipe: "ResNet, 26 epochs", "ResNet, 34 epochs, bf16"."""
    return f"ResNet, {recipe.epochs} epochs{', bf16' if recipe.bf16 else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the headline runs")
    parser.add_argument("--skip-ablation", action="store_true", help="only the two headline results")
    parser.add_argument("--speed-runs", action="store_true", help="only the ResNet's speed runs (speed_runs.json)")
    args = parser.parse_args()
    if args.speed_runs:
        return speed_runs(args.seeds)
    payload: dict = {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}  # threads: in "machine"

    train16, val16, test16 = splits(16)
    if not args.skip_ablation:
        print(f"{'ablation: CNNBatch 16×16, 5 epochs':<36}{'val acc':>10}{'Δ pts':>9}{'train s':>9}")
        payload["ablation"] = ablation(train16, val16)

    print(f"\n{FINAL_FITS_HEADER}")
    cnn = headline("CNNBatch 16×16, 5 epochs", CNNBatch, recipes.CNN_BATCH_RECIPE, (train16, val16, test16), args.seeds)
    cnn_runs = cnn["runs"]
    resnet_facts = resnet_info()
    resnet = headline(
        f"ResNet 28×28, {recipes.RESNET_RECIPE.epochs} epochs",
        new_resnet,
        recipes.RESNET_RECIPE,
        splits(28),
        args.seeds,
    )
    resnet_runs = resnet["runs"]
    print(
        f"ResNet: {resnet_facts['params']:,} parameters, {resnet_facts['multiply_adds'] / 1e6:.1f} M multiply-adds "
        f"per image; CNNBatch: {count_parameters(CNNBatch()):,} parameters, "
        f"{count_multiply_adds(CNNBatch(), 16) / 1e6:.2f} M; original notebook: {ORIGINAL_TEST_ACCURACY:.2%}"
    )

    checks = {
        f"CNNBatch: every seed >= {CNN_MIN_ACCURACY:.1%} test": all(
            r["test_accuracy"] >= CNN_MIN_ACCURACY for r in cnn_runs
        ),
        f"ResNet: every seed >= {RESNET_MIN_ACCURACY:.1%} test": all(
            r["test_accuracy"] >= RESNET_MIN_ACCURACY for r in resnet_runs
        ),
        f"ResNet: every seed trains in <= {RESNET_MAX_SECONDS / 60:.0f} min": all(
            r["train_seconds"] <= RESNET_MAX_SECONDS for r in resnet_runs
        ),
    }
    for name, passed in checks.items():
        print(f"[{'OK' if passed else 'FAIL'}] {name}")
    payload.update(
        {
            "seeds": args.seeds,
            "cnn_batch": {
                "recipe": recipes.CNN_BATCH_RECIPE.to_dict(),
                "params": count_parameters(CNNBatch()),
                "multiply_adds": count_multiply_adds(CNNBatch(), 16),
                "image_size": 16,
                **cnn,
            },
            "resnet": {**resnet_facts, "recipe": recipes.RESNET_RECIPE.to_dict(), "image_size": 28, **resnet},
            "checks": checks,
        }
    )
    path = save("going_further", payload)
    print(f"wrote {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
