"""Which worker the harness generates for: the official Wan 2.1 code, or a worker that calls ``WanPipeline``.

The team's worker passes its presets to the official code (Wan-Video/Wan2.1, ``generate.py`` and
``WanT2V.generate``). Generated through diffusers' ``WanPipeline`` as it is, the video differs from the
official one in its negative prompt, noise schedule, noise generator, precision, guidance passes and pixel
conversion; ``worker=official`` (``conf/worker``) makes each of them what the official code does, so every
time and score is for the video the worker ships. ``worker=diffusers`` keeps ``WanPipeline``'s own behaviour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

CHOICES = {
    "schedule": ("official", "diffusers"),
    "noise_device": ("model", "cpu"),
    "guidance_passes": ("always", "above_one"),
    "precision": ("autocast_bf16", "weights"),
    "pixels": ("truncate", "round"),
}
TRAIN_TIMESTEPS = 1000  # Wan 2.1's flow-matching training timesteps (num_train_timesteps)
OFFICIAL_SOLVERS = ("unipc", "dpm++")  # the solvers generate.py offers; euler exists only through diffusers


@dataclass(frozen=True)
class Worker:
    """How the worker generates, field by field (``conf/worker/*.yaml`` says what each value means)."""

    name: str = "diffusers"
    negative_prompt: str = ""  # encoded when a prompt set gives none ("")
    schedule: str = "diffusers"
    noise_device: str = "cpu"
    guidance_passes: str = "above_one"
    precision: str = "weights"
    pixels: str = "round"

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> "Worker":
        """Validate ``cfg.worker``.

        Raises:
            ValueError: a field outside its choices, or a negative prompt that is not text.
        """
        for key, allowed in CHOICES.items():
            if node.get(key) not in allowed:
                raise ValueError(f"worker.{key}={node.get(key)!r} is not allowed; allowed: {list(allowed)}")
        if not isinstance(node.get("negative_prompt"), str):
            raise ValueError(f"worker.negative_prompt={node.get('negative_prompt')!r} must be text ('' for none)")
        return cls(**{key: node[key] for key in ("name", "negative_prompt", *CHOICES)})

    def negative_prompt_for(self, given: str) -> str:
        """The negative prompt encoded: the prompt set's own, or the worker's when it gives none (``""``)."""
        return given or self.negative_prompt

    def runs_unconditional(self, guidance: float) -> bool:
        """Whether a guided step runs the unconditional pass at this guidance scale."""
        return guidance > 1.0 or self.guidance_passes == "always"

    def official_schedule(self, solver: str) -> bool:
        """Whether ``solver`` samples on the official code's sigmas and timesteps (unipc and dpm++ only)."""
        return self.schedule == "official" and solver in OFFICIAL_SOLVERS

    def params(self) -> dict[str, str]:
        """The worker's fields as MLflow params (``worker``, ``worker_schedule``, ...; the negative prompt apart)."""
        fields = asdict(self)
        fields.pop("negative_prompt")
        return {"worker": fields.pop("name"), **{f"worker_{key}": value for key, value in fields.items()}}

    def describe(self) -> str:
        """One line for a study's protocol: every field, the negative prompt by its length."""
        fields = ", ".join(f"{key} {value}" for key, value in self.params().items() if key != "worker")
        return f"{self.name} ({fields}, default negative prompt of {len(self.negative_prompt)} characters)"


def to_pixels(video: np.ndarray, rule: str) -> np.ndarray:
    """A video in [0, 1] as uint8: ``truncate`` as the official ``cache_video`` (``(x * 255)`` cast), or ``round``."""
    scaled = np.clip(video * 255.0, 0, 255)
    return (scaled if rule == "truncate" else np.round(scaled)).astype(np.uint8)


def official_sigmas(solver: str, steps: int, shift: float) -> np.ndarray:
    """The sigmas the official Wan code samples ``steps`` steps at (the final 0 not included).

    Both official solvers space ``steps + 1`` points evenly from the top of the noise schedule to 0, drop the
    last, and remap each by the shift, sigma' = shift * sigma / (1 + (shift - 1) * sigma):
    - ``unipc`` (``FlowUniPCMultistepScheduler``) starts at its training schedule's largest sigma, 1 - 1/1000,
      held in float32 (0.99900001...);
    - ``dpm++`` (``get_sampling_sigmas``) starts at 1 exactly.
    diffusers' flow schedulers instead space the points from 1 to 1/1000, which moves every sigma a little.

    Args:
        solver: ``unipc`` or ``dpm++``.
        steps: sampling steps (>= 1).
        shift: the preset's ``sample_shift`` (> 0).

    Returns:
        float64 sigmas, one per step, largest first.

    Raises:
        ValueError: a solver the official code does not offer.
    """
    if solver not in OFFICIAL_SOLVERS:
        raise ValueError(f"sample_solver={solver!r} has no official schedule; official solvers: {OFFICIAL_SOLVERS}")
    top = float(np.float32(1.0 - 1.0 / TRAIN_TIMESTEPS)) if solver == "unipc" else 1.0
    sigmas = np.linspace(top, 0.0, steps + 1)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def official_timesteps(sigmas: np.ndarray) -> np.ndarray:
    """The official code's integer timesteps of its sigmas: sigma x 1000, cut to an integer (not rounded)."""
    return (sigmas * TRAIN_TIMESTEPS).astype(np.int64)
