"""Hydra's run folder (``paths.log_dir``): its paths checked before Hydra creates it, its config saved masked.

Hydra saves the composed config, its own config and the command line's overrides into each
run folder's ``.hydra/``, passwords included. ``conf/config.yaml`` turns that off
(``hydra.output_subdir: null``) and this callback writes the same three files with every
password masked; a multirun's ``multirun.yaml``, which Hydra's sweeper writes before any job
starts, is masked in place when the first job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.cli import error_line
from harness.folders import check_paths
from harness.secrets import mask, mask_tree

SUBDIR = ".hydra"


def _save(node: Any, path: Path) -> None:
    plain = OmegaConf.to_container(node, resolve=False, enum_to_str=True) if OmegaConf.is_config(node) else node
    path.write_text(yaml.safe_dump(mask_tree(plain), sort_keys=False))


def _check_paths_or_exit(config: DictConfig) -> None:
    # Hydra turns a callback's exception into a warning and goes on to make the folder: exit here instead
    try:
        check_paths(config)
    except ValueError as error:
        raise SystemExit(error_line(error)) from None


class RunFolder(Callback):
    """Checks the paths before Hydra makes the run folder; saves ``.hydra/`` with passwords masked."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_paths_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_paths_or_exit(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.runtime.output_dir) / SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        _save(OmegaConf.masked_copy(config, [key for key in config if key != "hydra"]), folder / "config.yaml")
        _save(OmegaConf.masked_copy(config, ["hydra"]), folder / "hydra.yaml")
        _save(config.hydra.overrides.task, folder / "overrides.yaml")
        sweep = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        if config.hydra.mode and config.hydra.mode.name == "MULTIRUN" and sweep.is_file():
            sweep.write_text(mask(sweep.read_text()))
