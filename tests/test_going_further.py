"""benchmarks/going_further.py --speed-runs: the protocol on a small sample, and the table the README shows from it."""

from __future__ import annotations

import json

import pytest
from conftest import benchmark_script, build_tool

from fmnist_lab import recipes

going_further, report = benchmark_script("going_further"), build_tool("report")


@pytest.fixture(scope="module")
def small_speed_runs(tmp_path_factory):
    """Two budgets (1 epoch or 2 in bf16; 2 epochs) on 1,000 training, 300 validation, 300 test images, seeds 0, 1."""
    results, original_splits = tmp_path_factory.mktemp("results"), going_further.splits

    def small(image_size):
        train, val, test = original_splits(image_size)
        return [(images[:n], labels[:n]) for (images, labels), n in zip((train, val, test), (1000, 300, 300))]

    one, two = recipes.RESNET_RECIPE.but(epochs=1), recipes.RESNET_RECIPE.but(epochs=2)
    short = {60.0: (one, two.but(bf16=True)), 90.0: (two,)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(going_further, "splits", small)
        patch.setattr(recipes, "SPEED_RUN_RECIPES", short)
        patch.setitem(going_further.save.__globals__, "RESULTS", results)
        patch.setattr(report, "RESULTS", results)
        returncode = going_further.speed_runs([0, 1])
        yield returncode, json.loads((results / "speed_runs.json").read_text()), report.speed_runs_markdown()


def test_the_speed_runs_choose_on_validation_then_test_every_seeds_final_fit(small_speed_runs):
    _, result, _ = small_speed_runs
    assert [point["budget_seconds"] for point in result["budgets"]] == [60.0, 90.0]
    first, second = result["budgets"]
    assert [c["recipe"]["bf16"] for c in first["candidates"]] == [False, True] and len(second["candidates"]) == 1
    for point in result["budgets"]:
        scores = [max(c["validation_run"]["selection_val_accuracy"].values()) for c in point["candidates"]]
        best = point["candidates"][scores.index(max(scores))]  # the first of equal scores
        assert point["recipe"] == best["recipe"] and point["validation_run"] == best["validation_run"]
        assert (
            point["validation_run"]["seed"] == 0
            and point["selected"] in point["validation_run"]["selection_val_accuracy"]
        )
        assert [run["seed"] for run in point["runs"]] == [0, 1]
        assert all(0 < run["test_accuracy"] <= 1 and run["val_accuracy"] is None for run in point["runs"])
    assert result["params"] == 308_074 and result["machine"]["cores"] >= 1


def test_the_speed_runs_fail_their_accuracy_target_when_a_seed_misses_it(small_speed_runs):
    returncode, result, _ = small_speed_runs  # one epoch on 1,000 images: far below 94%
    accuracy_check = [name for name in result["checks"] if "test" in name]
    assert returncode == 1 and len(accuracy_check) == 1 and result["checks"][accuracy_check[0]] is False


def test_the_speed_runs_table_shows_every_seed_and_every_check_as_saved(small_speed_runs):
    _, result, table = small_speed_runs
    for point in result["budgets"]:
        assert all(f"{run['test_accuracy']:.2%}" in table for run in point["runs"])
        for trial in point["candidates"]:  # every validation run, float32 or bf16, and whether it was chosen
            validation = trial["validation_run"]
            chosen = "yes" if trial["recipe"] == point["recipe"] else "no"
            precision = "bf16 autocast" if trial["recipe"]["bf16"] else "float32"
            best = max(validation["selection_val_accuracy"].values())
            seconds = validation["train_seconds"]
            row = f"| {trial['recipe']['epochs']} | {precision} | {best:.2%} | {seconds:.1f} s | {chosen} |"
            assert row in table
    for name, met in result["checks"].items():
        assert f"- [{'OK' if met else 'FAIL'}] {name}" in table
