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
import re
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from harness.atomic import file_lock
from harness.measure.video import frame_grid, write_mp4

for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

# The runs table's headline columns, kept as a shared view of each experiment (MLflow's UI reads
# experiment tags mlflow.sharedViewState.<key>, opened by ?viewStateShareKey=<key>).
HEADLINE_VIEW = "headline"
HEADLINE_COLUMNS = {
    "selectedColumns": [
        *(f"metrics.`{name}`" for name in ("median_wall_time_s", "wall_time_spread", "speedup_vs_baseline",
                                           "mean_psnr_db", "mean_ssim", "mean_clip_score")),
        "params.`output_spec`",
        "params.`spec_change`",
    ]
}  # fmt: skip
# The user's MLFLOW_TRACKING_URI, read before anything runs: mlflow.set_tracking_uri writes the variable too.
ENV_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
# Tags every run this process opens: a run left RUNNING by a dead worker on this machine is closed by the next.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


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


def tracking_uri(mlruns_dir: Path) -> str:
    """The SQLite tracking URI for an ``mlruns`` folder."""
    return f"sqlite:///{mlruns_dir.resolve() / 'mlflow.db'}"


def store_uri(cfg: DictConfig) -> str:
    """Where runs go: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else SQLite under ``paths.mlruns_dir``."""
    return str(cfg.tracking.get("uri") or ENV_TRACKING_URI or tracking_uri(Path(cfg.paths.mlruns_dir)))


def _local_folder(mlruns_dir: Path) -> Path:
    """The ``mlruns`` folder, created and checked writable.

    Raises:
        ValueError: it is a file, or cannot be created or written.
    """
    if mlruns_dir.exists() and not mlruns_dir.is_dir():
        raise ValueError(f"paths.mlruns_dir={str(mlruns_dir)!r} is a file; it must be a folder (or not exist yet)")
    try:
        mlruns_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=mlruns_dir, prefix=".write-test-")
        probe.close()
    except OSError as error:
        raise ValueError(f"paths.mlruns_dir={str(mlruns_dir)!r} is not writable ({error.strerror})") from None
    return mlruns_dir.resolve()


def _check_server(uri: str) -> None:
    """Raises ValueError unless the tracking server answers its health check."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as error:
        raise ValueError(
            f"tracking.uri={public_url(uri)!r} does not answer ({type(error).__name__}); start `mlflow server` "
            f"there or fix the address"
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
    return f"http://127.0.0.1:5000/{path} (after: {mlflow_command()} ui --backend-store-uri {uri})"


def mlflow_command() -> str:
    """How to start MLflow's CLI from here: ``mlflow`` when it is on PATH, else this Python's (the venv's)."""
    import shutil
    import sys

    if shutil.which("mlflow") == str(Path(sys.executable).with_name("mlflow")):
        return "mlflow"
    executable = Path(sys.executable)
    shown = executable.relative_to(Path.cwd()) if executable.is_relative_to(Path.cwd()) else executable
    return f"{shown} -m mlflow"


def unique_run_name(experiment_id: str, name: str) -> str:
    """``name``, or ``name #N`` when the experiment already has runs so named."""
    escaped = name.replace("'", "\\'")
    taken = mlflow.search_runs([experiment_id], f"attributes.run_name LIKE '{escaped}%'", output_format="list")
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
    together do not race MLflow's migrations. ``model=auto`` is resolved first, so its
    runs land in the chosen model's experiment, never in one named ``auto``.
    """
    from harness.pipeline.load import resolve_model  # torch and diffusers: only when a store is used

    resolve_model(cfg)
    experiment = experiment or experiment_name(cfg)
    if uri.startswith(("http://", "https://")):
        experiment_id = _experiment(experiment, None)  # the server decides where artifacts go
    else:
        mlruns_dir = Path(cfg.paths.mlruns_dir).resolve()  # an artifact location is a file URI: absolute
        with file_lock(mlruns_dir / ".store.lock"):
            experiment_id = _experiment(experiment, (mlruns_dir / "artifacts" / experiment).as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    _tag_experiment(experiment_id)
    return experiment_id


def point_at_store(cfg: DictConfig) -> str:
    """Point MLflow at the configured store, selecting no experiment; returns its URI.

    Raises:
        ValueError: an ``mlruns`` folder that is a file or read-only, or a server that does not answer.
    """
    uri = store_uri(cfg)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    else:
        _local_folder(Path(cfg.paths.mlruns_dir))
    mlflow.set_tracking_uri(uri)
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
    active = mlflow.start_run(run_name=name, nested=nested, tags={"worker": WORKER, **(tags or {})})
    try:
        yield active
    except (Stopped, KeyboardInterrupt):
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def public_config(cfg: DictConfig) -> str:
    """The resolved config as YAML, with the storage's and tracking server's passwords masked."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for group, key in (("search", "storage"), ("tracking", "uri")):
        if isinstance(plain.get(group), dict) and plain[group].get(key):
            plain[group][key] = public_url(str(plain[group][key]))
    return OmegaConf.to_yaml(OmegaConf.create(plain))


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
