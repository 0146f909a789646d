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

import mlflow
import optuna
from omegaconf import DictConfig

from harness.cli import signals_deferred
from harness.measure import tracking
from harness.measure.plan import plan
from harness.measure.session import open_session
from harness.pipeline.device import device_label, dtype_name
from harness.pipeline.generate import generate
from harness.secrets import public_url
from harness.stores import check_storage
from harness.study.compose import compose_trial
from harness.study.drift import check_drift, noise_lines
from harness.study.fingerprint import check_comparable, measured_with
from harness.study.floors import best_feasible, failure, feasible, shortfalls
from harness.study.lock import StudyLock
from harness.study.pruning import summary as pruning_summary
from harness.study.settings import check_study_settings
from harness.study.storage import (
    close_orphans,
    open_study,
    rdb_storage,
    storage_url,
    study_run_id,
    use_study_experiment,
)
from harness.study.workers import Worker, config_errors, counts_toward

log = logging.getLogger(__name__)


def estimate(base_overrides: list[str]) -> tuple[float, float, str]:
    """Time a 1-step and a 3-step generation at the baseline's shape, after a 1-step warm-up.

    Without the warm-up the first call carries one-off costs (allocations, kernel choice) and
    the 1-step time can exceed the 3-step one, leaving no per-step time at all.

    Returns:
        (seconds per step, fixed seconds per video) at the baseline's shape, and a line
        naming the model and machine.
    """
    base = compose_trial(base_overrides)
    plan_ = plan(base)
    session = open_session(base, plan_)
    request = replace(plan_.request(plan_.prompts[0], 0), steps=1)
    generate(session.loaded, request, session.solvers)  # warm-up, not counted
    one = generate(session.loaded, request, session.solvers).wall_s
    three = generate(session.loaded, replace(request, steps=3), session.solvers).wall_s
    per_step = max((three - one) / 2, 1e-6)
    loaded = session.loaded
    machine = f"Measured with model `{loaded.name}` ({dtype_name(loaded.dtype)}) on {device_label(loaded.device)}."
    return per_step, max(one - per_step, 0.0), machine


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
            print(f"  failed #{trial.number}: {failure(trial)}")
        elif trial.state == optuna.trial.TrialState.COMPLETE and not feasible(trial):
            missed = ", ".join(f"{key} by {value:.3g}" for key, value in shortfalls(trial).items())
            print(f"  infeasible #{trial.number} ({trial.user_attrs.get('preset_name', 'searched')}): missed {missed}")
    for line in [pruning_summary(trials), *noise_lines(study, noise_bound)]:
        if line:
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
    if best is baseline or best.user_attrs.get("preset_name") == "baseline":
        print("  no preset faster than the baseline kept every floor yet; run more trials or relax search.floors")
        return
    speed = f", {baseline.value / best.value:.2f}x faster than the baseline" if baseline else ""
    print(
        f"  best feasible #{best.number} ({best.user_attrs.get('preset_name', 'searched')}): "
        f"{best.value:.3f} s/video{speed}"
    )
    print(f"  params: {best.params}")
    name = study.study_name
    print(f"  next: python -m harness.report study={name} && python -m harness.select study={name}")


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


def _study_run(client: mlflow.MlflowClient, experiment_id: str, cfg: DictConfig, study: optuna.Study) -> str:
    """The study's MLflow run, created once (call under the study's lock)."""
    run_id = study_run_id(client, experiment_id, study.study_name)
    if run_id is None:
        tags = {"kind": "study", "study": study.study_name, "optuna_storage": public_url(storage_url(cfg))}
        run_id = client.create_run(experiment_id, run_name=f"study {study.study_name}", tags=tags).info.run_id
        client.log_text(run_id, tracking.public_config(cfg), "study_config.yaml")
    return run_id


def _work(cfg: DictConfig, worker: Worker, run_id: str, client, experiment_id) -> None:
    """Run this worker's trials (and its drift check) inside the study's MLflow run."""
    started = time.perf_counter()
    deadline = None if cfg.search.timeout_s is None else time.time() + float(cfg.search.timeout_s)
    with signals_deferred():  # the study's run resumed is a run guarded below
        mlflow.start_run(run_id=run_id)
    try:
        if worker.run(deadline) and cfg.search.drift_check:
            check_drift(worker.objective, worker.study)
        best = best_feasible(worker.study)
        if best is not None:
            mlflow.log_metric("best_feasible_time_s", best.value)
            mlflow.set_tag("best_trial", str(best.number))
        mlflow.log_metric("trials", len(worker.study.get_trials(deepcopy=False)))
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except ValueError:
        mlflow.end_run("FAILED")
        raise
    finally:
        close_orphans(client, experiment_id, worker.study)
    mlflow.end_run("FINISHED")
    log.info("this worker ran %d trial(s) in %.0f s", worker.ran, time.perf_counter() - started)


def search_presets(cfg: DictConfig, base_overrides: list[str]) -> optuna.Study:
    """Run (or continue) the study until it holds ``search.n_trials`` counted trials, beside any other workers.

    Args:
        cfg: the composed config (``search`` node).
        base_overrides: the overrides the config was composed with; each trial adds its own.

    Returns:
        The study.

    Raises:
        ValueError: bad settings, stores or presets (before any trial runs), another protocol
            than the study's, or trials that keep failing for one configuration reason.
    """
    dists, floor_list, n_trials = check_study_settings(cfg)
    check_storage(cfg, create=True)
    # a bad MLflow store fails here, before the model loads, and a fresh one's schema is made under its lock;
    # the study's own experiment is selected below, once the study is open
    tracking.use_store(cfg)
    storage = rdb_storage(cfg)
    identity = measured_with(cfg, base_overrides)  # also checks the base preset and prompts
    lock = StudyLock(storage_url(cfg), str(cfg.search.study_name))
    client = mlflow.MlflowClient()
    with lock:
        study = open_study(cfg, storage)
        study.set_metric_names(["seconds per video"])  # the objective's name in optuna-dashboard
        uncounted = config_errors(study)
        check_comparable(study, identity, any(counts_toward(t, uncounted) for t in study.get_trials(deepcopy=False)))
        study.set_user_attr("floors", [f.describe() for f in floor_list])
        experiment_id = use_study_experiment(cfg, study)  # a resumed study keeps its experiment
        run_id = _study_run(client, experiment_id, cfg, study)
    if closed := close_orphans(client, experiment_id, study):
        log.info("closed %d MLflow run(s) a dead worker left RUNNING", closed)
    done = sum(counts_toward(t, config_errors(study)) for t in study.get_trials(deepcopy=False))
    if done >= n_trials:
        print(f"study {study.study_name} already has {done} trials (search.n_trials={n_trials}); raise it to continue")
    else:
        study.set_user_attr("machine", _announce(cfg, base_overrides, dists, n_trials - done, done))
        shown = public_url(storage_url(cfg), cfg.paths.root_dir)
        print(f"floors: {'; '.join(f.describe() for f in floor_list)}; storage {shown}")
        _work(cfg, Worker(cfg, base_overrides, study, storage, lock), run_id, client, experiment_id)
    print_outcome(study, float(cfg.timing.noise_bound))
    print(tracking.where_to_look(run_id))
    return study
