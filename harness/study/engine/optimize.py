"""Run (or continue) a study: the fastest preset that keeps every quality floor.

Each trial's config is the study's resolved config with the trial's choices merged in
(:func:`harness.study.engine.compose.derive`), is measured exactly as ``harness.run`` measures
(same figures), and is logged to MLflow as a child of the study's run, with its videos beneath
it. The baseline and the proposal's presets are enqueued first, so floors and speed-ups are
relative to the baseline on the same machine. The pipeline is loaded once for the whole study.
"""

from __future__ import annotations

import logging
import shlex
import time

import mlflow
import optuna
from omegaconf import DictConfig

from harness.measure import noise_floor, tracking
from harness.measure.pairing import NOT_PAIRED
from harness.measure.plan import plan
from harness.measure.session import open_session
from harness.pipeline.device import load_average, load_line
from harness.pipeline.load import resolve_model
from harness.secrets import public_url
from harness.signals import signals_deferred
from harness.stores import check_storage
from harness.study.engine import space
from harness.study.engine.estimate import closing_line, opening_estimate
from harness.study.engine.fingerprint import check_comparable, measured_with
from harness.study.engine.floors import (
    best_feasible,
    config_errors,
    counts_toward,
    failure,
    feasible,
    floors,
    is_baseline,
    shortfalls,
)
from harness.study.engine.pruning import summary as pruning_summary
from harness.study.engine.settings import check_study_settings
from harness.study.export.drift import latest_pairing, noise_lines, pair_best, pairs_text
from harness.study.report.summary import record_on_study_run
from harness.study.workers.lock import StudyLock
from harness.study.workers.loop import Worker
from harness.study.workers.storage import (
    close_orphans,
    open_study,
    rdb_storage,
    storage_url,
    study_run_id,
    use_study_experiment,
)

log = logging.getLogger(__name__)


def floor_scale(cfg: DictConfig) -> str:
    """The fidelity noise floor ``harness.audit`` measured for this model, printed beside the floors."""
    plan_ = plan(cfg)
    return noise_floor.scale(cfg, open_session(cfg, plan_), plan_)


def search_command(overrides: list[str]) -> str:
    """The command that runs this study again from a clone (machine paths left out, passwords masked)."""
    shown = [o.split("=", 1)[0] + "=" + public_url(o.split("=", 1)[1]) if "://" in o else o for o in overrides]
    return " ".join(["python -m harness.search", *(shlex.quote(o) for o in shown if not o.startswith("paths."))])


def speedup_text(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """A trial's paired speed-up with its interval, or why there is none."""
    paired = latest_pairing(study, trial)
    if paired is not None:
        return f"{paired.cell()} (paired with the baseline, {pairs_text(study, trial)})"
    return (
        f"{NOT_PAIRED} (measured alone, minutes from the baseline trial: the end of a search session pairs its best "
        f"trial with the baseline; harness.select pairs its candidates on held-out seeds)"
    )


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
    if best is None:
        print("  no feasible trial yet")
        return
    if is_baseline(best):
        print("  no preset faster than the baseline kept every floor yet; run more trials or relax search.floors")
        return
    print(
        f"  best feasible #{best.number} ({best.user_attrs.get('preset_name', 'searched')}): "
        f"{best.value:.3f} s/video; speed-up {speedup_text(study, best)}"
    )
    print(f"  params: {space.shown(best.params)}")
    name = study.study_name
    print(f"  next: python -m harness.report study={name} && python -m harness.select study={name}")


def _announce(cfg: DictConfig, dists: dict, study: optuna.Study, left: int, done: int):
    """Print what the session will cost before it starts; the estimate and the machine line."""
    estimate, machine = opening_estimate(cfg, dists, left, study)
    prompts, seeds = len(cfg.prompts.texts), len(cfg.search.seeds)
    print(f"study {cfg.search.study_name}: {estimate.line(left, done, prompts, seeds)}")
    return estimate, machine


def _session(cfg: DictConfig, worker: Worker, run: tuple, dists: dict, left: int) -> None:
    """This session of the study: announced, floors printed with their noise floor, worked, timed; the machine and
    its load recorded for the report."""
    study, started, load_before = worker.study, time.perf_counter(), load_average()
    estimate, machine = _announce(cfg, dists, study, left, int(cfg.search.n_trials) - left)
    study.set_user_attr("machine", machine)  # and its load once the session ends
    shown = public_url(storage_url(cfg), cfg.paths.root_dir)
    print(f"floors: {'; '.join(f.describe() for f in floors(cfg))}; storage {shown}")
    if scale := floor_scale(cfg):
        print(f"  {scale}")
        study.set_user_attr("noise_floor", scale)
    _work(cfg, worker, *run)
    study.set_user_attr("machine", f"{machine} {load_line(load_before)}".strip())
    print(closing_line(study, estimate, time.perf_counter() - started))


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
            pair_best(worker.objective, worker.study, int(cfg.search.pair_repeats))
        record_on_study_run(worker.study)  # the winner at a glance in MLflow
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except ValueError:
        mlflow.end_run("FAILED")
        raise
    finally:
        close_orphans(client, experiment_id, worker.study)
    with signals_deferred():  # a signal now is raised once the run has ended FINISHED
        mlflow.end_run("FINISHED")
    log.info("this worker ran %d trial(s) in %.0f s", worker.ran, time.perf_counter() - started)


def _label(
    cfg: DictConfig, study: optuna.Study, client: mlflow.MlflowClient, floor_list: list, base_overrides: list[str]
) -> tuple[str, str]:
    """Name the study's objective, floors and command in Optuna; its MLflow experiment and study run (ids)."""
    study.set_metric_names(["seconds per video"])  # the objective's name in optuna-dashboard
    study.set_user_attr("floors", [f.describe() for f in floor_list])
    study.set_user_attr("command", search_command(base_overrides))
    experiment_id = use_study_experiment(cfg, study)  # a resumed study keeps its experiment
    return experiment_id, _study_run(client, experiment_id, cfg, study)


def search_presets(cfg: DictConfig, base_overrides: list[str]) -> optuna.Study:
    """Run (or continue) the study until it holds ``search.n_trials`` counted trials, beside any other workers.

    Args:
        cfg: the composed config (``search`` node).
        base_overrides: the command line's overrides: the report names the command that makes the study again.

    Returns:
        The study.

    Raises:
        ValueError: bad settings, stores or presets (before any trial runs), another protocol
            than the study's, or trials that keep failing for one configuration reason.
    """
    cfg = resolve_model(cfg)  # once: every trial, report and run below reads the same model
    dists, floor_list, n_trials = check_study_settings(cfg)
    check_storage(cfg, create=True)
    # a bad MLflow store fails here, before the model loads, and a fresh one's schema is made under its lock;
    # the study's own experiment is selected below, once the study is open
    tracking.use_store(cfg)
    storage = rdb_storage(cfg)
    identity = measured_with(cfg)  # also checks the base preset and prompts
    lock = StudyLock(storage_url(cfg), str(cfg.search.study_name))
    client = mlflow.MlflowClient()
    with lock:
        study = open_study(cfg, storage)
        check_comparable(study, identity, any(counts_toward(t, config_errors(study)) for t in study.get_trials()))
        experiment_id, run_id = _label(cfg, study, client, floor_list, base_overrides)
    if closed := close_orphans(client, experiment_id, study):
        log.info("closed %d MLflow run(s) a dead worker left RUNNING", closed)
    done = sum(counts_toward(t, config_errors(study)) for t in study.get_trials(deepcopy=False))
    if done >= n_trials:
        print(f"study {study.study_name} already has {done} trials (search.n_trials={n_trials}); raise it to continue")
    else:
        _session(cfg, Worker(cfg, study, storage, lock), (run_id, client, experiment_id), dists, n_trials - done)
    print_outcome(study, float(cfg.timing.noise_bound))
    print(tracking.where_to_look(run_id))
    return study
