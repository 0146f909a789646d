"""A measurement plan: a composed config checked into what to generate and how.

Everything that can be wrong with the input is checked here, before anything is loaded
or any MLflow run is opened, so a bad preset leaves nothing half-written behind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import DictConfig

from harness.checks import measurement_settings
from harness.pipeline.generate import GenerationRequest
from harness.pipeline.levers import Speed
from harness.pipeline.worker import Worker
from harness.preset import Preset, VideoShape, resolve_shape, same_sampler


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


def plan(cfg: DictConfig) -> Plan:
    """Validate a composed config into a plan; nothing is loaded or logged.

    Args:
        cfg: the composed config (``conf/config.yaml``).

    Returns:
        The plan.

    Raises:
        ValueError: any bad value, named with what is allowed.
    """
    if cfg.model.get("name") == "auto":
        raise ValueError("model=auto must be resolved first (harness.pipeline.load.resolve_model): a command's job")
    settings = measurement_settings(cfg)
    scale = cfg.model.scale
    return Plan(
        **settings,
        shape=resolve_shape(settings["preset"], scale.spatial, scale.temporal),
        reference_shape=resolve_shape(settings["reference"], scale.spatial, scale.temporal, warn=False),
    )
