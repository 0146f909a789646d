"""Run (or continue) a study: the fastest preset that keeps every quality floor.

Each trial composes its preset with Hydra's Compose API from the trial's choices, is
measured exactly as ``harness.run`` measures (same figures), and is logged to MLflow as a
child of the study's run, with its videos beneath it. The baseline and the proposal's
presets are enqueued first, so floors and speed-ups are relative to the baseline on the
same machine. The pipeline is loaded once for the whole study.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf

from harness.measure import tracking
from harness.measure.plan import plan
from harness.measure.session import open_session
from harness.pipeline.device import device_label, dtype_name
from harness.pipeline.generate import generate
from harness.preset import validate_preset
from harness.study import space
from harness.study.compose import compose_trial
from harness.study.drift import check_drift, noise_lines
from harness.study.fingerprint import check_comparable, measured_with
from harness.study.floors import Floor, best_feasible, feasible, floors, shortfalls
from harness.study.objective import Objective
from harness.study.storage import FINISHED, close_orphans, open_study, public_url, storage_url, study_run_id

log = logging.getLogger(__name__)


def estimate(base_overrides: list[str]) -> tuple[float, float, str]:
    """Time a 1-step and a 3-step generation at the baseline's shape (also a warm-up).

    Returns:
        (seconds per step, fixed seconds per video) at the baseline's shape, and a line
        naming the model and machine.
    """
    base = compose_trial(base_overrides)
    plan_ = plan(base)
    session = open_session(base, plan_)
    request = replace(plan_.request(plan_.prompts[0], 0), steps=1)
    one = generate(session.loaded, request, session.solvers).wall_s
    three = generate(session.loaded, replace(request, steps=3), session.solvers).wall_s
    per_step = max((three - one) / 2, 1e-6)
    loaded = session.loaded
    machine = f"Measured with model `{loaded.name}` ({dtype_name(loaded.dtype)}) on {device_label(loaded.device)}."
    return per_step, max(one - per_step, 0.0), machine


def enqueue_presets(study: optuna.Study, cfg: DictConfig, base_overrides: list[str], dists: dict, room: int) -> None:
    """Enqueue the baseline and the proposal's presets that the study still lacks.

    A preset counts as measured once it has a trial that is waiting, running, complete,
    pruned, or failed for a reason; one whose process was killed mid-trial is enqueued
    again, so the report always shows it. At most ``room`` presets are enqueued.
    """
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    had_a_chance = {
        t.user_attrs.get("preset_name")
        for t in study.get_trials(deepcopy=False)
        if t.state != optuna.trial.TrialState.FAIL or "fail_reason" in t.user_attrs
    }
    missing = [name for name in (cfg.search.enqueue or []) if name not in had_a_chance]
    for name in missing[: max(room, 0)]:
        preset_cfg = compose_trial([*base_overrides, f"+experiment={name}"])
        preset = validate_preset(OmegaConf.to_container(preset_cfg.preset, resolve=True), solvers)
        study.enqueue_trial(space.params_of(preset, dists, name), user_attrs={"preset_name": name})


def print_outcome(study: optuna.Study, noise_bound: float) -> None:
    """What the study did: counts by state, why trials were pruned or failed, the noise, the best."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    print(
        f"study {study.study_name}: {len(trials)} trials -- "
        + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n)
    )
    for trial in trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            print(f"  pruned #{trial.number}: {trial.user_attrs.get('prune_reason', '')}")
        elif trial.state == optuna.trial.TrialState.FAIL:
            print(f"  failed #{trial.number}: {trial.user_attrs.get('fail_reason', 'process ended mid-trial')}")
        elif trial.state == optuna.trial.TrialState.COMPLETE and not feasible(trial):
            missed = ", ".join(f"{key} by {value:.3g}" for key, value in shortfalls(trial).items())
            print(f"  infeasible #{trial.number} ({trial.user_attrs.get('preset_name', 'searched')}): missed {missed}")
    for line in noise_lines(study, noise_bound):
        print(f"  {line}")
    best = best_feasible(study)
    baseline = next(
        (
            t
            for t in trials
            if t.user_attrs.get("preset_name") == "baseline" and t.state == optuna.trial.TrialState.COMPLETE
        ),
        None,
    )
    if best is None:
        print("  no feasible trial yet")
        return
    speed = f", {baseline.value / best.value:.2f}x faster than the baseline" if baseline else ""
    print(
        f"  best feasible #{best.number} ({best.user_attrs.get('preset_name', 'searched')}): "
        f"{best.value:.3f} s/video{speed}"
    )
    print(f"  params: {best.params}")
    name = study.study_name
    print(f"  next: python -m harness.report study={name} && python -m harness.select study={name}")


def _check_settings(cfg: DictConfig) -> tuple[dict, list[Floor], int]:
    """The space, floors and trial count, checked before anything loads."""
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    dists = space.distributions(OmegaConf.to_container(cfg.search.space, resolve=True), solvers)
    floor_list = floors(cfg)
    if any(f.ratio is not None for f in floor_list) and "baseline" not in list(cfg.search.enqueue or []):
        raise ValueError("search.floors with a ratio need 'baseline' in search.enqueue (it is measured first)")
    n_trials = cfg.search.n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"search.n_trials={n_trials!r} must be an integer >= 1")
    return dists, floor_list, n_trials


def _announce(cfg: DictConfig, base_overrides: list[str], dists: dict, remaining: int, done: int) -> str:
    """Print what the study will cost before it starts; returns the machine line."""
    per_step, fixed, machine = estimate(base_overrides)
    steps = dists.get("sample_steps")
    mean_steps = (
        (steps.low + steps.high) / 2
        if isinstance(steps, optuna.distributions.IntDistribution)
        else cfg.preset.sample_steps
    )
    per_video = fixed + per_step * mean_steps
    videos = remaining * len(cfg.prompts.texts) * len(cfg.search.seeds)
    print(
        f"study {cfg.search.study_name}: {remaining} trial(s) to run ({done} done) x {len(cfg.prompts.texts)} "
        f"prompt(s) x {len(cfg.search.seeds)} seed(s) = {videos} videos, plus a reference video per new "
        f"size/frames/prompt/seed; about {videos * per_video / 60:.1f} min at ~{per_video:.2f} s/video "
        f"({per_step:.3f} s/step at the baseline's shape)"
    )
    return machine


def _optimize(
    cfg: DictConfig, base_overrides: list[str], study: optuna.Study, remaining: int, client, experiment_id
) -> None:
    """Run ``remaining`` trials under the study's MLflow run (created once, resumed after)."""
    study_tags = {"kind": "study", "study": study.study_name, "optuna_storage": public_url(storage_url(cfg))}
    run_id = study_run_id(client, experiment_id, study.study_name)
    started = time.perf_counter()
    mlflow.start_run(run_id=run_id, run_name=f"study {study.study_name}", tags=study_tags)
    try:
        if run_id is None:
            tracking.log_config(cfg, "study_config.yaml")
        objective = Objective(cfg, base_overrides, study)
        study.optimize(objective, n_trials=remaining, timeout=cfg.search.timeout_s, catch=(Exception,))
        if cfg.search.drift_check:
            check_drift(objective, study)
        best = best_feasible(study)
        if best is not None:
            mlflow.log_metric("best_feasible_time_s", best.value)
            mlflow.set_tag("best_trial", str(best.number))
        mlflow.log_metric("trials", len(study.get_trials(deepcopy=False)))
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    finally:
        optuna.storages.fail_stale_trials(study)
        close_orphans(client, experiment_id, study)
    mlflow.end_run("FINISHED")
    log.info("study ran %.0f s", time.perf_counter() - started)


def search_presets(cfg: DictConfig, base_overrides: list[str]) -> optuna.Study:
    """Run (or continue) the study until it holds ``search.n_trials`` trials.

    Args:
        cfg: the composed config (``search`` node).
        base_overrides: the overrides the config was composed with; each trial adds its own.

    Returns:
        The study.

    Raises:
        ValueError: a bad search space, floor or preset (before any trial runs).
    """
    dists, floor_list, n_trials = _check_settings(cfg)
    identity = measured_with(cfg, base_overrides)  # also checks the base preset and prompts
    study = open_study(cfg)
    check_comparable(study, identity)
    experiment_id = tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    client = mlflow.MlflowClient()
    if closed := close_orphans(client, experiment_id, study):
        log.info("closed %d MLflow run(s) a killed process left RUNNING", closed)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = n_trials - done
    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    enqueue_presets(study, cfg, base_overrides, dists, remaining - waiting)
    study.set_user_attr("floors", [f.describe() for f in floor_list])
    if remaining <= 0:
        print(f"study {study.study_name} already has {done} trials (search.n_trials={n_trials}); raise it to continue")
        print_outcome(study, float(cfg.timing.noise_bound))
        return study
    study.set_user_attr("machine", _announce(cfg, base_overrides, dists, remaining, done))
    storage = public_url(storage_url(cfg), cfg.paths.root_dir)
    print(f"floors: {'; '.join(f.describe() for f in floor_list)}; storage {storage}")
    _optimize(cfg, base_overrides, study, remaining, client, experiment_id)
    print_outcome(study, float(cfg.timing.noise_bound))
    return study
