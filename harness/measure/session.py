"""Measure one preset: generate its videos, time them, score them, log them to MLflow.

One parent MLflow run per preset (experiment), one child run per prompt x seed video.
Everything that can be wrong with the input is checked before any run is opened, so a
bad preset leaves nothing half-written behind.
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import diffusers
import mlflow
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from harness.measure import tracking
from harness.pipeline.generate import Generation, GenerationRequest, generate
from harness.pipeline.load import LoadedPipeline, check_attention, load_pipeline, resolve_model
from harness.preset import FRAME_RULE, Preset, VideoShape, read_preset_file, resolve_shape, validate_preset
from harness.measure.quality import ClipScorer, ReferenceVideos, fidelity, same_sampler
from harness.pipeline.levers import Speed

log = logging.getLogger(__name__)

_WARMED: set[tuple] = set()


@dataclass(frozen=True)
class Plan:
    """A validated measurement: what to generate and how."""

    name: str
    preset: Preset
    reference: Preset
    shape: VideoShape
    prompts: list[str]
    seeds: list[int]
    negative_prompt: str
    repeats: int
    warmup_steps: int  # 0: no warm-up
    speed: Speed = Speed()


def _positive_int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}")
    return value


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
    shape = resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal)
    prompts = list(cfg.prompts.texts)
    if not prompts or not all(isinstance(text, str) and text.strip() for text in prompts):
        raise ValueError(f"prompts.texts={prompts!r} must be a non-empty list of non-empty strings")
    seeds = list(cfg.prompts.seeds)
    if not seeds:
        raise ValueError("prompts.seeds=[] must list at least one integer seed")
    for seed in seeds:
        _positive_int("prompts.seeds[]", seed, 0)
    repeats = _positive_int("timing.repeats", cfg.timing.repeats, 1)
    speed = Speed.from_config(cfg.speed)  # before anything loads
    warmup_steps = _positive_int("timing.warmup_steps", cfg.timing.warmup_steps, 1) if cfg.timing.warmup else 0
    result = Plan(
        name=str(cfg.name),
        preset=preset,
        reference=reference,
        shape=shape,
        prompts=prompts,
        seeds=seeds,
        negative_prompt=str(cfg.prompts.negative_prompt or ""),
        repeats=repeats,
        warmup_steps=warmup_steps,
        speed=speed,
    )
    if speed.compile != "off" and not warmup_steps:
        raise ValueError(f"speed.compile={speed.compile!r} needs timing.warmup=true: compilation would be timed as generation")
    return result


def _request(plan_: Plan, prompt: str, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=plan_.negative_prompt,
        seed=seed,
        shape=plan_.shape,
        steps=plan_.preset.sample_steps,
        guidance=plan_.preset.sample_guide_scale,
        solver=plan_.preset.sample_solver,
        shift=plan_.preset.sample_shift,
        speed=plan_.speed,
    )


def warm_up(loaded: LoadedPipeline, request: GenerationRequest, steps: int, solvers: dict) -> float:
    """One short, unmeasured generation per video shape and process (kernels, allocator,
    caches, and compilation when the pipeline is compiled).

    Returns:
        Its seconds (0 when this shape was already warm).
    """
    key = (id(loaded.pipe), request.shape.width, request.shape.height, request.shape.num_frames)
    if steps <= 0 or key in _WARMED:
        return 0.0
    short = GenerationRequest(**{**request.__dict__, "steps": steps})
    started = time.perf_counter()
    generate(loaded, short, solvers)
    _WARMED.add(key)
    return time.perf_counter() - started


def measure_video(loaded: LoadedPipeline, request: GenerationRequest, repeats: int, solvers: dict) -> tuple[Generation, dict[str, float]]:
    """Generate a video ``repeats`` times; the first video, and the median of each time.

    Returns:
        The first generation and the median times (seconds) by stage.
    """
    runs = [generate(loaded, request, solvers) for _ in range(repeats)]
    medians = {
        "time_text_encode_s": statistics.median(r.text_encode_s for r in runs),
        "time_denoise_s": statistics.median(r.denoise_s for r in runs),
        "time_decode_s": statistics.median(r.decode_s for r in runs),
        "time_step_median_s": statistics.median(r.step_median_s for r in runs),
        "wall_time_s": statistics.median(r.wall_s for r in runs),
        "peak_memory_mb": max(r.peak_memory_mb for r in runs),
    }
    return runs[0], medians


def _params(plan_: Plan, loaded: LoadedPipeline, cfg: DictConfig, scheduler: str) -> dict[str, Any]:
    shape = plan_.shape
    latent_frames, tokens = loaded.latent_grid(shape.width, shape.height, shape.num_frames)
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
        "scale_spatial": cfg.model.scale.spatial,
        "scale_temporal": cfg.model.scale.temporal,
        "scheduler": scheduler,
        "model": loaded.name,
        "model_path": loaded.source,
        "device": loaded.device.type,
        "device_name": torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        **plan_.speed.params(),
        "repeats": plan_.repeats,
        "warmup_steps": plan_.warmup_steps,
        "reference_sampler": "{sample_steps} {sample_solver} shift {sample_shift} guide {sample_guide_scale}".format(**plan_.reference.to_worker()),
    }


@dataclass
class Session:
    """What measuring needs, loaded once per process: pipeline, CLIP scorer, references."""

    loaded: LoadedPipeline
    scorer: ClipScorer | None
    references: ReferenceVideos
    solvers: dict


def open_session(cfg: DictConfig, plan_: Plan) -> Session:
    """Load the pipeline and scorer (reused across calls) for a config.

    Raises:
        harness.pipeline.load.ModelUnavailableError: the weights cannot be found.
    """
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    loaded = load_pipeline(cfg.model, plan_.speed.compile)
    check_attention(plan_.speed.attention, loaded.device)  # before any run is opened
    scorer = ClipScorer(cfg.model) if cfg.quality.clip else None
    references = ReferenceVideos(Path(cfg.paths.cache_dir) / "references", loaded, plan_.reference, solvers)
    return Session(loaded=loaded, scorer=scorer, references=references, solvers=solvers)


def measure_preset(cfg: DictConfig) -> dict[str, Any]:
    """Measure the configured preset on every prompt x seed and log it all to MLflow.

    Args:
        cfg: the composed config.

    Returns:
        The parent run's summary (see ``measure_in_run``).

    Raises:
        ValueError: bad input (before anything is logged).
        harness.pipeline.load.ModelUnavailableError: the model's weights cannot be found.
    """
    plan_ = plan(cfg)
    session = open_session(cfg, plan_)
    tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    with tracking.run(plan_.name, tags={"kind": "preset", "preset_name": plan_.name}):
        return measure_in_run(cfg, plan_, session)


def measure_in_run(
    cfg: DictConfig,
    plan_: Plan,
    session: Session,
    on_video: Callable[[int, dict[str, float]], None] | None = None,
    video_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Measure a plan into the active MLflow run, one nested run per prompt x seed.

    Args:
        cfg: the composed config (logged as the run's config).
        plan_: the validated plan.
        session: pipeline, scorer, references.
        on_video: called after each video with its index and metrics; may raise (e.g. to
            prune a trial), which ends the runs as the exception dictates.
        video_tags: extra tags for each video's run.

    Returns:
        Summary: name, run id, generated shape, sampler, median wall time, mean scores.
    """
    parent = mlflow.active_run()
    loaded, solvers, shape = session.loaded, session.solvers, plan_.shape
    videos = len(plan_.prompts) * len(plan_.seeds)
    log.info(
        "%s: %d prompt(s) x %d seed(s) x %d repeat(s) = %d generation(s) at %dx%d (WxH), %d frames (asked %d), %d steps %s",
        plan_.name, len(plan_.prompts), len(plan_.seeds), plan_.repeats, videos * plan_.repeats,
        shape.width, shape.height, shape.num_frames, shape.frames_requested,
        plan_.preset.sample_steps, plan_.preset.sample_solver,
    )
    rows: list[dict[str, float]] = []
    warmup_s = 0.0
    params = None
    tracking.log_config(cfg)
    with tqdm(total=videos, desc=plan_.name, unit="video") as progress:
        for prompt in plan_.prompts:
            for seed in plan_.seeds:
                request = _request(plan_, prompt, seed)
                warmup_s += warm_up(loaded, request, plan_.warmup_steps, solvers)
                generation, times = measure_video(loaded, request, plan_.repeats, solvers)
                if params is None:
                    params = _params(plan_, loaded, cfg, generation.scheduler)
                    mlflow.log_params(params)
                tags = {"kind": "video", **(video_tags or {})}
                with tracking.run(f"{plan_.name} seed {seed}: {prompt[:48]}", nested=True, tags=tags):
                    mlflow.log_params({**params, "prompt": prompt, "seed": seed, "negative_prompt": plan_.negative_prompt})
                    metrics = dict(times)
                    metrics["time_video_write_s"] = tracking.log_video(generation.frames, int(cfg.tracking.fps), int(cfg.tracking.grid_frames))
                    if session.scorer is not None:
                        metrics["clip_score"] = session.scorer.score(generation.frames, prompt)
                    if cfg.model.get("world") == "toy":
                        metrics.update(toy_adherence(generation.frames, prompt))
                    if cfg.quality.fidelity:
                        is_reference = same_sampler(plan_.preset, plan_.reference) and not plan_.speed.changes_output
                        own = generation.frames if is_reference else None
                        reference = session.references.get(request, own_frames=own)
                        metrics.update(fidelity(generation.frames, reference, float(cfg.quality.psnr_cap_db)))
                    mlflow.log_metrics(metrics)
                    tracking.log_step_times(generation.step_times)
                    tracking.log_config(cfg)
                    mlflow.set_tag("memory_kind", generation.memory_kind)
                    mlflow.log_metric("guided_steps", generation.guided_steps)
                rows.append(metrics)
                progress.update()
                if on_video is not None:
                    on_video(len(rows) - 1, metrics)
    summary = _aggregate(rows)
    mlflow.log_metrics(summary)
    mlflow.log_metric("time_warmup_s", warmup_s)  # includes compilation; never in wall time
    mlflow.log_metric("videos", len(rows))
    return {
        "name": plan_.name,
        "run_id": parent.info.run_id if parent else None,
        "size": f"{shape.width}*{shape.height}",
        "frames": shape.num_frames,
        "steps": plan_.preset.sample_steps,
        "solver": plan_.preset.sample_solver,
        "shift": plan_.preset.sample_shift,
        "guidance": plan_.preset.sample_guide_scale,
        **summary,
    }


def toy_adherence(frames: Any, prompt: str) -> dict[str, float]:
    """1/0 per named colour, shape and direction shown (toy world captions only)."""
    from harness import toy_world

    try:
        found = toy_world.adherence(frames, prompt)
    except ValueError:  # not a world caption: nothing to check against
        return {}
    return {f"adherence_{key}": float(found[f"{key}_ok"]) for key in ("color", "shape", "direction")}


def _aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    summary = {
        "median_wall_time_s": statistics.median(r["wall_time_s"] for r in rows),
        "median_step_time_s": statistics.median(r["time_step_median_s"] for r in rows),
        "max_peak_memory_mb": max(r["peak_memory_mb"] for r in rows),
    }
    for metric in ("clip_score", "psnr_db", "ssim", "adherence_color", "adherence_shape", "adherence_direction"):
        if all(metric in r for r in rows):
            summary[f"mean_{metric}"] = statistics.fmean(r[metric] for r in rows)
    return summary
