"""The search-cost benchmark: its replay over the committed grid, and its command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_search import compose_cfg

from harness.study.engine.floors import floors

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "experiments" / "search-cost" / "grid.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_grid import distributions, key  # noqa: E402
from search_replay import Grid, Strategy, replay  # noqa: E402

from harness.study.engine.pruning import load_rules  # noqa: E402


@pytest.fixture(scope="module")
def grid():
    cfg = compose_cfg(["model=toy"])
    default = Strategy("default", str(cfg.search.sampler.type), load_rules(cfg))
    return Grid(json.loads(GRID.read_text()), floors(cfg), key), distributions(cfg), default


@pytest.mark.parametrize("seed", range(5))
def test_the_default_search_finds_a_preset_within_10_percent_of_the_best_for_3_percent_of_the_grid(grid, seed):
    """The issue's bar, replayed over the committed grid with the harness's default sampler and pruning."""
    grid_, dists, default = grid
    budget_s = 0.03 * grid_.total_s
    study = replay(grid_, dists, default, seed, budget_s, 400)
    within = [spent for spent, best in zip(study.spent, study.best) if best is not None and best <= 1.10 * grid_.best_s]
    assert within and within[0] <= budget_s
    # the quality stop is a rule of thumb learned from the study's own trials: on the grid measured 2026-12-01 it
    # stopped one feasible preset (0.79 s, slower than the target) in 3 of 5 seeds; it must never stop one that
    # would have been the answer
    target = 1.10 * grid_.best_s
    assert not any(o["rule"] == "quality" and o["feasible"] and o["time_s"] <= target for o in study.outcomes)


@pytest.mark.slow  # seconds to a minute end to end, kept out of the 5-minute default run: .ci/run runs it
def test_the_benchmark_writes_its_table_plot_and_results(tmp_path):
    args = ["--only", "descent + pruning", "--seeds", "2", "--out", str(tmp_path), f"paths.root_dir={tmp_path}"]
    done = subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "search_cost.py", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "table.md").read_text()
    assert "| descent + pruning (default) | " in table and "**2/2**" in table
    assert (tmp_path / "search_cost.png").stat().st_size > 10_000
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["seed"] for s in results["grid"]["studies"]] == [0, 1]
    spent = [share for share, _ in results["grid"]["studies"][0]["curve"]]
    assert spent == sorted(spent)  # generation-seconds only grow
    assert spent[-1] >= 0.06 or len(spent) == 400  # a study runs to twice the budget, or to the trial cap
