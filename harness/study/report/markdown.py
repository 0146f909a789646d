"""A study's report: ``report.md`` in the study's folder (``study_dir``) with its tables and pictures.

It holds a table of every trial, the Pareto front of time against quality, parameter
importances and the optimization history (PNGs), and the baseline against the best
feasible trial and the proposal's presets; all are logged to the study's MLflow run.
``python -m harness.dashboard`` opens the same storage in optuna-dashboard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
from omegaconf import DictConfig

from harness.measure.pairing import NOT_PAIRED
from harness.measure.results import recorded
from harness.pipeline.load import resolve_model
from harness.secrets import mask, public_url
from harness.stores import storage_url
from harness.study.engine.floors import best_feasible, failure, fastest_feasible, feasible, shortfalls, status
from harness.study.engine.pruning import summary as pruning_summary
from harness.study.engine.space import LEVERS, SWITCHES
from harness.study.export.drift import latest_pairing, noise_lines, pairs_text, speedup_cell
from harness.study.report.comparison_page import write_page
from harness.study.report.folder import study_folder
from harness.study.report.plots import plot_history, plot_importances, plot_pareto
from harness.study.workers.storage import load_study, study_run_id, use_study_experiment


def _label(trial: optuna.trial.FrozenTrial) -> str:
    return trial.user_attrs.get("preset_name", f"trial-{trial.number}")


def _note(trial: optuna.trial.FrozenTrial) -> str:
    if trial.state == optuna.trial.TrialState.PRUNED:
        return trial.user_attrs.get("prune_reason", "")
    if trial.state == optuna.trial.TrialState.FAIL:
        return failure(trial)
    return ", ".join(f"{k} short by {v:.3g}" for k, v in shortfalls(trial).items())


def _cell(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def time_cell(trial: optuna.trial.FrozenTrial) -> str:
    """Seconds per video with its spread, and NOISY when the spread exceeded the bound."""
    spread = recorded(trial).spread
    cell = _cell(trial.value, ".3f") + (f" ±{spread:.0%}" if spread is not None and trial.value is not None else "")
    return cell + (" NOISY" if recorded(trial).noisy else "")


def output_cell(trial: optuna.trial.FrozenTrial) -> str:
    """The worker's output (WxH, frames, seconds), starred when it differs from the baseline's."""
    return trial.user_attrs.get("output_spec", "") + (" *" if trial.user_attrs.get("spec_change") else "")


SPEC_NOTE = (
    "\n\\* output differs from the baseline's (size or length): its PSNR/SSIM are against the baseline's own "
    "video, the candidate resampled to it (bicubic in space, by time position in time; a shorter video holds "
    "its last frame), so lost resolution and duration count as lost fidelity.\n"
)


def trials_table(study: optuna.Study) -> str:
    """Markdown table of every trial."""
    head = (
        "| # | preset | state | output | steps | solver | shift | guide | s/video | s per video-s | CLIP | PSNR dB "
        "| SSIM | note |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for t in study.get_trials(deepcopy=False):
        p, r = t.params, recorded(t)
        lines.append(
            f"| {t.number} | {_label(t)} | {status(t)} | {output_cell(t)} | {p.get('sample_steps', '')} | "
            f"{p.get('sample_solver', '')} | {_cell(p.get('sample_shift'), '.2f')} | "
            f"{_cell(p.get('sample_guide_scale'), '.2f')} | {time_cell(t)} | "
            f"{_cell(r.per_video_second_s, '.3f')} | {_cell(r.mean('clip_score'), '.1f')} | "
            f"{_cell(r.mean('psnr_db'), '.1f')} | {_cell(r.mean('ssim'), '.3f')} | {_note(t)} |"
        )
    return "\n".join(lines)


UNPAIRED_NOTE = (
    f"\n{NOT_PAIRED}: measured alone. A study's trials are measured one at a time, minutes apart, so dividing "
    "two of their times divides two moments of a shared machine; a speed-up is given only where the baseline "
    "was generated beside the preset (`harness.search` pairs its best trial at the end of each session; "
    "`harness.select` pairs its candidates on held-out seeds).\n"
)


def comparison(study: optuna.Study) -> str:
    """Baseline, the proposal's presets and the best feasible trial, side by side."""
    trials = study.get_trials(deepcopy=False)
    named = {t.user_attrs["preset_name"]: t for t in trials if "preset_name" in t.user_attrs and t.value is not None}
    baseline = named.get("baseline")
    rows = [(name, t) for name, t in named.items()]
    best = best_feasible(study)
    if best is not None:
        rows.append((f"best feasible (#{best.number})", best))
    lines = [
        "| preset | state | output | s/video | speed-up | s per video-s | CLIP (change) | PSNR dB | SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in rows:
        speed = speedup_cell(study, t)
        clip = recorded(t).mean("clip_score")
        base_clip = recorded(baseline).mean("clip_score") if baseline else None
        change = f" ({(clip - base_clip) / base_clip:+.1%})" if clip is not None and base_clip else ""
        lines.append(
            f"| {name} | {status(t)} | {output_cell(t)} | {time_cell(t)} | {speed} | "
            f"{_cell(recorded(t).per_video_second_s, '.3f')} | {_cell(clip, '.1f')}{change} | "
            f"{_cell(recorded(t).mean('psnr_db'), '.1f')} | {_cell(recorded(t).mean('ssim'), '.3f')} |"
        )
    summary = ""
    if baseline and best and best is not baseline:
        paired = latest_pairing(study, best)
        speed = f"speed-up {NOT_PAIRED} (not paired yet)"
        if paired:
            speed = f"paired with the baseline: **{paired.cell()}** ({pairs_text(study, best)})"
        summary = (
            f"\nBest feasible trial #{best.number} takes **{best.value:.3f} s** per video measured alone (the "
            f"baseline trial {baseline.value:.3f} s); {speed}; PSNR "
            f"{recorded(best).mean('psnr_db') or float('nan'):.1f} dB and SSIM "
            f"{recorded(best).mean('ssim') or float('nan'):.3f} against the baseline's video.\n"
        )
    elif baseline:
        summary = "\nNo feasible trial is faster than the baseline yet.\n"
    spec_note = SPEC_NOTE if any(t.user_attrs.get("spec_change") for _, t in rows) else ""
    unpaired = UNPAIRED_NOTE if any(speedup_cell(study, t) == NOT_PAIRED for _, t in rows) else ""
    return "\n".join(lines) + "\n" + spec_note + unpaired + summary


def uses_lever(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial switched on a lever beyond the worker's keys (guidance truncation, a cache, batched
    guidance, other weights, another kernel or compilation)."""
    return any(trial.params.get(key, LEVERS[key][1]) != LEVERS[key][1] for key in SWITCHES)


def _lever_row(study: optuna.Study, name: str, group: list) -> tuple[str, Any]:
    """One row of the levers table, and the group's best feasible trial."""
    done = [t for t in group if t.state == optuna.trial.TrialState.COMPLETE]
    good = [t for t in done if feasible(t)]
    best = fastest_feasible(done)
    psnr = [recorded(t).mean("psnr_db") for t in done if recorded(t).mean("psnr_db") is not None]
    short = [v for t in done for v in shortfalls(t).values()]
    speed = speedup_cell(study, best) if best else ""
    row = (
        f"| {name} | {len(done)} | {len(good)} | {_cell(best.value if best else None, '.3f')} | {speed} | "
        f"{_cell(float(np.median(psnr)) if psnr else None, '.1f')} | "
        f"{_cell(float(np.median(short)) if short else None, '.2f')} |"
    )
    return row, best


def _lever_verdict(lever: Any, plain: Any, lever_trials: list) -> str:
    """Whether the levers found the fastest feasible preset, and if not, which floors they missed."""
    if lever is not None and (plain is None or lever.value < plain.value):
        return (
            f"\nThe levers found the fastest feasible preset: trial #{lever.number}, {lever.value:.3f} s/video "
            f"({_cell(plain.value if plain else None, '.3f') or 'no'} s without them).\n"
        )
    if not lever_trials:
        return "\nNo trial used a lever yet.\n"
    done = [t for t in lever_trials if t.state == optuna.trial.TrialState.COMPLETE]
    missed: dict[str, list[float]] = {}
    for t in done:
        for k, v in shortfalls(t).items():
            missed.setdefault(k, []).append(v)
    why = "; ".join(
        f"{k} missed in {len(v)} of {len(done)} by a median {float(np.median(v)):.2f}" for k, v in missed.items()
    )
    return (
        f"\nThe levers did not find a faster feasible preset: {why or 'their feasible trials were slower'}. "
        "Truncating guidance or reusing cached features moves the video away from the baseline's.\n"
    )


def levers_section(study: optuna.Study) -> str:
    """Did guidance truncation or a cache find a faster feasible preset? If not, why, in numbers."""
    trials = study.get_trials(deepcopy=False)
    if not any(key in t.params for t in trials for key in SWITCHES):
        return ""
    groups = {"with a lever": [t for t in trials if uses_lever(t)], "without": [t for t in trials if not uses_lever(t)]}
    lines = [
        "## Levers beyond the worker's keys (guidance truncation, caches, batched guidance, precision)\n",
        "| trials | measured | feasible | best feasible s/video | speed-up | median PSNR dB "
        "| median shortfall of missed floors |",
        "|---|---|---|---|---|---|---|",
    ]
    best = {}
    for name, group in groups.items():
        row, best[name] = _lever_row(study, name, group)
        lines.append(row)
    lines.append(_lever_verdict(best["with a lever"], best["without"], groups["with a lever"]))
    return "\n".join(lines) + "\n"


def _header(cfg: DictConfig, study: optuna.Study) -> list[str]:
    """The report's first lines: where the study lives and how to make it again, machine, objective, floors."""
    counts = {s: sum(status(t) == s for t in study.trials) for s in ("feasible", "infeasible", "pruned", "failed")}
    floors = study.user_attrs.get("floors", [])
    url = public_url(storage_url(cfg), cfg.paths.root_dir)
    command = study.user_attrs.get("command", f"python -m harness.search search.study_name={study.study_name}")
    noise = study.user_attrs.get("noise_floor")
    scale = f"; PSNR beside its {noise} (measured by harness.audit)" if noise else ""
    return [
        f"# Study `{study.study_name}`\n",
        f"Storage: `{url}`, written by the study's own machine and not committed (open it live: "
        f"`python -m harness.dashboard`, optuna-dashboard with the best feasible trial badged). "
        f"{study.user_attrs.get('machine', '')}\n",
        f"Make it again from a clone: `{command}`, then `python -m harness.report study={study.study_name}` "
        f"(writes `outputs/studies/{study.study_name}/`; timings are this machine's).\n",
        f"Worker: {study.user_attrs.get('measured_with', {}).get('worker', 'not recorded')}.\n",
        "Objective: median generation wall time per video over the prompt set. "
        f"Floors: {'; '.join(floors) or 'none'}{scale}.\n",
        f"Trials: {len(study.trials)} — " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".\n",
        *([f"Pruning: {line}.\n"] if (line := pruning_summary(study.trials)) else []),
    ]


def write_report(cfg: DictConfig) -> Path:
    """Write ``report.md`` and its PNGs into the study's folder (``study_dir``), and log them to the study's run.

    Args:
        cfg: composed config (``study``, ``paths``, ``search.storage``).

    Returns:
        The report's path.

    Raises:
        ValueError: unknown study.
    """
    cfg = resolve_model(cfg)  # once: the page and the MLflow store read the same model
    study = load_study(cfg)
    folder = study_folder(cfg, study.study_name, len(study.trials))
    pictures = [plot_pareto(study, folder / "pareto.png"), plot_history(study, folder / "history.png")]
    importance = plot_importances(study, folder / "importances.png")
    text = [
        *_header(cfg, study),
        "## Timing noise\n",
        "\n".join(f"- {line}" for line in noise_lines(study, float(cfg.timing.noise_bound)))
        or "No trial's timing spread past timing.noise_bound; no drift check recorded.",
        "",
        "## Baseline, the proposal's presets and the best feasible trial\n",
        comparison(study),
        "## Time against quality\n",
        "![Pareto front](pareto.png)\n",
        "## Optimization history\n",
        "![history](history.png)\n",
        "## Parameter importances (for time)\n",
        "![importances](importances.png)\n"
        if importance
        else "Too few complete trials with varied parameters to estimate importances.\n",
        levers_section(study),
        "## All trials\n",
        trials_table(study),
        SPEC_NOTE if any(t.user_attrs.get("spec_change") for t in study.trials) else "",
        "",
    ]
    report = folder / "report.md"
    report.write_text(mask("\n".join(text)))  # a failure's reason may quote a URL
    experiment_id = use_study_experiment(cfg, study)
    page = write_page(study, folder, experiment_id)
    _log_to_study_run(study.study_name, experiment_id, folder,
                      [report, *pictures, *([importance] if importance else []), *page])  # fmt: skip
    return report


def _log_to_study_run(study_name: str, experiment_id: str, folder: Path, files: list[Path]) -> None:
    """Log the report's files under ``report/`` of the study's run, keeping their folders (the page's videos)."""
    client = mlflow.MlflowClient()
    run_id = study_run_id(client, experiment_id, study_name)
    if run_id is None:
        return
    for file in files:
        parent = file.parent.relative_to(folder).as_posix()
        client.log_artifact(run_id, str(file), artifact_path="report" if parent == "." else f"report/{parent}")
