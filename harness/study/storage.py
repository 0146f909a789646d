"""Where a study lives: its Optuna storage, its MLflow study run, and runs a killed process left open."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import optuna
from omegaconf import DictConfig

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def storage_url(cfg: DictConfig) -> str:
    """The study's storage: ``search.storage``, or SQLite beside the MLflow store."""
    if cfg.search.storage:
        return str(cfg.search.storage)
    mlruns = Path(cfg.paths.mlruns_dir).resolve()
    mlruns.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{mlruns / 'optuna.db'}"


def public_url(url: str, root: str | Path | None = None) -> str:
    """A storage or tracking URL safe to print, log and commit.

    A password (``scheme://user:password@host``) becomes ``***``; a SQLite file inside
    ``root`` (the project) is shown relative to it, so a report names no machine's paths.

    Args:
        url: an Optuna storage or MLflow tracking URL.
        root: the project root (``paths.root_dir``), or None to keep paths as they are.
    """
    masked = re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)
    if root is not None and masked.startswith("sqlite:///"):
        path, base = Path(masked.removeprefix("sqlite:///")), Path(root).resolve()
        if path.is_absolute() and path.is_relative_to(base):
            return f"sqlite:///{path.relative_to(base)}"
    return masked


def open_study(cfg: DictConfig) -> optuna.Study:
    """Create the study, or load it when it exists, and fail trials a killed process left RUNNING."""
    storage = optuna.storages.RDBStorage(
        storage_url(cfg), heartbeat_interval=int(cfg.search.heartbeat_s), grace_period=int(cfg.search.grace_s)
    )
    sampler = optuna.samplers.TPESampler(
        seed=int(cfg.search.sampler.seed), n_startup_trials=int(cfg.search.sampler.n_startup_trials)
    )
    study = optuna.create_study(
        study_name=str(cfg.search.study_name),
        storage=storage,
        sampler=sampler,
        direction="minimize",
        load_if_exists=True,
    )
    optuna.storages.fail_stale_trials(study)
    return study


def load_study(cfg: DictConfig) -> optuna.Study:
    """The study named ``study`` in the configured storage.

    Raises:
        ValueError: no such study (the message lists the studies there).
    """
    url = storage_url(cfg)
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    if cfg.study not in names:
        raise ValueError(f"study={cfg.study!r} is not in {public_url(url)}; studies there: {names or 'none'}")
    return optuna.load_study(study_name=str(cfg.study), storage=url)


def study_run_id(client: mlflow.MlflowClient, experiment_id: str, study_name: str) -> str | None:
    """The MLflow run of a study (one per study, resumed when it continues), or None."""
    found = client.search_runs([experiment_id], f"tags.kind = 'study' and tags.study = '{study_name}'", max_results=1)
    return found[0].info.run_id if found else None


def close_orphans(client: mlflow.MlflowClient, experiment_id: str, study: optuna.Study) -> int:
    """End MLflow runs of this study left RUNNING by a killed process (their trial is not running).

    Returns:
        How many runs were closed.
    """
    running = {str(t.number) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    orphans = client.search_runs(
        [experiment_id],
        f"tags.study = '{study.study_name}' and attributes.status = 'RUNNING' and tags.kind != 'study'",
    )
    closed = 0
    for run in orphans:
        if run.data.tags.get("trial_number") not in running:
            client.set_terminated(run.info.run_id, "KILLED")
            client.set_tag(run.info.run_id, "note", "process ended mid-run (closed on the next start)")
            closed += 1
    return closed
