"""What a study pays to find the fastest preset that keeps quality, strategy by strategy.

Builds (once, then reuses) exhaustive grids of two discrete spaces on the toy world at the
baseline's output spec (``benchmarks/search_grid.py``: ``grid`` and ``wide``, another
discretisation), then replays studies over each (``benchmarks/search_replay.py``): each
strategy (a sampler and a pruning policy) with several sampler seeds, recording after every
trial the best feasible time found and the generation-seconds spent. Writes a table, a plot
per grid and the raw results:

    python benchmarks/search_cost.py                      # the grid: experiments/search-cost/grid.json
    python benchmarks/search_cost.py --grids grid wide    # also another discretisation (grid-wide.json)
    python benchmarks/search_cost.py --seeds 5 --budget 0.03 --grids grid
    python benchmarks/search_cost.py --rebuild            # measure the grid again (about 33 min on 2 cores)

A study "reaches" when its best feasible preset is within ``--within`` (10%) of the grid's
best feasible time; it must do so within ``--budget`` (3%) of the grid's generation-seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import search_grid  # the benchmark's own modules, beside it
from search_figures import plot, table
from search_replay import Grid, Replay, Strategy, replay
from tqdm.auto import tqdm

from harness.study.engine.compose import compose_config
from harness.study.engine.floors import floors
from harness.study.engine.pruning import Rules, load_rules

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "search-cost"
MAX_TRIALS = 400  # a replay also stops here (GPSampler re-proposes measured presets, which cost nothing)
RULES = ("predicted", "repeat", "quality", "time")


def strategies(pruning: Rules, sampler: str) -> tuple[Strategy, ...]:
    """What is compared: each sampler with the old single-video time rule and with the configured pruning
    (``search.prune_*``), and the configured sampler with one rule at a time."""
    return (
        Strategy("TPE, old pruning", "tpe", None),
        Strategy("random, old pruning", "random", None),
        Strategy("GP (constraints), old pruning", "gp", None),
        Strategy(f"{sampler}, old pruning", sampler, None),
        Strategy("TPE + pruning", "tpe", pruning),
        Strategy("random + pruning", "random", pruning),
        Strategy("GP (constraints) + pruning", "gp", pruning),
        Strategy(f"{sampler} + quality stop only", sampler, replace(pruning, predict=False)),
        Strategy(f"{sampler} + prediction only", sampler, replace(pruning, quality=False)),
        Strategy(f"{sampler} + pruning (default)", sampler, pruning),
    )


def grid_path(folder: Path, name: str) -> Path:
    """``grid.json`` for the first space, ``grid-<name>.json`` for the others."""
    return folder / ("grid.json" if name == "grid" else f"grid-{name}.json")


def main(argv: list[str]) -> None:
    args = _arguments(argv)
    cfg = compose_config(["model=toy", *args.overrides])
    compared = strategies(load_rules(cfg), str(cfg.search.sampler.type))
    chosen = [s for s in compared if not args.only or any(word in s.name for word in args.only)]
    args.out.mkdir(parents=True, exist_ok=True)
    everything, tables, written = {}, [], []
    for name in args.grids:
        grid_data = search_grid.build(cfg, grid_path(args.grid_dir, name), args.rebuild, name)
        grid = Grid(grid_data, floors(cfg), search_grid.key)
        replays = _replay_all(grid, search_grid.distributions(cfg, name), chosen, args)
        everything[name] = _results(grid, grid_data, replays, args)
        picture = args.out / ("search_cost.png" if name == "grid" else f"search_cost-{name}.png")
        plot(everything[name], picture)
        tables.append(table(everything[name], name, picture.name))
        written.append(picture)
    (args.out / "results.json").write_text(json.dumps(everything, indent=1))
    (args.out / "table.md").write_text("\n".join(tables))
    print("\n".join(tables))
    print(f"written: {args.out / 'table.md'}, {', '.join(map(str, written))}, {args.out / 'results.json'}")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", choices=list(search_grid.SPACES), default=["grid"],
                        help="the spaces replayed (built when missing; wide: about 50 min more)")  # fmt: skip
    parser.add_argument("--grid-dir", type=Path, default=OUT, help="where the grids' JSON lie")
    parser.add_argument("--rebuild", action="store_true", help="measure the grids again")
    parser.add_argument("--out", type=Path, default=OUT, help="where the table, plot and results go")
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds per strategy")
    parser.add_argument("--budget", type=float, default=0.03, help="the share of the grid's seconds to reach within")
    parser.add_argument("--within", type=float, default=0.10, help="how close to the grid's best counts as reached")
    parser.add_argument("--only", nargs="*", help="run only strategies whose name contains one of these words")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the measuring config (e.g. prompts=...)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or not 0 < args.budget <= 1 or not 0 <= args.within < 1:
        parser.error(f"--seeds {args.seeds} >= 1, --budget {args.budget} in (0, 1], --within {args.within} in [0, 1)")
    return args


def _replay_all(grid: Grid, dists: dict, strategies: list[Strategy], args: argparse.Namespace) -> list[Replay]:
    """Every strategy x seed, each study running to twice the budget (so the plot shows what comes after)."""
    runs = [(s, seed) for s in strategies for seed in range(args.seeds)]
    budget_s = 2 * args.budget * grid.total_s
    return [replay(grid, dists, s, seed, budget_s, MAX_TRIALS) for s, seed in tqdm(runs, desc="studies")]


def _results(grid: Grid, grid_data: dict, replays: list[Replay], args: argparse.Namespace) -> dict:
    target = (1 + args.within) * grid.best_s
    baseline_s = grid.judged(grid.presets[search_grid.key(grid.baseline_params)])
    return {
        "grid": {
            **search_grid.summary(grid_data),
            "spec": grid_data["spec"],
            "best_s": grid.best_s,
            "best_single_s": grid.best_single_s,
            "baseline_s": baseline_s,
            "feasible": sum(grid.feasible(p) for p in grid.presets.values()),
            "best_presets": _best_presets(grid, target),
        },
        "budget": args.budget,
        "within": args.within,
        "studies": [_study(run, grid, target, args.budget * grid.total_s) for run in replays],
    }


def _study(run: Replay, grid: Grid, target: float, budget_s: float) -> dict:
    """One replayed study: when it reached the target, what it pruned and how rightly."""
    reached = next((i for i, best in enumerate(run.best) if best is not None and best <= target), None)
    single_target = target / grid.best_s * grid.best_single_s
    single = next((i for i, b in enumerate(run.best_single) if b is not None and b <= single_target), None)
    errors = [abs(o["prediction_error"]) for o in run.outcomes if o.get("prediction_error") is not None]
    pruned = [o for o in run.outcomes if o["state"] == "pruned"]
    wrong_predictions = [o for o in pruned if o["rule"] == "predicted" and o["feasible"] and o["time_s"] < o["best_s"]]
    return {
        "strategy": run.strategy,
        "seed": run.seed,
        "reached": reached is not None and run.spent[reached] <= budget_s,
        "spent_share": None if reached is None else run.spent[reached] / grid.total_s,
        "trials": None if reached is None else reached + 1,
        "reached_by_single_measurements": single is not None and run.spent[single] <= budget_s,
        "best_at_budget": _best_at(run, budget_s),
        "pruned": {rule: sum(o["rule"] == rule for o in pruned) for rule in RULES},
        "wrong_quality_stops": sum(o["rule"] == "quality" and o["feasible"] for o in pruned),
        "wrong_predictions": len(wrong_predictions),
        "prediction_error_median": statistics.median(errors) if errors else None,
        "prediction_error_max": max(errors) if errors else None,
        "curve": [[s / grid.total_s, b] for s, b in zip(run.spent, run.best)],
    }


def _best_at(run: Replay, seconds: float) -> float | None:
    best = [b for s, b in zip(run.spent, run.best) if s <= seconds and b is not None]
    return min(best) if best else None


def _best_presets(grid: Grid, target: float) -> list[dict]:
    """The grid's feasible presets within reach of the target, fastest first."""
    found = [p for p in grid.presets.values() if grid.feasible(p) and grid.judged(p) <= target]
    rows = [{"judged_s": grid.judged(p), "measured_s": grid.median(p), **p["params"]} for p in found]
    return sorted(rows, key=lambda row: (row["judged_s"], row["measured_s"]))


if __name__ == "__main__":
    main(sys.argv[1:])
