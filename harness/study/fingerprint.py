"""What a study measures with: trials are comparable only when measured with the same things."""

from __future__ import annotations

import hashlib
import json
import logging

import optuna
from omegaconf import DictConfig

from harness.measure.plan import plan
from harness.pipeline.device import device_label, dtype_name
from harness.pipeline.load import load_pipeline
from harness.study.compose import compose_trial

log = logging.getLogger(__name__)


def measured_with(cfg: DictConfig, base_overrides: list[str]) -> dict[str, str]:
    """What every trial of a study must share to be compared: weights, device, prompts and seeds.

    Loads the pipeline (once per process; the trials reuse it).

    Args:
        cfg: the study's composed config.
        base_overrides: the overrides it was composed with.

    Returns:
        A readable fingerprint, key -> description.
    """
    base = compose_trial(base_overrides)
    plan_ = plan(base)
    loaded = load_pipeline(base.model, plan_.speed.compile)
    prompts = json.dumps([plan_.prompts, list(cfg.search.seeds), plan_.negative_prompt])
    device = "cpu" if loaded.device.type == "cpu" else device_label(loaded.device)
    return {
        "model": f"{loaded.name} (weights {loaded.weights})",
        "device": f"{device} {dtype_name(loaded.dtype)}",
        "prompts": f"{len(plan_.prompts)} prompt(s) x {len(cfg.search.seeds)} seed(s) "
        f"({hashlib.sha256(prompts.encode()).hexdigest()[:8]})",
    }


def check_comparable(study: optuna.Study, identity: dict[str, str], storage: str) -> None:
    """Record what the study measures with, or refuse to add trials measured with something else.

    Raises:
        ValueError: the study's trials were measured with other weights, device or prompts
            (a retrained model, a new GPU): mixing them would compare unlike times and scores.
    """
    recorded = study.user_attrs.get("measured_with")
    if recorded is None:
        if study.get_trials(deepcopy=False):
            log.warning(
                "study %s predates fingerprints of what it measures with; assuming its trials used %s",
                study.study_name,
                identity,
            )
        study.set_user_attr("measured_with", identity)
        return
    changed = [
        f"{key} {recorded.get(key)!r}, now {value!r}" for key, value in identity.items() if recorded.get(key) != value
    ]
    if changed:
        raise ValueError(
            f"study {study.study_name!r} was measured with {'; '.join(changed)}: its trials would not compare with "
            f"new ones; choose a new search.study_name, or delete it: "
            f"optuna delete-study --study-name {study.study_name} --storage {storage}"
        )
