"""Configs derived from a resolved one: a trial's, a preset's. A command composes and resolves its config once;
everything after derives new configs from it with ``OmegaConf.merge`` and changes none in place."""

from __future__ import annotations

from typing import Any, Mapping

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from harness import CONF_DIR


def derive(cfg: DictConfig, updates: Mapping[str, Any]) -> DictConfig:
    """A new config: ``cfg`` with ``updates`` (nested, e.g. ``{"preset": {"sample_steps": 12}}``) merged in."""
    return OmegaConf.merge(cfg, OmegaConf.create(dict(updates)))


def experiment(name: str) -> dict[str, Any]:
    """What an experiment of ``conf/experiment`` sets (a global package: ``name``, ``preset``), as a mapping.

    Raises:
        ValueError: no such experiment.
    """
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if not path.is_file():
        allowed = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"experiment {name!r} is not in conf/experiment; allowed: {allowed}")
    return OmegaConf.to_container(OmegaConf.load(path))


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides, once, at a benchmark's entry point (commands get theirs from
    ``@hydra.main``); what follows derives from it (:func:`derive`).

    Args:
        overrides: Hydra overrides, e.g. ``["model=tiny", "preset.sample_steps=12"]``.

    Returns:
        The composed config.
    """
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)
