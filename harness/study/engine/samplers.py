"""The study's sampler (``search.sampler``): descent from the baseline, TPE, Gaussian-process or random search."""

from __future__ import annotations

import optuna

from harness.study.engine.descent import DescentSampler

SAMPLERS = ("descent", "tpe", "gp", "random")


def make_sampler(
    kind: str, seed: int, n_startup_trials: int, one_pass_at_guidance_one: bool = True
) -> optuna.samplers.BaseSampler:
    """A seeded sampler. Each honours the trials' floor constraints (``trial.set_constraint``), random aside.

    Args:
        kind: ``descent`` (down from the baseline, :mod:`harness.study.engine.descent`), ``tpe`` (Optuna's
            default), ``gp`` (``GPSampler``, constrained expected improvement) or ``random``.
        seed: the sampler's seed.
        n_startup_trials: trials sampled at random before the model-based samplers take over.
        one_pass_at_guidance_one: whether guidance <= 1 saves the unconditional pass (not in the official loop).

    Raises:
        ValueError: an unknown kind.
    """
    if kind == "descent":
        return DescentSampler(seed, n_startup_trials, one_pass_at_guidance_one)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"search.sampler.type={kind!r} is not a sampler; allowed: {list(SAMPLERS)}")
