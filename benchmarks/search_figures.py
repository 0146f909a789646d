"""The search-cost benchmark's table (markdown) and plot (best-so-far against seconds spent)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def by_strategy(results: dict) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for study in results["studies"]:
        grouped[study["strategy"]].append(study)
    return grouped


def _load(grid: dict) -> str:
    """The load average the grid's measurement started and ended at, as ``grid.json`` records it."""
    loads = grid.get("load_average") or []
    return f" at load average {min(loads):.2f}-{max(loads):.2f}" if loads else ""


def table(results: dict, name: str = "grid", picture: str = "search_cost.png") -> str:
    """Per strategy: every seed's cost to reach, how many seeds reached within the budget, pruning counts."""
    grid, budget, within = results["grid"], results["budget"], results["within"]
    space = ", ".join(f"{key.removeprefix('sample_')} {_values(spec)}" for key, spec in grid["spec"]["space"].items())
    lines = [
        f"# Search cost over the `{name}` grid: what a study pays to find the fastest preset that keeps quality\n",
        "Made by `python benchmarks/search_cost.py` (each grid is measured once, then reused; see its docstring). "
        "Every study is replayed over the grid with the harness's own samplers and pruning rules, starting from "
        f"the baseline; a video costs its measured generation-seconds. Plot: `{picture}`; raw: `results.json`.\n",
        f"Space: {space}.",
        "",
        f"Grid: {grid['presets']} presets x {grid['videos'] // grid['presets']} videos = {grid['seconds']:.0f} "
        f"generation-seconds ({grid['spec']['model']}, {grid['spec']['device']}, {grid['spec']['output_spec']}; "
        f"measured {grid.get('measured_at', 'on an unrecorded date')}{_load(grid)}). "
        f"Feasible (CLIP >= 0.95 x baseline, PSNR >= 30 dB): {grid['feasible']}.",
        "",
        "A preset's time is judged by the median of every grid video that did the same work (transformer calls x "
        "tokens; solver and shift do not change it): one preset's own two videos carry the machine's noise, "
        "which would otherwise decide which of several equally fast presets counts as the best. Best "
        f"feasible: {grid['best_s']:.3f} s/video against the baseline's {grid['baseline_s']:.3f} s "
        f"({grid['baseline_s'] / grid['best_s']:.2f}x): "
        + ", ".join(_preset_name(p) for p in grid["best_presets"])
        + f". The fastest single measurement of a feasible preset: {grid['best_single_s']:.3f} s.",
        "",
        f"Reached: best feasible within {within:.0%} of the grid's best ({(1 + within) * grid['best_s']:.3f} s), "
        f"having spent at most {budget:.0%} of the grid's generation-seconds. Cells: share of the grid spent "
        f"when reached (trials), `-` when not reached within {2 * budget:.0%} or 400 trials, `!` when reached "
        "past the budget. "
        "The last column judges by each preset's own measurements instead.",
        "",
        "| strategy | " + " | ".join(f"seed {s['seed']}" for s in by_strategy(results)[_first(results)])
        + " | reached | median spent | pruned: predicted / repeat / quality / time | wrong stops: quality / predicted"
        + " | prediction error (median / max) | reached, single measurements |",
        "|---|" + "---|" * (len(by_strategy(results)[_first(results)]) + 6),
    ]  # fmt: skip
    for strategy, studies in by_strategy(results).items():
        lines.append(_row(strategy, studies))
    return "\n".join(lines) + "\n"


def _values(spec: dict) -> str:
    if spec["type"] == "categorical":
        return "/".join(map(str, spec["choices"]))
    return f"{spec['low']:g}-{spec['high']:g} by {spec.get('step', 1):g}"


def _preset_name(row: dict) -> str:
    keys = ("sample_steps", "sample_solver", "sample_shift", "sample_guide_scale")
    steps, solver, shift, guide = (row[k] for k in keys)
    return f"{steps} {solver} shift {shift:g} guide {guide:g}"


def _first(results: dict) -> str:
    return results["studies"][0]["strategy"]


def _row(name: str, studies: list[dict]) -> str:
    cells = [
        "-" if s["spent_share"] is None else f"{s['spent_share']:.2%} ({s['trials']})" + ("" if s["reached"] else " !")
        for s in studies
    ]
    reached = sum(s["reached"] for s in studies)
    spent = [s["spent_share"] for s in studies if s["spent_share"] is not None]
    median = f"{statistics.median(spent):.2%}" if len(spent) == len(studies) else "-"
    pruned = [sum(s["pruned"][rule] for s in studies) for rule in ("predicted", "repeat", "quality", "time")]
    wrong = f"{sum(s['wrong_quality_stops'] for s in studies)} / {sum(s['wrong_predictions'] for s in studies)}"
    errors = [s for s in studies if s["prediction_error_median"] is not None]
    error = (
        f"{statistics.median(s['prediction_error_median'] for s in errors):.1%} / "
        f"{max(s['prediction_error_max'] for s in errors):.1%}"
        if errors
        else "-"
    )
    return (
        f"| {name} | " + " | ".join(cells) + f" | **{reached}/{len(studies)}** | {median} | "
        f"{' / '.join(map(str, pruned))} | {wrong} | {error} | "
        f"{sum(s['reached_by_single_measurements'] for s in studies)}/{len(studies)} |"
    )


def plot(results: dict, path: Path) -> None:
    """One panel per strategy: best feasible time found (x the grid's best) against the share of the grid's
    generation-seconds spent, one line per sampler seed."""
    grid_best = results["grid"]["best_s"]
    grouped = by_strategy(results)
    columns = min(5, len(grouped))
    rows = -(-len(grouped) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 2.8 * rows), sharex=True, sharey=True, squeeze=False
    )
    for ax, (name, studies) in zip(axes.flat, grouped.items()):
        for color, study in zip(plt.cm.tab10.colors, studies):
            points = [(100 * share, best / grid_best) for share, best in study["curve"] if best is not None]
            if points:
                xs, ys = zip(*points)
                ax.step(xs, ys, where="post", color=color, lw=1.3, label=f"seed {study['seed']}")
        ax.axhline(1 + results["within"], color="k", ls=":", lw=1)
        ax.axvline(100 * results["budget"], color="k", ls="--", lw=1)
        reached = sum(s["reached"] for s in studies)
        ax.set_title(f"{name}\n{reached}/{len(studies)} seeds reached", fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_ylim(0.95, 1.6)
    for ax in axes.flat[len(grouped) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("% of the grid's seconds spent", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("best found / grid's best", fontsize=8)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(
        f"Search cost: dotted = within {results['within']:.0%} of the grid's best, dashed = budget "
        f"{results['budget']:.0%} of the grid's generation-seconds",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
