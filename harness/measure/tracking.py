"""MLflow store: SQLite in ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``.

The file store is deprecated in MLflow 3, so the design's ``mlruns/`` folder holds a
SQLite database and the artifact tree instead. Open the UI with::

    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from harness.measure.video import frame_grid, write_mp4

for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def tracking_uri(mlruns_dir: Path) -> str:
    """The SQLite tracking URI for an ``mlruns`` folder."""
    return f"sqlite:///{mlruns_dir.resolve() / 'mlflow.db'}"


def use_store(mlruns_dir: Path, experiment: str) -> str:
    """Point MLflow at the store in ``mlruns_dir`` and select (or create) an experiment.

    Args:
        mlruns_dir: the ``mlruns`` folder (created if missing).
        experiment: MLflow experiment name.

    Returns:
        The experiment id.
    """
    mlruns_dir = mlruns_dir.resolve()
    mlruns_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(mlruns_dir))
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        location = (mlruns_dir / "artifacts" / experiment).as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


class Stopped(Exception):
    """Raised to stop a run on purpose (e.g. a pruned trial): its MLflow run ends KILLED."""


@contextmanager
def run(name: str, nested: bool = False, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run that is never left RUNNING by an exception.

    It ends FINISHED, KILLED when the block is stopped on purpose (``Stopped``, Ctrl-C),
    or FAILED when the block raises anything else; the exception propagates.
    """
    active = mlflow.start_run(run_name=name, nested=nested, tags=dict(tags or {}))
    try:
        yield active
    except (Stopped, KeyboardInterrupt):
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def log_config(cfg: DictConfig, name: str = "config.yaml") -> None:
    """Log the resolved config as a YAML artifact of the active run."""
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), name)


def log_video(frames: np.ndarray, fps: int, grid_frames: int) -> float:
    """Write the video as mp4 and its PNG frame grid, and log both to the active run.

    Returns:
        Seconds spent writing the mp4.
    """
    import time

    with tempfile.TemporaryDirectory() as folder:
        video_path = Path(folder) / "video.mp4"
        started = time.perf_counter()
        write_mp4(frames, video_path, fps=fps)
        write_s = time.perf_counter() - started
        grid_path = frame_grid(frames, Path(folder) / "frames.png", columns=grid_frames)
        mlflow.log_artifact(str(video_path))
        mlflow.log_artifact(str(grid_path))
    return write_s


def log_step_times(step_times: list[float]) -> None:
    """Log per-step seconds as the series ``time_step_s`` (x axis: step index)."""
    for step, seconds in enumerate(step_times):
        mlflow.log_metric("time_step_s", seconds, step=step)
