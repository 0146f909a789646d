"""MLflow tracking: a local SQLite store under ``mlruns/``, or a tracking server.

The file store is deprecated in MLflow 3, so by default the design's ``mlruns/`` folder
holds a SQLite database (``mlruns/mlflow.db``) and the artifact tree. ``tracking.uri``
(or ``MLFLOW_TRACKING_URI``) points at an ``mlflow server`` instead, for a fleet of
workers; run it with ``--artifacts-destination`` so videos travel over HTTP. Open the UI::

    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from harness.atomic import file_lock
from harness.folders import writable_folder
from harness.measure.results import HEADLINE_METRICS
from harness.measure.video import frame_grid, write_mp4
from harness.secrets import mask_tree, public_url
from harness.signals import signals_deferred
from harness.stores import check_server, tracking_setting

log = logging.getLogger(__name__)
for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

# The runs table's headline columns, kept as a shared view of each experiment (MLflow's UI reads
# experiment tags mlflow.sharedViewState.<key>, opened by ?viewStateShareKey=<key>).
HEADLINE_VIEW = "headline"
HEADLINE_COLUMNS = {
    "selectedColumns": [
        *(f"metrics.`{name}`" for name in HEADLINE_METRICS),
        "params.`output_spec`",
        "params.`spec_change`",
    ]
}  # fmt: skip
# Tags every run this process opens: a run left RUNNING by a dead worker on this machine is closed by the next.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _local_folder(mlruns_dir: Path) -> Path:
    """The ``mlruns`` folder, created and checked writable.

    Raises:
        ValueError: it is a file, or cannot be created or written.
    """
    writable_folder("paths.mlruns_dir", mlruns_dir)
    mlruns_dir.mkdir(parents=True, exist_ok=True)
    return mlruns_dir.resolve()


def _open_store(cfg: DictConfig, setting: str, uri: str) -> None:
    """Read the store once, so one MLflow cannot use is refused here in one line, naming its setting.

    A fresh local store gets its schema now, under a file lock: workers starting together do not race
    MLflow's migrations.
    """
    from sqlalchemy.exc import SQLAlchemyError

    local = not uri.startswith(("http://", "https://"))
    try:
        with file_lock(Path(cfg.paths.mlruns_dir).resolve() / ".store.lock") if local else nullcontext():
            mlflow.MlflowClient().search_experiments(max_results=1)
    except (MlflowException, SQLAlchemyError, OSError) as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())[:200]
        raise ValueError(
            f"{setting}={public_url(uri, cfg.paths.root_dir)!r} cannot be opened as an MLflow store ({reason}); "
            f"move a damaged store aside or point {setting} elsewhere"
        ) from None


def _experiment(name: str, artifact_location: str | None) -> str:
    """The experiment's id, created if missing (another worker creating it at the same moment is fine)."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created by another worker meanwhile
        return mlflow.get_experiment_by_name(name).experiment_id


def experiment_name(cfg: DictConfig) -> str:
    """``tracking.experiment``, or one experiment per model: ``wan-presets/<model>`` (real weights add their path)."""
    if cfg.tracking.get("experiment"):
        return str(cfg.tracking.experiment)
    from harness import PACKAGE_DIR

    path = str(cfg.model.get("path", ""))
    shipped_or_built = cfg.model.get("build") is not None or Path(path).resolve().is_relative_to(PACKAGE_DIR)
    return f"wan-presets/{cfg.model.name}" + ("" if shipped_or_built or not path else f" ({path})")


def run_link(run_id: str) -> str:
    """Where to open a run: the server's URL, or the path to open in ``mlflow ui`` for a local store."""
    run = mlflow.get_run(run_id)
    # MLflow 3.17's UI starts in its GenAI workflow whatever the experiment's kind; this opens model training
    return _link(f"#/experiments/{run.info.experiment_id}/runs/{run_id}?workflowType=machine_learning")


def where_to_look(run_id: str) -> str:
    """Two lines a person can open: the run, and its experiment's runs table with the headline columns."""
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    return f"MLflow run {run_id}: {run_link(run_id)}\nall runs, headline columns: {experiment_link(experiment_id)}"


def _link(path: str) -> str:
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"{public_url(uri).rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path} (after: {mlflow_command()} ui --backend-store-uri {public_url(uri)})"


def mlflow_command() -> str:
    """How to start MLflow's CLI from here: ``mlflow`` when it is on PATH, else this Python's (the venv's)."""
    import shutil
    import sys

    if shutil.which("mlflow") == str(Path(sys.executable).with_name("mlflow")):
        return "mlflow"
    executable = Path(sys.executable)
    shown = executable.relative_to(Path.cwd()) if executable.is_relative_to(Path.cwd()) else executable
    return f"{shown} -m mlflow"


def quoted(value: Any) -> str:
    """A value as a string literal in an MLflow filter (``tags.study = {quoted(name)}``).

    MLflow's filter grammar has no escape inside a literal (checked against its SQL store): a value holding a
    single quote goes in double quotes.

    Raises:
        ValueError: the value holds both kinds of quote, which no literal can hold.
    """
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{text!r} holds both quote characters: an MLflow filter cannot name it")


def unique_run_name(experiment_id: str, name: str) -> str:
    """``name``, or ``name #N`` when the experiment already has runs so named."""
    taken = mlflow.search_runs([experiment_id], f"attributes.run_name LIKE {quoted(name + '%')}", output_format="list")
    names = {run.info.run_name for run in taken}
    if name not in names:
        return name
    return next(f"{name} #{n}" for n in range(2, len(names) + 3) if f"{name} #{n}" not in names)


def use_store(cfg: DictConfig, experiment: str | None = None) -> str:
    """Point MLflow at the configured store and select (or create) the experiment.

    Args:
        cfg: the composed config (``tracking``, ``paths.mlruns_dir``).
        experiment: the experiment's name; default ``experiment_name(cfg)``.

    Returns:
        The experiment id.

    Raises:
        ValueError: an ``mlruns`` folder that is a file or read-only, or a server that does not answer.
    """
    return select_experiment(cfg, point_at_store(cfg), experiment)


def select_experiment(cfg: DictConfig, uri: str, experiment: str | None = None) -> str:
    """Select (or create) the experiment in the store ``point_at_store`` checked and returned; its id.

    A fresh local store's schema is created under a file lock, so workers starting
    together do not race MLflow's migrations. ``cfg`` is resolved (``model=auto`` replaced), so the runs
    land in the chosen model's experiment, never in one named ``auto``.
    """
    experiment = experiment or experiment_name(cfg)
    if uri.startswith(("http://", "https://")):
        experiment_id = _experiment(experiment, None)  # the server decides where artifacts go
    else:
        mlruns_dir = Path(cfg.paths.mlruns_dir).resolve()  # an artifact location is a file URI: absolute
        with file_lock(mlruns_dir / ".store.lock"):
            experiment_id = _experiment(experiment, (mlruns_dir / "artifacts" / experiment).as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    _tag_experiment(experiment_id)
    if closed := close_dead_runs(experiment_id):
        log.info("closed %d MLflow run(s) that a process of this machine left RUNNING when it died", closed)
    return experiment_id


def alive_here(worker: str) -> bool:
    """Whether a worker tag (``host:pid``) names a live process on this machine."""
    host, _, pid = worker.rpartition(":")
    if host != WORKER.rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_dead_runs(experiment_id: str) -> int:
    """End as KILLED the runs a process of this machine left RUNNING when it died (SIGKILL, a power cut).

    A run whose worker tag names this machine and a process that no longer exists can never end
    otherwise. Runs of other machines are left to their own workers (a study's: to its next worker).

    Returns:
        How many runs were closed.
    """
    client = mlflow.MlflowClient()
    host = WORKER.rpartition(":")[0]
    closed = 0
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        worker = run.data.tags.get("worker", "")
        if worker.rpartition(":")[0] != host or alive_here(worker):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        client.set_tag(run.info.run_id, "note", "its process ended mid-run (closed by the next command)")
        closed += 1
    return closed


def point_at_store(cfg: DictConfig) -> str:
    """Point MLflow at the configured store, selecting no experiment; returns its URI.

    Raises:
        ValueError: an ``mlruns`` folder that is a file or read-only, or a server that does not answer.
    """
    setting, uri = tracking_setting(cfg)
    if uri.startswith(("http://", "https://")):
        check_server(setting, uri)
    else:
        _local_folder(Path(cfg.paths.mlruns_dir))
    mlflow.set_tracking_uri(uri)
    _open_store(cfg, setting, uri)
    return uri


def _tag_experiment(experiment_id: str) -> None:
    """Tags that make MLflow's UI open the experiment on its runs, with the headline columns."""
    tags = {
        # MLflow 3 opens an experiment on its GenAI overview unless told it holds model runs
        "mlflow.experimentKind": "custom_model_development",
        # a view of the runs table with the headline columns: experiment_link opens it
        f"mlflow.sharedViewState.{HEADLINE_VIEW}": json.dumps(HEADLINE_COLUMNS),
    }
    client = mlflow.MlflowClient()
    present = client.get_experiment(experiment_id).tags
    for key, value in tags.items():
        if present.get(key) != value:
            try:
                client.set_experiment_tag(experiment_id, key, value)
            except MlflowException:  # another worker tagged it at the same moment
                pass


def experiment_link(experiment_id: str) -> str:
    """The experiment's runs table with the headline metric columns shown (the server's URL, or ``mlflow ui``'s)."""
    path = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={HEADLINE_VIEW}"
    return _link(path)


class Stopped(Exception):
    """Raised to stop a run on purpose (e.g. a pruned trial): its MLflow run ends KILLED."""


@contextmanager
def run(name: str, nested: bool = False, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run that is never left RUNNING by an exception.

    It ends FINISHED, KILLED when the block is stopped on purpose (``Stopped``, Ctrl-C),
    or FAILED when the block raises anything else; the exception propagates.
    """
    with signals_deferred():  # a run opened is a run guarded below
        active = mlflow.start_run(run_name=name, nested=nested, tags={"worker": WORKER, **(tags or {})})
    try:
        yield active
    except (Stopped, KeyboardInterrupt):
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    with signals_deferred():  # a signal now is raised once the run has ended FINISHED
        mlflow.end_run("FINISHED")


def public_config(cfg: DictConfig) -> str:
    """The resolved config as YAML, with every password in it masked (any URL-like value in any setting)."""
    return OmegaConf.to_yaml(OmegaConf.create(mask_tree(OmegaConf.to_container(cfg, resolve=True))))


def log_config(cfg: DictConfig, name: str = "config.yaml") -> None:
    """Log the resolved config (passwords masked) as a YAML artifact of the active run."""
    mlflow.log_text(public_config(cfg), name)


def log_video(frames: np.ndarray, fps: int, grid_frames: int, name: str = "video", mp4: bool = True) -> float:
    """Write the video as ``<name>.mp4`` and its PNG frame grid ``<name>.png``; log both to the active run.

    Args:
        frames: uint8 (F, H, W, 3).
        fps: frames per second of the mp4.
        grid_frames: frames shown in the grid.
        name: the artifacts' stem (``video`` -> ``video.mp4`` and ``frames.png``).
        mp4: write the mp4 (``tracking.video``; a machine without ffmpeg writes the grid only).

    Returns:
        Seconds spent writing the mp4.
    """
    import time

    with tempfile.TemporaryDirectory() as folder:
        grid_name = "frames.png" if name == "video" else f"{name}.png"
        mlflow.log_artifact(str(frame_grid(frames, Path(folder) / grid_name, columns=grid_frames)))
        if not mp4:
            return 0.0
        video_path = Path(folder) / f"{name}.mp4"
        started = time.perf_counter()
        write_mp4(frames, video_path, fps=fps)
        write_s = time.perf_counter() - started
        mlflow.log_artifact(str(video_path))
    return write_s


def log_comparison(beside: np.ndarray, stacked: np.ndarray, fps: int, grid_frames: int, mp4: bool) -> None:
    """Log ``side_by_side.mp4`` (videos beside each other) and ``side_by_side.png`` (a row per video)."""
    with tempfile.TemporaryDirectory() as folder:
        mlflow.log_artifact(str(frame_grid(stacked, Path(folder) / "side_by_side.png", columns=grid_frames)))
        if mp4:
            mlflow.log_artifact(str(write_mp4(beside, Path(folder) / "side_by_side.mp4", fps=fps)))


def log_step_times(step_times: list[float]) -> None:
    """Log per-step seconds as the series ``time_step_s`` (x axis: step index)."""
    for step, seconds in enumerate(step_times):
        mlflow.log_metric("time_step_s", seconds, step=step)
