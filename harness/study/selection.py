"""Pick the production preset from a study, re-measure it on held-out seeds, export it.

The fastest feasible trial wins, unless a slower feasible trial is within timing noise
of it (``search.select.noise``): then they are equally fast and the one most faithful
to the baseline's video (PSNR) wins. The winner is re-measured on seeds the search never
saw, its MLflow runs are tagged ``preset=production``, and it is written as
``experiments/<study>/video_fast.yaml`` and ``.json`` in the worker's key format, with
``expected_time`` from the re-measured median.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import optuna
from omegaconf import DictConfig

from harness.measure import tracking
from harness.measure.plan import Plan, plan
from harness.measure.session import Session, measure_in_run, open_session
from harness.pipeline.schedulers import is_official
from harness.preset import write_preset_files
from harness.study import space
from harness.study.compose import compose_trial
from harness.study.floors import FLOOR_METRICS, feasible, floors
from harness.study.storage import load_study


def choose(study: optuna.Study, noise: float) -> optuna.trial.FrozenTrial:
    """The production trial: fastest feasible; ties within ``noise`` go to higher PSNR.

    Raises:
        ValueError: no feasible trial.
    """
    candidates = sorted((t for t in study.get_trials(deepcopy=False) if feasible(t)), key=lambda t: t.value)
    if not candidates:
        raise ValueError(
            f"study {study.study_name!r} has no feasible trial yet; run more trials or relax search.floors"
        )
    fastest = candidates[0].value
    tied = [t for t in candidates if t.value <= fastest * (1 + noise)]
    return max(tied, key=lambda t: (t.user_attrs.get("mean_psnr_db", 0.0), -t.value))


def _remeasure(
    cfg: DictConfig, base_overrides: list[str], study: optuna.Study, winner: optuna.trial.FrozenTrial
) -> tuple[Plan, Session, dict[str, Any]]:
    """Measure the winner again on the held-out seeds, as a run tagged ``preset=production``."""
    seeds = list(cfg.search.select.seeds)
    used = set(cfg.search.seeds)
    if used & set(seeds):
        raise ValueError(f"search.select.seeds={seeds} overlap the search's seeds {sorted(used)}; pick unseen seeds")
    overrides = [o for o in base_overrides if not o.startswith(("study=", "search."))]
    trial_cfg = compose_trial(
        [
            *overrides,
            *space.overrides(winner.params),
            f"name=production-{study.study_name}",
            f"prompts.seeds={seeds}",
            f"timing.repeats={int(cfg.search.select.repeats)}",
        ]
    )
    plan_ = plan(trial_cfg)
    session = open_session(trial_cfg, plan_)
    experiment_id = tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    client = mlflow.MlflowClient()
    for old in client.search_runs([experiment_id], f"tags.preset = 'production' and tags.study = '{study.study_name}'"):
        client.delete_tag(old.info.run_id, "preset")  # one production preset per study
    tags = {"kind": "production", "study": study.study_name, "trial_number": str(winner.number), "preset": "production"}
    with tracking.run(f"production {study.study_name} (#{winner.number})", tags=tags):
        summary = measure_in_run(trial_cfg, plan_, session)
    if "mlflow_run_id" in winner.user_attrs:
        client.set_tag(winner.user_attrs["mlflow_run_id"], "preset", "production")
    return plan_, session, summary


def _floor_lines(cfg: DictConfig, study: optuna.Study, summary: dict[str, Any]) -> list[str]:
    baseline = {m: study.user_attrs.get(f"baseline_{m}") for m in FLOOR_METRICS}
    lines = []
    for floor in floors(cfg):
        if floor.ratio is not None and baseline.get(floor.metric) is None:
            continue
        value = summary.get(f"mean_{floor.metric}", float("nan"))
        below = (
            "" if summary.get(f"mean_{floor.metric}", -math.inf) >= floor.threshold(baseline) else " (BELOW the floor)"
        )
        lines.append(f"{floor.describe()}: {value:.3g} on held-out seeds{below}")
    return lines


def _warnings(plan_: Plan, session: Session) -> list[str]:
    """What the worker must know: a solver off the official path, levers that are not worker keys."""
    preset, speed, notes = plan_.preset, plan_.speed, []
    if not is_official(preset.sample_solver, session.solvers):
        notes.append(
            f"WARNING: sample_solver={preset.sample_solver!r} exists only through diffusers; the official "
            f"Wan code path (generate.py) offers only unipc and dpm++."
        )
    if speed.guidance_stop < 1.0:
        notes.append(
            f"WARNING: measured with guidance truncation (speed.guidance_stop={speed.guidance_stop:g}: "
            f"guidance on the first {speed.guidance_stop:.0%} of the steps), which is not a worker key; "
            f"the worker must implement it to reach expected_time."
        )
    if speed.cache != "none":
        notes.append(
            f"WARNING: measured with the diffusers cache speed.cache={speed.cache} (threshold "
            f"{speed.cache_threshold:g}), which is not a worker key; the worker must enable it."
        )
    return notes


def select_preset(cfg: DictConfig, base_overrides: list[str]) -> tuple[Path, Path]:
    """Choose, re-measure on held-out seeds, tag and export the production preset.

    Args:
        cfg: composed config (``study``, ``search.select``).
        base_overrides: overrides the config was composed with (model, prompts, paths...).

    Returns:
        Paths of the YAML and JSON exports.

    Raises:
        ValueError: unknown study or no feasible trial.
    """
    study = load_study(cfg)
    winner = choose(study, float(cfg.search.select.noise))
    plan_, session, summary = _remeasure(cfg, base_overrides, study, winner)
    measured = summary["median_wall_time_s"]
    preset = replace(plan_.preset, expected_time=math.ceil(measured * 10) / 10)
    notes = [
        f"Production preset from study {study.study_name!r}, trial #{winner.number} "
        f"({winner.user_attrs.get('preset_name', 'searched')}); chosen by harness.select.",
        f"expected_time = median wall time re-measured on held-out seeds {plan_.seeds} ({len(plan_.prompts)} "
        f"prompt(s), {plan_.repeats} repeat(s)) with model {session.loaded.name!r} on "
        f"{session.loaded.device.type}: {measured:.3f} s; search time was {winner.value:.3f} s.",
        *_floor_lines(cfg, study, summary),
        *_warnings(plan_, session),
    ]
    folder = Path(cfg.paths.root_dir) / "experiments" / study.study_name
    return write_preset_files(preset, folder, "video_fast", notes)
