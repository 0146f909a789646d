"""Every setting a user can get wrong, checked before torch, diffusers or MLflow are imported.

Each entry point calls its ``check_<command>`` first: a bad input is refused within about a
second (importing torch and diffusers alone takes several), before any store is opened and
before any model loads, with one line naming the setting, its value and what is allowed.
``harness.measure.plan`` builds its plan from :func:`measurement_settings`, so a setting is
checked by one function whether it comes from the command line, a trial or a preset file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.folders import check_paths
from harness.pipeline.levers import Speed
from harness.pipeline.weights import ModelUnavailableError, check_model_folder, check_pipeline_folder
from harness.pipeline.worker import Worker
from harness.preset import finite_number, read_preset_file, validate_preset
from harness.stores import check_storage, check_tracking

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a file name on every system, a bare MLflow tag value
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_int(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an integer in ``[minimum, maximum]``.

    Raises:
        ValueError: not an integer (booleans included) or out of range, naming ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"{key}={value!r} must be an integer {bounds}")
    return value


def check_number(key: str, value: Any, minimum: float = -math.inf, maximum: float = math.inf, why: str = "") -> float:
    """``value`` as a finite number in ``[minimum, maximum]`` (numeric strings from the command line accepted).

    Raises:
        ValueError: not a number, not finite, or out of range, naming ``key`` and the range.
    """
    bounds = [f">= {minimum:g}" if minimum > -math.inf else "", f"<= {maximum:g}" if maximum < math.inf else ""]
    allowed = f"{key}={value!r} must be a finite number {' and '.join(b for b in bounds if b)}".rstrip()
    allowed += f" ({why})" if why else ""
    return finite_number(value, allowed, minimum, maximum)


def check_flag(key: str, value: Any) -> bool:
    """Raises ValueError unless ``value`` is true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true or false")
    return value


def check_study_name(key: str, value: Any) -> str:
    """A study name every store and file system accepts (it names a lock file, a folder and MLflow filters).

    Raises:
        ValueError: naming the setting, its value and the characters allowed.
    """
    if not isinstance(value, str) or not STUDY_NAME.fullmatch(value):
        shown = (
            value if not isinstance(value, str) or len(value) <= 60 else f"{value[:40]}... ({len(value)} characters)"
        )
        raise ValueError(
            f"{key}={shown!r} is not a study name: 1-100 letters, digits, '_', '.' or '-', starting with a letter "
            f"or digit (it names files and folders)"
        )
    return value


def threads(setting: Any) -> int:
    """The torch intra-op threads ``timing.threads`` asks for: ``auto`` (the CPUs this process may use) or N >= 1.

    Raises:
        ValueError: anything else.
    """
    import os

    if setting == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"timing.threads={setting!r} must be auto or an integer >= 1")
    return setting


def _prompts_and_seeds(cfg: DictConfig) -> tuple[list[str], list[int]]:
    prompts = list(cfg.prompts.texts)
    if not prompts or not all(isinstance(text, str) and text.strip() for text in prompts):
        raise ValueError(f"prompts.texts={prompts!r} must be a non-empty list of non-empty strings")
    seeds = list(cfg.prompts.seeds)
    if not seeds:
        raise ValueError("prompts.seeds=[] must list at least one integer seed")
    return prompts, [check_int("prompts.seeds[]", seed, 0) for seed in seeds]


def _presets(cfg: DictConfig) -> tuple[Any, Any]:
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    raw = (
        read_preset_file(cfg.preset_file)
        if cfg.get("preset_file")
        else OmegaConf.to_container(cfg.preset, resolve=True)
    )
    reference = validate_preset(OmegaConf.to_container(cfg.reference, resolve=True), solvers)
    return validate_preset(raw, solvers), reference


def measurement_settings(cfg: DictConfig) -> dict[str, Any]:
    """Check everything a measurement reads and return it typed (the fields of ``harness.measure.plan.Plan``
    but the model-dependent shapes).

    Raises:
        ValueError: any bad value, named with what is allowed.
    """
    preset, reference = _presets(cfg)
    prompts, seeds = _prompts_and_seeds(cfg)
    speed = Speed.from_config(cfg.speed)
    # the types of timing, tracking and quality are their schemas' (harness/schema.py); their ranges are checked here
    warmup_steps = check_int("timing.warmup_steps", cfg.timing.warmup_steps, 1) if cfg.timing.warmup else 0
    if speed.compile != "off" and not warmup_steps:
        raise ValueError(
            f"speed.compile={speed.compile!r} needs timing.warmup=true: compilation would be timed as generation"
        )
    check_int("tracking.grid_frames", cfg.tracking.grid_frames, 1)
    check_number("quality.psnr_cap_db", cfg.quality.psnr_cap_db, 1.0, 1000.0)
    return {
        "name": str(cfg.name),
        "preset": preset,
        "reference": reference,
        "prompts": prompts,
        "seeds": seeds,
        "negative_prompt": str(cfg.prompts.negative_prompt or cfg.model.get("negative_prompt") or ""),
        "repeats": check_int("timing.repeats", cfg.timing.repeats, 1),
        "warmup_steps": warmup_steps,
        "speed": speed,
        "fps": check_int("tracking.fps", cfg.tracking.fps, 1),
        "threads": threads(cfg.timing.threads),
        "noise_bound": check_number("timing.noise_bound", cfg.timing.noise_bound, 1e-6, 10.0, "0.1 = 10%"),
        "max_sequence_length": check_int("model.max_sequence_length", cfg.model.get("max_sequence_length", 512), 1),
        "worker": Worker.from_config(cfg.worker),
        "pair": bool(cfg.timing.pair),
    }


def _check_local_model(setting: str, path: str, build: Any, check: Any) -> None:
    """A model folder on disk is checked file by file; a missing one must be a hub id or a folder to build.

    A folder the harness builds is checked when it loads, once built (another worker may be building it now).
    """
    folder = Path(path)
    if folder.is_dir() and build is None:
        check(folder, setting)
    elif folder.exists() and not folder.is_dir():
        raise ModelUnavailableError(f"{setting}={path!r} is a file; it must be a model folder (or a hub id)")
    elif build is None and not (path.count("/") == 1 and not path.startswith((".", "/", "~"))):
        raise ModelUnavailableError(
            f"{setting}={path!r}: there is no folder {path!r}; point {setting} at a downloaded folder in the "
            f"from_pretrained layout, or run the small model: model=tiny"
        )


def check_model(cfg: DictConfig) -> None:
    """The model settings (``model=auto`` is checked once resolved, when torch says which device there is).

    Raises:
        ValueError: a bad device, dtype or scale, or a local folder with a missing or corrupt file.
    """
    model = cfg.model
    if model.get("name") == "auto":
        return
    if not DEVICES.fullmatch(str(model.device)):
        raise ValueError(f"model.device={model.device!r} is not a torch device; allowed: auto, cpu, cuda")
    for key in ("dtype", "vae_dtype"):
        if str(model.get(key, "float32")) not in DTYPES:
            raise ValueError(f"model.{key}={model.get(key)!r} is not allowed; allowed: {', '.join(DTYPES)}")
    for axis in ("spatial", "temporal"):
        check_number(f"model.scale.{axis}", model.scale[axis], 1e-6)
    _check_local_model("model.path", str(model.path), model.get("build"), check_pipeline_folder)
    if cfg.quality.clip:
        _check_local_model("model.clip", str(model.clip), model.get("clip_build"), check_model_folder)


def check_run(cfg: DictConfig) -> None:
    """What ``harness.run`` reads: the measurement, the model, the folders and the tracking store."""
    check_paths(cfg)
    measurement_settings(cfg)
    check_model(cfg)
    check_tracking(cfg)


def check_search(cfg: DictConfig) -> None:
    """What ``harness.search`` reads: all ``harness.run`` does, the study's settings and its storage."""
    from harness.study.engine.settings import check_study_settings  # optuna: only for the commands that use it

    check_run(cfg)
    check_study_name("search.study_name", cfg.search.study_name)
    check_study_settings(cfg)
    check_storage(cfg, create=True)


def check_report(cfg: DictConfig) -> None:
    """What ``harness.report`` reads: the study's name, its storage (which must exist) and the tracking store."""
    check_paths(cfg)
    check_study_name("study", cfg.study)
    check_storage(cfg, create=False)
    check_tracking(cfg)
    check_number("timing.noise_bound", cfg.timing.noise_bound, 1e-6, 10.0, "0.1 = 10%")


def check_select(cfg: DictConfig) -> None:
    """What ``harness.select`` reads: the report's settings, the measurement and the selection's."""
    from harness.study.engine.settings import check_study_settings

    check_report(cfg)
    measurement_settings(cfg)
    check_model(cfg)
    check_study_settings(cfg)
    select = cfg.search.select
    for index, seed in enumerate(select.seeds):
        check_int(f"search.select.seeds[{index}]", seed, 0)
    check_number("search.select.noise", select.noise, 0.0, 1.0, "0.05 = 5%")
    check_int("search.select.repeats", select.repeats, 1)
    check_int("search.select.candidates", select.candidates, 1)
    check_int("search.select.attempts", select.attempts, 1)
    check_flag("replace", cfg.replace)


def check_dashboard(cfg: DictConfig) -> None:
    """What ``harness.dashboard`` reads: the study's storage (which must exist), host and port."""
    check_storage(cfg, create=False)
    if not isinstance(cfg.dashboard.host, str) or not cfg.dashboard.host:
        raise ValueError(f"dashboard.host={cfg.dashboard.host!r} must be a host name or address, e.g. 127.0.0.1")
    check_int("dashboard.port", cfg.dashboard.port, 1, 65535)


def check_audit(cfg: DictConfig) -> None:
    """What ``harness.audit`` reads: all ``harness.run`` does and the audit's knobs."""
    check_run(cfg)
    audit = cfg.audit
    check_int("audit.repeats", audit.repeats, 1)
    check_int("audit.claim_rounds", audit.claim_rounds, 1)
    check_flag("audit.overwrite", audit.overwrite)
    base = OmegaConf.to_container(cfg.preset, resolve=True)
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    for key, values, field in (("steps", audit.steps, "sample_steps"), ("sizes", audit.sizes, "size"),
                               ("frames", audit.frames, "frame_num")):  # fmt: skip
        if not values:
            raise ValueError(f"audit.{key}=[] must list at least one value")
        for value in values:
            try:
                validate_preset({**base, field: value}, solvers)
            except ValueError as error:
                raise ValueError(f"audit.{key}: {error}") from None
