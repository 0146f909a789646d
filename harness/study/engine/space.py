"""The search space (``conf/search``): worker preset keys and the values Optuna may pick."""

from __future__ import annotations

import math
from typing import Any, Mapping

import optuna

from harness.pipeline.levers import CACHES, CFG_MODES, COMPILE_MODES, PRECISIONS, QUANTS
from harness.preset import MAX_GUIDANCE, MAX_STEPS_X_SHIFT, MIN_SHIFT, Preset, official_frame_count, parse_size

KINDS = ("int", "float", "categorical")
SEARCHABLE = (
    "sample_steps",
    "sample_solver",
    "sample_shift",
    "sample_guide_scale",
    "frame_num",
    "size",
    "guidance_stop",
    "cache",
    "cache_threshold",
    "attention",
    "compile",
    "precision",
    "cfg",
    "magcache_threshold",
    "magcache_k",
    "magcache_retention",
    "quant",
)
# Searchable keys that are not the worker's: where they live in the config, and their value
# in a preset that does not set them.
LEVERS = {
    "guidance_stop": ("speed.guidance_stop", 1.0),
    "cache": ("speed.cache", "none"),
    "cache_threshold": ("speed.cache_threshold", 0.05),
    "attention": ("speed.attention", "native"),  # a backend this device lacks fails its trial, with the reason
    "compile": ("speed.compile", "off"),  # each mode is one more transformer load in the study
    "precision": ("speed.precision", "worker"),  # bfloat16 weights: one more transformer load
    "cfg": ("speed.cfg", "separate"),
    "magcache_threshold": ("speed.magcache_threshold", 0.06),
    "magcache_k": ("speed.magcache_k", 3),
    "magcache_retention": ("speed.magcache_retention", 0.2),
    "quant": ("speed.quant", "none"),  # each quantization is one more transformer load
}
# The levers that switch something on (the others tune a switched-on cache).
SWITCHES = ("guidance_stop", "cache", "attention", "compile", "precision", "cfg", "quant")
# A cache's own settings, and the caches they act under: with another cache (or none) they change nothing.
TUNES = {
    "cache_threshold": ("first_block", "dbcache"),
    "magcache_threshold": ("magcache",),
    "magcache_k": ("magcache",),
    "magcache_retention": ("magcache",),
}


def inert(key: str, params: Mapping[str, Any]) -> bool:
    """Whether a setting changes nothing in these values (a cache's setting while that cache is off)."""
    return key in TUNES and params.get("cache", LEVERS["cache"][1]) not in TUNES[key]


def shown(params: Mapping[str, Any]) -> str:
    """A trial's values as people read them: ``sample_steps=11, cache=none, ...``, the settings of a cache that is off
    left out and floats without binary noise (0.12, not 0.12000000000000001)."""
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in effective(params).items())  # fmt: skip


def effective(params: Mapping[str, Any]) -> dict[str, Any]:
    """The values that make the video: the settings of a cache that is off left out (two trials that differ only
    there are the same preset)."""
    return {key: value for key, value in params.items() if not inert(key, params)}


def distributions(
    space: Mapping[str, Mapping[str, Any]], solvers: Mapping[str, Any]
) -> dict[str, optuna.distributions.BaseDistribution]:
    """Turn the configured space into Optuna distributions, checking every entry.

    Args:
        space: ``search.space`` (key -> {type, low, high} or {type: categorical, choices}).
        solvers: the solver mapping, the allowed ``sample_solver`` choices.

    Returns:
        Key -> distribution.

    Raises:
        ValueError: unknown key or type, empty or inverted range, a choice that is not a
            valid value of its key (unknown solver, size not W*H, frames not 4n+1).
    """
    result: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, spec in space.items():
        if key not in SEARCHABLE:
            raise ValueError(f"search.space.{key} is not searchable; allowed: {list(SEARCHABLE)}")
        kind = spec.get("type")
        if kind not in KINDS:
            raise ValueError(f"search.space.{key}.type={kind!r}; allowed: {list(KINDS)}")
        result[key] = _categorical(key, spec, solvers) if kind == "categorical" else _numeric(key, kind, spec)
    _check_steps_x_shift(result)
    return result


def _check_steps_x_shift(dists: Mapping[str, optuna.distributions.BaseDistribution]) -> None:
    """The space's most steps at its largest shift must stay where every solver is finite (``harness.preset``)."""
    steps, shift = dists.get("sample_steps"), dists.get("sample_shift")
    if isinstance(steps, optuna.distributions.IntDistribution) and shift is not None:
        if steps.high * shift.high > MAX_STEPS_X_SHIFT:
            raise ValueError(
                f"search.space: sample_steps.high={steps.high} x sample_shift.high={shift.high:g} exceeds "
                f"{MAX_STEPS_X_SHIFT}, beyond which consecutive steps share one of the scheduler's 1000 timesteps "
                f"and UniPC and DPM++ fail; lower one of them"
            )


def _categorical(
    key: str, spec: Mapping[str, Any], solvers: Mapping[str, Any]
) -> optuna.distributions.BaseDistribution:
    choices = list(spec.get("choices") or [])
    if not choices:
        raise ValueError(f"search.space.{key}.choices is empty; list at least one value")
    for choice in choices:
        _check_choice(key, choice, solvers)
    return optuna.distributions.CategoricalDistribution(choices)


def _numeric(key: str, kind: str, spec: Mapping[str, Any]) -> optuna.distributions.BaseDistribution:
    low, high = spec.get("low"), spec.get("high")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers or not low <= high:
        raise ValueError(f"search.space.{key}: low={low!r}, high={high!r} must be numbers with low <= high")
    if key == "sample_steps" and (kind != "int" or low < 1):
        raise ValueError(f"search.space.sample_steps must be type int with low >= 1, got {kind} low={low}")
    if key == "sample_shift" and low < MIN_SHIFT:
        raise ValueError(f"search.space.sample_shift.low={low} must be >= {MIN_SHIFT}")
    if key == "guidance_stop" and not 0 < low <= high <= 1:
        raise ValueError(f"search.space.guidance_stop: low={low}, high={high} must lie in (0, 1]")
    if key == "sample_guide_scale" and not 0 <= low <= high <= MAX_GUIDANCE:
        raise ValueError(f"search.space.sample_guide_scale: low={low}, high={high} must lie in [0, {MAX_GUIDANCE:g}]")
    if key in ("sample_solver", "size", "frame_num", "cache", "attention", "compile", "precision", "cfg", "quant"):
        raise ValueError(f"search.space.{key} must be type categorical (choices)")
    step = spec.get("step")
    if step is not None and not step > 0:
        raise ValueError(f"search.space.{key}.step={step!r} must be > 0")
    if kind == "int":
        return optuna.distributions.IntDistribution(int(low), int(high), step=int(step or 1))
    return optuna.distributions.FloatDistribution(float(low), float(high), step=None if step is None else float(step))


def _check_choice(key: str, choice: Any, solvers: Mapping[str, Any]) -> None:
    if key == "sample_solver" and choice not in solvers:
        raise ValueError(
            f"search.space.sample_solver choice {choice!r} is not a known solver; allowed: {sorted(solvers)}"
        )
    if key == "size":
        parse_size(choice)
    if key == "cache" and choice not in CACHES:
        raise ValueError(f"search.space.cache choice {choice!r} is not a cache; allowed: {list(CACHES)}")
    if key == "cfg" and choice not in CFG_MODES:
        raise ValueError(f"search.space.cfg choice {choice!r} is not allowed; allowed: {list(CFG_MODES)}")
    if key == "quant" and choice not in QUANTS:
        raise ValueError(f"search.space.quant choice {choice!r} is not allowed; allowed: {list(QUANTS)}")
    if key == "precision" and choice not in PRECISIONS:
        raise ValueError(f"search.space.precision choice {choice!r} is not allowed; allowed: {list(PRECISIONS)}")
    if key == "compile" and choice not in COMPILE_MODES:
        raise ValueError(f"search.space.compile choice {choice!r} is not allowed; allowed: {list(COMPILE_MODES)}")
    if key == "frame_num" and (not isinstance(choice, int) or choice < 1 or official_frame_count(choice) != choice):
        raise ValueError(f"search.space.frame_num choice {choice!r} must be a frame count 4n+1 (e.g. 81, 61, 45)")


def suggest(trial: optuna.Trial, dists: Mapping[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
    """Ask the trial for a value of every key in the space."""
    params: dict[str, Any] = {}
    for key, dist in dists.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            params[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step)
        else:
            params[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step)
    return params


def params_of(preset: Preset, dists: Mapping[str, optuna.distributions.BaseDistribution], name: str) -> dict[str, Any]:
    """A preset's values for the searched keys, to enqueue it as a trial.

    ``frame_num`` is given as the count the official rule generates (64 -> 61), which
    makes the same video.

    Raises:
        ValueError: the preset lies outside the space (it could not be compared fairly).
    """
    values = {**preset.to_worker(), **{key: default for key, (_, default) in LEVERS.items()}}
    values["frame_num"] = official_frame_count(preset.frame_num)
    params = {key: values[key] for key in dists}
    for key, value in params.items():
        dist = dists[key]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            inside = value in dist.choices
        else:
            inside = dist.low <= value <= dist.high
        if not inside:
            raise ValueError(
                f"preset {name!r} has {key}={value!r}, outside search.space.{key}; "
                "widen the space or drop it from search.enqueue"
            )
    return params


def updates(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A trial's values as config updates: worker keys on ``preset``, levers on ``speed``."""
    found: dict[str, dict[str, Any]] = {"preset": {}, "speed": {}}
    for key, value in params.items():
        group, name = LEVERS[key][0].split(".") if key in LEVERS else ("preset", key)
        found[group][name] = value
    return found
