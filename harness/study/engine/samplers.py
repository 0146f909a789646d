"""The study's sampler (``search.sampler``): descent from the baseline, TPE, Gaussian-process or random search.

``search.sampler.type`` names one of :data:`SAMPLERS`; Hydra builds it (``instantiate``) with the arguments the
config gives (a seed per worker, the random start of the model-based ones).
"""

from __future__ import annotations

import hydra
import optuna

SAMPLERS = {  # search.sampler.type -> the class Hydra builds
    "descent": "harness.study.engine.descent.DescentSampler",
    "tpe": "optuna.samplers.TPESampler",
    "gp": "optuna.samplers.GPSampler",
    "random": "optuna.samplers.RandomSampler",
}


def check_sampler(kind: str) -> None:
    """Raises ValueError unless ``kind`` names a sampler."""
    if kind not in SAMPLERS:
        raise ValueError(f"search.sampler.type={kind!r} is not a sampler; allowed: {list(SAMPLERS)}")


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
    check_sampler(kind)
    arguments = {"_target_": SAMPLERS[kind], "seed": seed}
    if kind != "random":
        arguments["n_startup_trials"] = n_startup_trials
    if kind == "descent":
        arguments["one_pass_at_guidance_one"] = one_pass_at_guidance_one
    return hydra.utils.instantiate(arguments)
