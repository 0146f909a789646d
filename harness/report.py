"""A study's report: ``python -m harness.report study=NAME``.

Writes ``experiments/<study>/report.md`` with a table of every trial, the Pareto front of
time against quality, parameter importances and the optimization history (PNGs), and the
baseline against the best feasible trial and the proposal's presets; logs them all to the
study's MLflow run. ``optuna-dashboard sqlite:///mlruns/optuna.db`` opens the same storage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from harness import tracking  # noqa: E402
from harness.search import best_feasible, feasible, storage_url, study_run_id  # noqa: E402

STATE_STYLE = {"feasible": ("tab:green", "o"), "infeasible": ("tab:red", "x"), "pruned": ("tab:gray", "v"), "failed": ("black", "s")}


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out, write as PNG and close a matplotlib figure."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def load_study(cfg: DictConfig) -> optuna.Study:
    """The study named ``study`` in the configured storage.

    Raises:
        ValueError: no such study (the message lists the studies there).
    """
    url = storage_url(cfg)
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    if cfg.study not in names:
        raise ValueError(f"study={cfg.study!r} is not in {url}; studies there: {names or 'none'}")
    return optuna.load_study(study_name=str(cfg.study), storage=url)


def status(trial: optuna.trial.FrozenTrial) -> str:
    """feasible, infeasible, pruned, failed or running."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return "feasible" if feasible(trial) else "infeasible"
    return {"PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())


def _label(trial: optuna.trial.FrozenTrial) -> str:
    return trial.user_attrs.get("preset_name", f"trial-{trial.number}")


def _note(trial: optuna.trial.FrozenTrial) -> str:
    if trial.state == optuna.trial.TrialState.PRUNED:
        return trial.user_attrs.get("prune_reason", "")
    if trial.state == optuna.trial.TrialState.FAIL:
        return trial.user_attrs.get("fail_reason", "process ended mid-trial")
    missed = {k.removeprefix("floor_"): v for k, v in (trial.constraints or {}).items() if v > 0}
    return ", ".join(f"{k} short by {v:.3g}" for k, v in missed.items())


def _cell(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def trials_table(study: optuna.Study) -> str:
    """Markdown table of every trial."""
    head = "| # | preset | state | steps | solver | shift | guide | frames | size | s/video | CLIP | PSNR dB | SSIM | note |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for t in study.get_trials(deepcopy=False):
        p, u = t.params, t.user_attrs
        lines.append(
            f"| {t.number} | {_label(t)} | {status(t)} | {p.get('sample_steps', '')} | {p.get('sample_solver', '')} | "
            f"{_cell(p.get('sample_shift'), '.2f')} | {_cell(p.get('sample_guide_scale'), '.2f')} | {p.get('frame_num', '')} | "
            f"{p.get('size', '')} | {_cell(t.value, '.3f')} | {_cell(u.get('mean_clip_score'), '.1f')} | "
            f"{_cell(u.get('mean_psnr_db'), '.1f')} | {_cell(u.get('mean_ssim'), '.3f')} | {_note(t)} |"
        )
    return "\n".join(lines)


def plot_pareto(study: optuna.Study, path: Path) -> Path:
    """Time against quality (PSNR and CLIP), by state, with the feasible Pareto front."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.value is not None or "median_wall_time_s" in t.user_attrs]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, metric, name in ((axes[0], "mean_psnr_db", "PSNR to baseline video (dB)"), (axes[1], "mean_clip_score", "CLIP score")):
        for state, (color, marker) in STATE_STYLE.items():
            points = [(t.value, t.user_attrs[metric], t) for t in trials
                      if status(t) == state and t.value is not None and metric in t.user_attrs]
            if points:
                axis.scatter([p[0] for p in points], [p[1] for p in points], c=color, marker=marker, label=state)
            for x, y, t in points:
                if "preset_name" in t.user_attrs:
                    axis.annotate(t.user_attrs["preset_name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = _front([(t.value, t.user_attrs[metric]) for t in trials if feasible(t) and metric in t.user_attrs])
        if front:
            axis.step([p[0] for p in front], [p[1] for p in front], where="post", c="tab:green", alpha=0.5, label="feasible front")
        axis.set_xlabel("median wall time per video (s)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"study {study.study_name}: time against quality")
    return save_figure(figure, path)


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both lower time and higher quality, by time."""
    front, best = [], float("-inf")
    for time_s, quality in sorted(points):
        if quality > best:
            front.append((time_s, quality))
            best = quality
    return front


def plot_history(study: optuna.Study, path: Path) -> Path:
    """Each trial's time by number, and the best feasible time so far."""
    figure, axis = plt.subplots(figsize=(8, 4))
    best, xs, ys = float("inf"), [], []
    for t in study.get_trials(deepcopy=False):
        if t.value is not None:
            color, marker = STATE_STYLE.get(status(t), ("tab:blue", "o"))
            axis.scatter(t.number, t.value, c=color, marker=marker)
        if feasible(t):
            best = min(best, t.value)
        if best < float("inf"):
            xs.append(t.number)
            ys.append(best)
    axis.step(xs, ys, where="post", c="tab:green", label="best feasible so far")
    axis.set_xlabel("trial")
    axis.set_ylabel("median wall time per video (s)")
    axis.legend()
    axis.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_importances(study: optuna.Study, path: Path) -> Path | None:
    """fANOVA importance of each parameter for time (None when too few trials to tell)."""
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return None
    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = list(importances)[::-1]
    axis.barh(names, [importances[n] for n in names], color="tab:blue")
    axis.set_xlabel("importance for time per video (fANOVA)")
    return save_figure(figure, path)


def comparison(study: optuna.Study) -> str:
    """Baseline, the proposal's presets and the best feasible trial, side by side."""
    trials = study.get_trials(deepcopy=False)
    named = {t.user_attrs["preset_name"]: t for t in trials if "preset_name" in t.user_attrs and t.value is not None}
    baseline = named.get("baseline")
    rows = [(name, t) for name, t in named.items()]
    best = best_feasible(study)
    if best is not None:
        rows.append((f"best feasible (#{best.number})", best))
    lines = ["| preset | state | s/video | speed-up | CLIP (change) | PSNR dB | SSIM |", "|---|---|---|---|---|---|---|"]
    for name, t in rows:
        speed = f"{baseline.value / t.value:.2f}x" if baseline else ""
        clip = t.user_attrs.get("mean_clip_score")
        base_clip = baseline.user_attrs.get("mean_clip_score") if baseline else None
        change = f" ({(clip - base_clip) / base_clip:+.1%})" if clip is not None and base_clip else ""
        lines.append(f"| {name} | {status(t)} | {t.value:.3f} | {speed} | {_cell(clip, '.1f')}{change} | "
                     f"{_cell(t.user_attrs.get('mean_psnr_db'), '.1f')} | {_cell(t.user_attrs.get('mean_ssim'), '.3f')} |")
    summary = ""
    if baseline and best:
        summary = (f"\nBest feasible trial #{best.number} takes **{best.value:.3f} s** per video against the baseline's "
                   f"{baseline.value:.3f} s: **{baseline.value / best.value:.2f}x faster**, with PSNR "
                   f"{best.user_attrs.get('mean_psnr_db', float('nan')):.1f} dB and SSIM "
                   f"{best.user_attrs.get('mean_ssim', float('nan')):.3f} against the baseline's video.\n")
    elif baseline:
        summary = "\nNo feasible trial is faster than the baseline yet.\n"
    return "\n".join(lines) + "\n" + summary


def uses_lever(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial used a lever beyond the worker's keys (guidance truncation, a cache)."""
    return trial.params.get("guidance_stop", 1.0) < 1.0 or trial.params.get("cache", "none") != "none"


def levers_section(study: optuna.Study) -> str:
    """Did guidance truncation or a cache find a faster feasible preset? If not, why, in numbers."""
    trials = study.get_trials(deepcopy=False)
    if not any(key in t.params for t in trials for key in ("guidance_stop", "cache")):
        return ""
    groups = {"with a lever": [t for t in trials if uses_lever(t)], "without": [t for t in trials if not uses_lever(t)]}
    baseline = next((t for t in trials if t.user_attrs.get("preset_name") == "baseline" and t.value is not None), None)
    lines = ["## Levers beyond the worker's keys (guidance truncation, caches)\n",
             "| trials | measured | feasible | best feasible s/video | speed-up | median PSNR dB | median shortfall of missed floors |",
             "|---|---|---|---|---|---|---|"]
    best: dict[str, optuna.trial.FrozenTrial | None] = {}
    for name, group in groups.items():
        done = [t for t in group if t.state == optuna.trial.TrialState.COMPLETE]
        good = [t for t in done if feasible(t)]
        best[name] = min(good, key=lambda t: t.value) if good else None
        psnr = [t.user_attrs["mean_psnr_db"] for t in done if "mean_psnr_db" in t.user_attrs]
        short = [v for t in done for k, v in (t.constraints or {}).items() if v > 0]
        speed = f"{baseline.value / best[name].value:.2f}x" if baseline and best[name] else ""
        lines.append(f"| {name} | {len(done)} | {len(good)} | {_cell(best[name].value if best[name] else None, '.3f')} | {speed} | "
                     f"{_cell(float(np.median(psnr)) if psnr else None, '.1f')} | {_cell(float(np.median(short)) if short else None, '.2f')} |")
    lever, plain = best["with a lever"], best["without"]
    if lever is not None and (plain is None or lever.value < plain.value):
        lines.append(f"\nThe levers found the fastest feasible preset: trial #{lever.number}, {lever.value:.3f} s/video "
                     f"({_cell(plain.value if plain else None, '.3f') or 'no'} s without them).\n")
    elif not groups["with a lever"]:
        lines.append("\nNo trial used a lever yet.\n")
    else:
        lever_done = [t for t in groups["with a lever"] if t.state == optuna.trial.TrialState.COMPLETE]
        missed = {}
        for t in lever_done:
            for k, v in (t.constraints or {}).items():
                if v > 0:
                    missed.setdefault(k.removeprefix("floor_"), []).append(v)
        why = "; ".join(f"{k} missed in {len(v)} of {len(lever_done)} by a median {float(np.median(v)):.2f}" for k, v in missed.items())
        lines.append(f"\nThe levers did not find a faster feasible preset: {why or 'their feasible trials were slower'}. "
                     "Truncating guidance or reusing cached features moves the video away from the baseline's.\n")
    return "\n".join(lines) + "\n"


def write_report(cfg: DictConfig) -> Path:
    """Write ``experiments/<study>/report.md`` and its PNGs, and log them to the study's run.

    Args:
        cfg: composed config (``study``, ``paths``, ``search.storage``).

    Returns:
        The report's path.

    Raises:
        ValueError: unknown study.
    """
    study = load_study(cfg)
    folder = Path(cfg.paths.root_dir) / "experiments" / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [plot_pareto(study, folder / "pareto.png"), plot_history(study, folder / "history.png")]
    importance = plot_importances(study, folder / "importances.png")
    counts = {s: sum(status(t) == s for t in study.trials) for s in ("feasible", "infeasible", "pruned", "failed")}
    floors = study.user_attrs.get("floors", [])
    machine = study.user_attrs.get("machine", "")
    text = [
        f"# Study `{study.study_name}`\n",
        f"Storage: `{storage_url(cfg)}` (open it live: `optuna-dashboard {storage_url(cfg)}`). {machine}\n",
        f"Objective: median generation wall time per video over the prompt set. Floors: {'; '.join(floors) or 'none'}.\n",
        f"Trials: {len(study.trials)} — " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".\n",
        "## Baseline, the proposal's presets and the best feasible trial\n",
        comparison(study),
        "## Time against quality\n",
        "![Pareto front](pareto.png)\n",
        "## Optimization history\n",
        "![history](history.png)\n",
        "## Parameter importances (for time)\n",
        "![importances](importances.png)\n" if importance else "Too few complete trials with varied parameters to estimate importances.\n",
        levers_section(study),
        "## All trials\n",
        trials_table(study),
        "",
    ]
    report = folder / "report.md"
    report.write_text("\n".join(text))
    _log_to_study_run(cfg, study.study_name, [report, *pictures, *([importance] if importance else [])])
    return report


def _log_to_study_run(cfg: DictConfig, study_name: str, files: list[Path]) -> None:
    experiment_id = tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    client = mlflow.MlflowClient()
    run_id = study_run_id(client, experiment_id, study_name)
    if run_id is None:
        return
    for file in files:
        client.log_artifact(run_id, str(file), artifact_path="report")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        print(f"wrote {write_report(cfg)}")
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
