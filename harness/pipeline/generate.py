"""A thin, timed layer over diffusers' ``WanPipeline``.

Reads top to bottom like the pipeline: set the scheduler, encode the prompt (timed on
its own), denoise with a step clock, decode (the time from the last step to the frames).
The pipeline is loaded once per process (``harness.pipeline.load``) and reused. What the
worker does differently from a plain ``WanPipeline`` call (``harness.pipeline.worker``) is
set per generation: its schedule, noise generator, guidance passes, precision and pixels.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from harness.pipeline.caches import transformer_cache
from harness.pipeline.clocks import PeakMemory, StepClock, now
from harness.pipeline.levers import Speed
from harness.pipeline.load import LoadedPipeline, use_attention
from harness.pipeline.passes import batched_guidance, guided_passes, official_precision
from harness.pipeline.schedulers import build_scheduler, scheduler_name
from harness.pipeline.worker import Worker, to_pixels
from harness.preset import VideoShape
from harness.signals import raise_if_stopped


@dataclass(frozen=True)
class GenerationRequest:
    """One video to generate."""

    prompt: str
    seed: int
    shape: VideoShape
    steps: int
    guidance: float
    solver: str
    shift: float
    negative_prompt: str = ""  # encoded as given: a plan puts the worker's default in when its prompt set has none
    speed: Speed = Speed()
    max_sequence_length: int = 512  # text tokens, as WanPipeline.__call__ pads them
    worker: Worker = Worker()  # diffusers' own behaviour unless a plan says otherwise
    mag_ratios: tuple[float, ...] | None = None  # MagCache's calibrated ratios (None with MagCache: calibrate)

    @property
    def guided_steps(self) -> int:
        """Steps that run both the conditional and the unconditional pass."""
        if not self.worker.runs_unconditional(self.guidance):
            return 0
        return max(1, math.ceil(self.speed.guidance_stop * self.steps - 1e-9))


@dataclass
class Generation:
    """A generated video and what it cost."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    text_encode_s: float
    denoise_s: float
    decode_s: float
    step_times: list[float] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    memory_kind: str = ""
    scheduler: str = ""
    guided_steps: int = 0
    schedule: dict[str, list[float]] = field(default_factory=dict)  # timesteps and sigmas as the scheduler held them
    mag_ratios: list[float] | None = None  # a calibrating MagCache generation's magnitude ratios

    @property
    def wall_s(self) -> float:
        """Generation time of one video: text encoding + denoising + decoding."""
        return self.text_encode_s + self.denoise_s + self.decode_s

    @property
    def step_median_s(self) -> float:
        return statistics.median(self.step_times) if self.step_times else 0.0


def generate(loaded: LoadedPipeline, request: GenerationRequest, solvers: Mapping[str, Any]) -> Generation:
    """Generate one video and time each stage.

    Args:
        loaded: the pipeline (``harness.pipeline.load.load_pipeline``).
        request: prompt, seed, resolved shape and sampler settings.
        solvers: the solver mapping (``conf/solver``).

    Returns:
        The frames as uint8 (F, H, W, 3) and the stage times.

    Raises:
        ValueError: an unknown solver.
        RuntimeError: the video came out NaN or blank.
    """
    raise_if_stopped()
    pipe = loaded.pipe
    # 1. Scheduler for this solver and shift (cheap; schedulers hold no weights), on the worker's schedule.
    official = request.worker.official_schedule(request.solver)
    pipe.scheduler = build_scheduler(request.solver, request.shift, solvers, official=official)
    use_attention(loaded, request.speed.attention)
    with (
        transformer_cache(pipe, request.speed, request.steps, request.mag_ratios) as calibrated,
        guided_passes(pipe, request.worker.guidance_passes == "always"),
        official_precision(pipe.transformer, _autocast(loaded, request.worker)),
    ):
        generation = _generate(loaded, request)
    return replace(generation, mag_ratios=calibrated[0]) if calibrated else generation


def _autocast(loaded: LoadedPipeline, worker: Worker) -> bool:
    """Whether the transformer runs as the official code runs it on CUDA: float32 weights under bf16 autocast."""
    return worker.precision == "autocast_bf16" and loaded.device.type == "cuda" and loaded.dtype == torch.float32


def _encode(loaded: LoadedPipeline, request: GenerationRequest) -> tuple[Any, Any]:
    """The prompt's (and, with guidance, the negative prompt's) text embeddings."""
    return loaded.pipe.encode_prompt(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        do_classifier_free_guidance=request.guided_steps > 0,
        max_sequence_length=request.max_sequence_length,  # encode_prompt alone defaults to 226
        device=loaded.device,
    )


def _on_step_end(clock: StepClock, request: GenerationRequest) -> Callable[..., dict]:
    """The step-end callback: records the step's end, and stops guidance after ``guided_steps``."""
    guided_steps = request.guided_steps

    def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
        clock(pipeline, step, timestep, tensors)
        raise_if_stopped()  # a SIGTERM whose interrupt Python swallowed stops the video here
        if step + 1 == guided_steps and guided_steps < request.steps:
            pipeline.guidance_stopped = True  # the loop reads do_classifier_free_guidance every step
        return tensors

    return on_step_end


def _to_frames(video: np.ndarray, pixels: str) -> np.ndarray:
    """The pipeline's float frames in [0, 1] as uint8 by the worker's rule, refusing NaN and blank videos."""
    if not np.isfinite(video).all():
        raise RuntimeError("the generated video contains NaN or inf values")
    frames = to_pixels(video, pixels)
    if frames.max() == frames.min():
        raise RuntimeError(f"the generated video is blank (every pixel is {int(frames.max())})")
    return frames


def _generate(loaded: LoadedPipeline, request: GenerationRequest) -> Generation:
    pipe, device = loaded.pipe, loaded.device
    with PeakMemory(device) as memory, torch.inference_mode():
        # 2. Text encoding, timed on its own and passed to the pipeline as embeddings.
        start = now(device)
        prompt_embeds, negative_embeds = _encode(loaded, request)
        encoded = now(device)
        # 3-4. Denoising (step clock) then VAE decoding, in the pipeline's own call.
        clock = StepClock(device, start=encoded)
        batched = request.speed.cfg == "batched" and request.guided_steps > 0
        with batched_guidance(pipe, negative_embeds, batched):
            output = _call(pipe, loaded, request, prompt_embeds, negative_embeds, clock)
        finished = now(device)
    last_step = clock.ends[-1] if clock.ends else encoded
    return Generation(
        frames=_to_frames(np.asarray(output.frames[0]), request.worker.pixels),
        text_encode_s=encoded - start,
        denoise_s=last_step - encoded,
        decode_s=finished - last_step,
        step_times=clock.step_times,
        peak_memory_mb=memory.peak_mb,
        memory_kind=memory.kind,
        scheduler=scheduler_name(pipe.scheduler),
        guided_steps=request.guided_steps,
        schedule={"timesteps": pipe.scheduler.timesteps.tolist(), "sigmas": pipe.scheduler.sigmas.tolist()},
    )


def _call(pipe: Any, loaded: LoadedPipeline, request: GenerationRequest, prompt_embeds: Any, negative_embeds: Any,
          clock: StepClock) -> Any:  # fmt: skip
    """``WanPipeline.__call__`` with the request's arguments: denoising (the step clock) then decoding."""
    return pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        height=request.shape.height,
        width=request.shape.width,
        num_frames=request.shape.num_frames,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=torch.Generator(_noise_device(loaded, request.worker)).manual_seed(request.seed),
        output_type="np",
        callback_on_step_end=_on_step_end(clock, request),
        max_sequence_length=request.max_sequence_length,
    )


def _noise_device(loaded: LoadedPipeline, worker: Worker) -> torch.device:
    """Where the initial noise is drawn: the official code's generator lives on the model's device."""
    return loaded.device if worker.noise_device == "model" else torch.device("cpu")
