"""The baseline and the proposal's presets as the study's first trials, each enqueued once."""

from __future__ import annotations

from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from harness.preset import validate_preset
from harness.study.engine import space
from harness.study.engine.compose import derive, experiment
from harness.study.engine.floors import config_errors, counts_toward


def had_a_chance(trial: optuna.trial.FrozenTrial, uncounted: set[int]) -> bool:
    """Whether a preset's trial counts as measured: one of the study's trials (``counts_toward``), or waiting or
    running (a trial killed mid-trial, or failed by one of ``uncounted`` configuration errors, has not)."""
    waiting = trial.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    return waiting or counts_toward(trial, uncounted)


def preset_params(cfg: DictConfig, dists: dict, name: str) -> dict[str, Any]:
    """The searched keys' values of the experiment ``name`` (``conf/experiment``).

    Raises:
        ValueError: the preset is invalid or lies outside the search space.
    """
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    preset_cfg = derive(cfg, experiment(name))
    preset = validate_preset(OmegaConf.to_container(preset_cfg.preset, resolve=True), solvers)
    return space.params_of(preset, dists, name)


def enqueue_presets(study: optuna.Study, cfg: DictConfig, dists: dict, room: int) -> None:
    """Enqueue, in ``search.enqueue`` order, the presets the study still lacks, at most ``room`` of them.

    A preset whose trial was killed mid-trial, or failed by a configuration error, is
    enqueued again, so the report always shows it. Call it under the study's lock.
    """
    uncounted = config_errors(study)
    measured = {t.user_attrs.get("preset_name") for t in study.get_trials(deepcopy=False) if had_a_chance(t, uncounted)}
    missing = [name for name in (cfg.search.enqueue or []) if name not in measured]
    for name in missing[: max(room, 0)]:
        params = preset_params(cfg, dists, name)
        study.enqueue_trial(params, user_attrs={"preset_name": name})
