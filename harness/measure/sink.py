"""Where measurements go in MLflow: a preset's run (params, its summary's metrics, its pairing) and a child run
per video (its metrics, the video, its grid, the side-by-side with the baseline's, its schedule)."""

from __future__ import annotations

import logging
import os
from typing import Any

import diffusers
import mlflow
import torch
from omegaconf import DictConfig

from harness.measure import tracking
from harness.measure.figures import ratio_plot
from harness.measure.pairing import PairedSpeedup
from harness.measure.plan import Plan
from harness.measure.results import Summary, VideoResult
from harness.measure.video import side_by_side
from harness.pipeline.device import device_label, dtype_name
from harness.pipeline.generate import Generation, GenerationRequest
from harness.pipeline.load import LoadedPipeline
from harness.preset import FRAME_RULE

log = logging.getLogger(__name__)


def run_params(plan_: Plan, loaded: LoadedPipeline, cfg: DictConfig, scheduler: str) -> dict[str, Any]:
    """What a run measured, as MLflow params: the worker preset, the generated shape, the machine."""
    shape = plan_.shape
    latent_frames, tokens = loaded.latent_grid(shape.width, shape.height, shape.num_frames)
    reference = "{sample_steps} {sample_solver} shift {sample_shift} guide {sample_guide_scale}"
    return {
        **plan_.preset.to_worker(),
        "width": shape.width,
        "height": shape.height,
        "num_frames": shape.num_frames,
        "frames_requested": shape.frames_requested,
        "frames_official": shape.frames_official,
        "latent_frames": latent_frames,
        "tokens": tokens,
        "frame_rule": FRAME_RULE,
        "output_spec": shape.output_spec(plan_.fps),
        "video_seconds": round(shape.seconds(plan_.fps), 4),
        "spec_change": shape.spec_change(plan_.reference_shape) or "none",
        "scale_spatial": cfg.model.scale.spatial,
        "scale_temporal": cfg.model.scale.temporal,
        "scheduler": scheduler,
        "model": loaded.name,
        "model_path": loaded.source,
        "device": loaded.device.type,
        "device_name": device_label(loaded.device),
        "dtype": dtype_name(loaded.dtype),
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        **plan_.speed.params(),
        **plan_.worker.params(),
        "repeats": plan_.repeats,
        "torch_threads": plan_.threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "warmup_steps": plan_.warmup_steps,
        "reference_sampler": reference.format(**plan_.reference.to_worker()),
    }


def log_video_run(cfg: DictConfig, plan_: Plan, params: dict, request: GenerationRequest, generation: Generation,
                  result: VideoResult, reference: Any, tags: dict[str, str]) -> None:  # fmt: skip
    """One video's child run: params, metrics, the video and its grid, its schedule (and the side-by-side)."""
    name = f"{cfg.name} seed {request.seed}: {request.prompt[:48]}"
    with tracking.run(name, nested=True, tags=tags):
        mlflow.log_params(
            {**params, "prompt": request.prompt, "seed": request.seed, "negative_prompt": request.negative_prompt}
        )
        write_s = tracking.log_video(
            generation.frames, int(cfg.tracking.fps), int(cfg.tracking.grid_frames), mp4=bool(cfg.tracking.video)
        )
        mlflow.log_metrics(
            {**result.to_metrics(), "time_video_write_s": write_s, "guided_steps": generation.guided_steps}
        )
        tracking.log_step_times(generation.step_times)
        mlflow.log_dict(generation.schedule, "schedule.json")  # the timesteps and sigmas it sampled at
        tracking.log_config(cfg)
        mlflow.set_tag("memory_kind", generation.memory_kind)
        if reference is not None:
            log_side_by_side(cfg, plan_, generation.frames, reference, result)


def log_side_by_side(cfg: DictConfig, plan_: Plan, frames: Any, reference: Any, result: VideoResult) -> None:
    """baseline | this preset, same prompt and seed, labelled and enlarged for a person (display only)."""
    fps = plan_.fps
    psnr = result.score("psnr_db")
    ours = f"{plan_.name}, {result.wall_time_s:.3g} s" + (f", {psnr:.1f} dB" if psnr is not None else "")
    labels = [_label("baseline", plan_.reference_shape, fps), _label(ours, plan_.shape, fps)]
    tracking.log_comparison(side_by_side([reference, frames], labels),
                            side_by_side([reference, frames], labels, min_height=120, stacked=True),
                            fps, int(cfg.tracking.grid_frames), mp4=bool(cfg.tracking.video))  # fmt: skip


def _label(title: str, shape: Any, fps: int) -> str:
    """A side-by-side label: the title, the output, and what a scaled model's clip stands for."""
    return "\n".join(line for line in (title, shape.output_spec(fps), shape.stands_for()) if line)


def log_summary(summary: Summary, extra: dict[str, float]) -> None:
    """The preset run's figures (and ``extra``: warm-up, calibration, videos); NOISY is tagged and warned."""
    mlflow.log_metrics({**summary.to_metrics(), **extra})
    mlflow.set_tag("timing_noisy", {True: "true", False: "false", None: "unknown"}[summary.timing_noisy])
    if summary.timing_noisy:
        log.warning(
            "%s: NOISY timing, its %d generations spread %.0f%% (bound %.0f%%): another process is probably "
            "loading the machine",
            summary.name, sum(len(v.walls) for v in summary.videos), 100 * summary.spread,
            100 * summary.noise_bound,
        )  # fmt: skip


def log_pairing(result: PairedSpeedup, pairs: list[dict[str, Any]]) -> None:
    """Every pair's seconds (``pairing.json``) beside the speed-up they make."""
    mlflow.log_dict({"speedup": result.to_dict(), "pairs": pairs}, "pairing.json")


def log_calibration(ratios: tuple[float, ...], steps: int, key: str) -> None:
    """MagCache's ratios for this run, as a table and a plot."""
    mlflow.log_table({"step": list(range(len(ratios))), "ratio": list(ratios)}, "magcache_ratios.json")
    mlflow.log_figure(ratio_plot(ratios, steps), "magcache_ratios.png")
    mlflow.set_tag("magcache_ratios", f"magcache-{key}.json")
