"""Compose a trial's config from ``conf/`` with Hydra's Compose API (inside a Hydra app or standalone)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from harness import CONF_DIR


def compose_trial(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides.

    Args:
        overrides: Hydra overrides, e.g. ``["model=tiny", "preset.sample_steps=12"]``.

    Returns:
        The composed config.
    """
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)
