"""Where a study lives: its Optuna storage, its MLflow study run, and runs a dead worker left open."""

from __future__ import annotations

import logging
import warnings
import zlib
from pathlib import Path

import mlflow
import optuna
import sqlalchemy
from omegaconf import DictConfig

from harness.measure import tracking
from harness.measure.tracking import WORKER, alive_here, quoted
from harness.pipeline.worker import Worker
from harness.secrets import public_url
from harness.stores import error_reason, shown_setting, storage_setting, storage_url
from harness.study.engine.pruning import optuna_pruner
from harness.study.engine.samplers import make_sampler
from harness.study.workers.lock import StudyLock

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, by design


def worker_seed(seed: int) -> int:
    """This worker's sampler seed: ``search.sampler.seed`` mixed with the worker's host and process.

    Workers of one study then propose different presets instead of the same ones.
    """
    return (int(seed) + zlib.crc32(WORKER.encode())) % 2**31


# What opening a storage raises when it cannot be used: the database's errors, a lock file that cannot be
# made, a schema from another Optuna version (RuntimeError)
STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, OSError, RuntimeError, optuna.exceptions.OptunaError)


def storage_error(cfg: DictConfig, error: BaseException) -> ValueError:
    """One line naming the storage's setting, its URL (password masked) and why it cannot be used."""
    shown = shown_setting(cfg, storage_setting(cfg), storage_url(cfg))
    if isinstance(error, ImportError):
        return ValueError(
            f"{shown} needs a driver that is not installed ({error.name}); for PostgreSQL: pip install -e '.[postgres]'"
        )
    return ValueError(f"{shown} cannot be opened: {error_reason(error)}")


def rdb_storage(cfg: DictConfig) -> optuna.storages.RDBStorage:
    """The study's storage with heartbeats (created when it does not exist).

    Raises:
        ValueError: the server cannot be reached, its driver is missing, or the database is not a study
            storage (one line, password masked).
    """
    url = storage_url(cfg)
    if url.startswith("sqlite:///"):
        Path(sqlalchemy.engine.make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with StudyLock(url, "schema"):  # workers starting together on a fresh database race its schema
            return _open_rdb(url, int(cfg.search.heartbeat_s), int(cfg.search.grace_s))
    except (ImportError, *STORAGE_ERRORS) as error:
        raise storage_error(cfg, error) from None


def _open_rdb(url: str, heartbeat_s: int, grace_s: int) -> optuna.storages.RDBStorage:
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s)
    except sqlalchemy.exc.IntegrityError:
        # a reader outside the study's lock (optuna-dashboard, a report) stamped the fresh schema's version at the
        # same moment; it is stamped now, so opening again finds it
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s)


def open_study(cfg: DictConfig, storage: optuna.storages.RDBStorage) -> optuna.Study:
    """Create the study, or load it when it exists (call under the study's lock)."""
    settings = cfg.search.sampler
    one_pass = Worker.from_config(cfg.worker).guidance_passes == "above_one"
    sampler = make_sampler(str(settings.type), worker_seed(settings.seed), int(settings.n_startup_trials), one_pass)
    return optuna.create_study(
        study_name=str(cfg.search.study_name),
        storage=storage,
        sampler=sampler,
        pruner=optuna_pruner(cfg.search.pruner),
        direction="minimize",
        load_if_exists=True,
    )


def read_storage(cfg: DictConfig) -> optuna.storages.RDBStorage:
    """The study's storage opened to read (a report, the dashboard): never created, its studies listed once.

    Raises:
        ValueError: the storage cannot be opened or read (one line, password masked).
    """
    try:
        storage = optuna.storages.RDBStorage(storage_url(cfg), skip_table_creation=True)
        storage.get_all_studies()
    except (ImportError, *STORAGE_ERRORS) as error:
        raise storage_error(cfg, error) from None
    return storage


def load_study(cfg: DictConfig) -> optuna.Study:
    """The study named ``study`` in the configured storage, which is read, never created.

    Raises:
        ValueError: the storage cannot be opened, or has no such study (the message lists the studies there).
    """
    storage = read_storage(cfg)
    names = [s.study_name for s in storage.get_all_studies()]
    if cfg.study not in names:
        shown = public_url(storage_url(cfg), cfg.paths.root_dir)
        raise ValueError(f"study={cfg.study!r} is not in {shown}; studies there: {names or 'none'}")
    return optuna.load_study(study_name=str(cfg.study), storage=storage)


def use_study_experiment(cfg: DictConfig, study: optuna.Study) -> str:
    """Select the MLflow experiment that holds the study's runs, whatever ``model=`` is given; returns its id.

    ``harness.search`` records it on the study; a study from before it did is found by its study run. A study
    with no runs yet takes the config's experiment, and records it.
    """
    uri = tracking.point_at_store(cfg)
    name = study.user_attrs.get("mlflow_experiment")
    if not name:
        client = mlflow.MlflowClient()  # a study from before it was recorded: the experiment holding its run
        experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
        run = _study_run(client, experiment_ids, study.study_name) if experiment_ids else None
        name = client.get_experiment(run.info.experiment_id).name if run else None
    experiment_id = tracking.select_experiment(cfg, uri, name)  # the store is checked once
    if name is None:
        study.set_user_attr("mlflow_experiment", mlflow.get_experiment(experiment_id).name)
    return experiment_id


def study_run_id(client: mlflow.MlflowClient, experiment_id: str, study_name: str) -> str | None:
    """The MLflow run of a study (one per study, resumed by every worker and session), or None."""
    run = _study_run(client, [experiment_id], study_name)
    return run.info.run_id if run else None


def _study_run(client: mlflow.MlflowClient, experiment_ids: list[str], study_name: str) -> mlflow.entities.Run | None:
    query = f"tags.kind = 'study' and tags.study = {quoted(study_name)}"
    found = client.search_runs(experiment_ids, query, max_results=1)
    return found[0] if found else None


def close_orphans(client: mlflow.MlflowClient, experiment_id: str, study: optuna.Study) -> int:
    """End this study's MLflow runs that a dead worker left RUNNING.

    A run is alive while its trial is RUNNING in the study, or while the worker that
    opened it still runs on this machine; any other RUNNING run is closed as KILLED.

    Returns:
        How many runs were closed.
    """
    running = {str(t.number) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    orphans = client.search_runs(
        [experiment_id],
        f"tags.study = {quoted(study.study_name)} and attributes.status = 'RUNNING' and tags.kind != 'study'",
    )
    closed = 0
    for run in orphans:
        tags = run.data.tags
        if tags.get("trial_number") in running and tags.get("kind") != "drift" or alive_here(tags.get("worker", "")):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        client.set_tag(run.info.run_id, "note", "its worker ended mid-run (closed by the next worker)")
        closed += 1
    return closed
