"""A study is one measurement protocol: what its trials were measured with, and refusing anything else.

Everything that changes a trial's numbers or its verdict is fingerprinted when the study
starts: the worker it generates for, the weights, device and dtype, prompts and seeds, floors, the
reference preset, timing settings and quality settings. Continuing the study (``harness.search``) or
exporting from it (``harness.select``) with any of them changed is refused, naming each
change, so old and new trials are never compared under different rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

import optuna
from omegaconf import DictConfig

from harness.measure.plan import plan
from harness.pipeline.device import device_label, dtype_name
from harness.pipeline.levers import Speed
from harness.pipeline.load import load_pipeline
from harness.study.engine.floors import floors

log = logging.getLogger(__name__)


def measured_with(cfg: DictConfig) -> dict[str, str]:
    """The study's measurement protocol, readable: what every trial must share to be compared.

    Loads the pipeline (once per process; the trials reuse it).

    Args:
        cfg: the study's resolved config.

    Returns:
        key -> description (model, device, prompts, floors, reference, timing, quality, levers).
    """
    plan_ = plan(cfg)
    loaded = load_pipeline(cfg.model, plan_.worker, plan_.speed)
    negative = plan_.worker.negative_prompt_for(plan_.negative_prompt)  # what is encoded
    prompts = json.dumps([plan_.prompts, list(cfg.search.seeds), negative])
    device = "cpu" if loaded.device.type == "cpu" else device_label(loaded.device)
    reference, shape = plan_.reference, plan_.reference_shape
    return {
        "model": f"{loaded.name} (weights {loaded.weights})",
        "worker": plan_.worker.describe(),
        "device": f"{device} {dtype_name(loaded.dtype)}",
        "prompts": f"{len(plan_.prompts)} prompt(s) x {len(cfg.search.seeds)} seed(s) "
        f"({hashlib.sha256(prompts.encode()).hexdigest()[:8]})",
        "floors": "; ".join(floor.describe() for floor in floors(cfg)),
        "reference": f"{reference.sample_steps} {reference.sample_solver} steps, shift {reference.sample_shift:g}, "
        f"guide {reference.sample_guide_scale:g}, {shape.output_spec(plan_.fps)}",
        "timing": f"repeats {plan_.repeats}, warm-up {plan_.warmup_steps} steps, threads {plan_.threads}",
        "quality": f"clip {'on' if cfg.quality.clip else 'off'}, fidelity {'on' if cfg.quality.fidelity else 'off'}"
        f" (PSNR cap {float(cfg.quality.psnr_cap_db):g} dB), text length {plan_.max_sequence_length}",
        "levers": ", ".join(f"{key}={value}" for key, value in plan_.speed.params().items()),
    }


def differences(recorded: dict[str, str], identity: dict[str, str]) -> list[str]:
    """Each key whose value changed, as ``key 'old', now 'new'``."""
    return [
        f"{key} {recorded.get(key)!r}, now {value!r}"
        for key, value in identity.items()
        if recorded.get(key) != value and not (key == "levers" and _same_levers(recorded.get(key), value))
    ]


def _same_levers(recorded: str | None, now: str) -> bool:
    """Whether two levers descriptions set the same levers, one a newer harness added counting at its default (a
    study recorded before the lever existed measured without it)."""
    if recorded is None:
        return False
    defaults = {key: str(value) for key, value in asdict(Speed()).items()}
    read = [dict(part.split("=", 1) for part in text.split(", ") if "=" in part) for text in (recorded, now)]
    return {**defaults, **read[0]} == {**defaults, **read[1]}


def check_comparable(study: optuna.Study, identity: dict[str, str], measured: bool) -> None:
    """Record the study's protocol, or refuse to add trials measured under another one.

    Args:
        study: the study.
        identity: the protocol of this session (:func:`measured_with`).
        measured: whether any of its trials counts (a study of killed or configuration-failed
            trials only has measured nothing yet, and takes this session's protocol).

    Raises:
        ValueError: the study's trials were measured under another protocol (a retrained
            model, a new GPU, other floors, prompts, reference, timing or quality settings).
    """
    recorded = study.user_attrs.get("measured_with")
    if recorded is None or (not measured and recorded != identity):
        if recorded is None and study.get_trials(deepcopy=False):
            raise ValueError(
                f"study {study.study_name!r} predates the harness's measurement fingerprints: its trials cannot be "
                f"proven comparable; start a new study with search.study_name=NEW"
            )
        study.set_user_attr("measured_with", identity)
        return
    changed = differences(recorded, identity)
    if changed:
        raise ValueError(
            f"study {study.study_name!r} was measured with {'; '.join(changed)}: its trials would not compare "
            f"with new ones; start a new study with search.study_name=NEW (the old one stays readable: "
            f"python -m harness.report study={study.study_name})"
        )
