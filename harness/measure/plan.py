"""A measurement plan: a composed config checked into what to generate and how.

Everything that can be wrong with the input is checked here, before anything is loaded
or any MLflow run is opened, so a bad preset leaves nothing half-written behind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.pipeline.device import torch_threads
from harness.pipeline.generate import GenerationRequest
from harness.pipeline.levers import Speed
from harness.pipeline.load import resolve_model
from harness.pipeline.worker import Worker
from harness.preset import Preset, VideoShape, read_preset_file, resolve_shape, same_sampler, validate_preset


@dataclass(frozen=True)
class Plan:
    """A validated measurement: what to generate and how."""

    name: str
    preset: Preset
    reference: Preset
    shape: VideoShape
    reference_shape: VideoShape  # the baseline's output: every candidate is scored against it
    prompts: list[str]
    seeds: list[int]
    negative_prompt: str  # the prompt set's, else the model's ("" = none given: the worker's default is encoded)
    repeats: int
    warmup_steps: int  # 0: no warm-up
    speed: Speed = Speed()
    max_sequence_length: int = 512
    fps: int = 16  # the worker's frame rate: seconds of video = frames / fps
    threads: int = 1  # torch intra-op threads
    noise_bound: float = 0.10  # a time whose relative spread exceeds this is flagged noisy
    worker: Worker = Worker()  # what the worker's code does differently from a plain WanPipeline call
    pair: bool = False  # harness.run: measure the baseline interleaved with the preset (timing.pair)

    @property
    def is_reference(self) -> bool:
        """Whether this plan is the baseline itself: the reference's sampler and output, and no lever at all.

        A lever that computes the same function (another attention kernel, compilation, batched guidance) still
        changes the time and, by float rounding, the pixels: it is paired with the baseline and scored against
        the baseline's video like any other.
        """
        return (
            same_sampler(self.preset, self.reference)
            and self.shape.generated == self.reference_shape.generated
            and self.speed == Speed()
        )

    def baseline(self) -> "Plan":
        """The baseline's plan beside this one: the reference preset at its own output, with no lever."""
        return replace(self, name="baseline", preset=self.reference, shape=self.reference_shape, speed=Speed())

    def request(self, prompt: str, seed: int) -> GenerationRequest:
        """The generation request of one prompt and seed of this plan."""
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=self.worker.negative_prompt_for(self.negative_prompt),
            seed=seed,
            shape=self.shape,
            steps=self.preset.sample_steps,
            guidance=self.preset.sample_guide_scale,
            solver=self.preset.sample_solver,
            shift=self.preset.sample_shift,
            speed=self.speed,
            max_sequence_length=self.max_sequence_length,
            worker=self.worker,
        )


def check_int(key: str, value: Any, minimum: int) -> int:
    """``value`` as an integer >= ``minimum``.

    Raises:
        ValueError: not an integer (booleans included) or below ``minimum``, naming ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}")
    return value


def _switch(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true or false")
    return value


def _noise_bound(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10:
        raise ValueError(f"timing.noise_bound={value!r} must be a relative spread in (0, 10), e.g. 0.1 for 10%")
    return float(value)


def _prompts_and_seeds(cfg: DictConfig) -> tuple[list[str], list[int]]:
    prompts = list(cfg.prompts.texts)
    if not prompts or not all(isinstance(text, str) and text.strip() for text in prompts):
        raise ValueError(f"prompts.texts={prompts!r} must be a non-empty list of non-empty strings")
    seeds = list(cfg.prompts.seeds)
    if not seeds:
        raise ValueError("prompts.seeds=[] must list at least one integer seed")
    return prompts, [check_int("prompts.seeds[]", seed, 0) for seed in seeds]


def plan(cfg: DictConfig) -> Plan:
    """Validate a composed config into a plan; nothing is loaded or logged.

    Args:
        cfg: the composed config (``conf/config.yaml``).

    Returns:
        The plan.

    Raises:
        ValueError: any bad value, named with what is allowed.
    """
    resolve_model(cfg)  # model=auto becomes the model for this machine (in place)
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    raw_preset = OmegaConf.to_container(cfg.preset, resolve=True)
    if cfg.get("preset_file"):
        raw_preset = read_preset_file(cfg.preset_file)
    preset = validate_preset(raw_preset, solvers)
    reference = validate_preset(OmegaConf.to_container(cfg.reference, resolve=True), solvers)
    prompts, seeds = _prompts_and_seeds(cfg)
    speed = Speed.from_config(cfg.speed)  # before anything loads
    worker = Worker.from_config(cfg.worker)
    warmup_steps = check_int("timing.warmup_steps", cfg.timing.warmup_steps, 1) if cfg.timing.warmup else 0
    if speed.compile != "off" and not warmup_steps:
        raise ValueError(
            f"speed.compile={speed.compile!r} needs timing.warmup=true: compilation would be timed as generation"
        )
    return Plan(
        name=str(cfg.name),
        preset=preset,
        reference=reference,
        shape=resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal),
        reference_shape=resolve_shape(reference, cfg.model.scale.spatial, cfg.model.scale.temporal, warn=False),
        prompts=prompts,
        seeds=seeds,
        negative_prompt=str(cfg.prompts.negative_prompt or cfg.model.get("negative_prompt") or ""),
        repeats=check_int("timing.repeats", cfg.timing.repeats, 1),
        warmup_steps=warmup_steps,
        speed=speed,
        fps=check_int("tracking.fps", cfg.tracking.fps, 1),
        threads=torch_threads(cfg.timing.threads),
        noise_bound=_noise_bound(cfg.timing.noise_bound),
        max_sequence_length=check_int("model.max_sequence_length", cfg.model.get("max_sequence_length", 512), 1),
        worker=worker,
        pair=_switch("timing.pair", cfg.timing.get("pair", False)),
    )
