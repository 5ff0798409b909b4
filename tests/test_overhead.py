"""benchmarks/overhead.py and its table: the phases account for the whole run, and the page shows the saved numbers."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, benchmark_script, build_tool

overhead, report = benchmark_script("overhead"), build_tool("report")


def test_the_phases_add_up_to_the_whole_run_and_the_fixed_cost_leaves_out_only_the_steps():
    marks = {"child_started": 10.05, "torch_imported": 11.0, "rest_imported": 11.3, "main_started": 11.31}
    marks["main_returned"] = 20.0
    events = [  # two loads, two epochs each followed by its validation, the figures, a load for one of them, the files
        ("data", 11.4, 12.0),
        ("data", 12.0, 12.1),
        ("training", 12.3, 15.0),
        ("validation", 15.0, 15.2),
        ("training", 15.2, 18.0),
        ("validation", 18.0, 18.2),
        ("figures_drawn", 18.3, 18.4),
        ("data", 18.4, 18.45),
        ("figures_drawn", 18.45, 18.5),
        ("files_written", 18.5, 19.0),
    ]
    phases = overhead.phases_of(10.0, 20.2, marks, events)
    assert list(phases) == list(overhead.PHASES)
    assert sum(phases.values()) == pytest.approx(20.2 - 10.0)
    assert phases["training"] == pytest.approx(5.5) and phases["until_training"] == pytest.approx(0.2)
    assert phases["data"] == pytest.approx(0.75) and phases["exit"] == pytest.approx(0.2)


def test_the_benchmarks_page_shows_every_phase_as_saved():
    saved = json.loads((REPO / "benchmarks" / "results" / "overhead.json").read_text())
    table = report.overhead_markdown()
    for key, text in saved["phases"].items():
        assert f"| {text} | {saved['median'][key]:.2f} |" in table
    assert f"**{saved['median']['fixed']:.2f}**" in table and saved["machine"]["date"] in table
    assert set(saved["phases"]) == set(overhead.PHASES), "overhead.json is older than benchmarks/overhead.py"
