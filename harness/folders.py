"""The folders the harness writes (``conf/paths``), checked writable without leaving anything behind.

Checked before Hydra creates the run folder in ``paths.log_dir`` (``harness.outputs``) and
before any store opens, so a folder that is a file, read-only or cannot be created is one
line naming the setting, not an ``OSError`` from deep inside a library.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

WRITTEN = ("log_dir", "cache_dir", "mlruns_dir")  # paths.*: Hydra's run folders, built models and references, MLflow


def writable_folder(setting: str, folder: Path, shown: str | None = None) -> None:
    """Check that ``folder`` is, or can become, a folder this process writes in; nothing is created.

    A missing folder is judged by its nearest existing parent (it is created there later).

    Args:
        setting: the setting that names the folder, for the message.
        folder: the folder.
        shown: ``setting='value'`` when the setting names more than the folder (a database URL).

    Raises:
        ValueError: the folder or a parent is a file, or it cannot be written.
    """
    shown = f"{shown}: its folder {str(folder)!r}" if shown else f"{setting}={str(folder)!r}"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == folder and not existing.is_dir():
        raise ValueError(f"{shown} is a file; it must be a folder (or not exist yet)")
    if not existing.is_dir():
        raise ValueError(f"{shown} is not a folder ({existing} is a file); point {setting} at a folder")
    try:
        with tempfile.TemporaryDirectory(dir=existing, prefix=".write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{shown} cannot be written ({reason}); point {setting} at a writable folder") from None


def check_paths(cfg: DictConfig) -> None:
    """``paths.root_dir`` is a folder and every folder the harness writes is writable.

    Raises:
        ValueError: naming the first unusable path's setting and value.
    """
    root = Path(str(cfg.paths.root_dir))
    if root.exists() and not root.is_dir():
        raise ValueError(f"paths.root_dir={str(root)!r} is a file; it must be a folder (or not exist yet)")
    for key in WRITTEN:
        writable_folder(f"paths.{key}", Path(str(cfg.paths[key])))
