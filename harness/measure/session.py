"""Measure one preset: generate its videos, time them, score them, log them to MLflow.

One parent MLflow run per preset (experiment), one child run per prompt x seed video.
The pipeline, the CLIP scorer and the reference videos are loaded once per process
(:class:`Session`) and shared by every preset a multirun or a study measures.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import diffusers
import mlflow
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from harness.measure import tracking
from harness.measure.calibration import MagCacheRatios
from harness.measure.figures import ratio_plot
from harness.measure.noise import relative_spread
from harness.measure.pairing import PairedSpeedup, paired_speedup, preset_first
from harness.measure.plan import Plan, plan
from harness.measure.quality import ClipScorer, fidelity, match_reference
from harness.measure.references import ReferenceVideos
from harness.measure.video import side_by_side
from harness.pipeline.device import available_cpus, check_attention, device_label, dtype_name, resolve_device
from harness.pipeline.generate import Generation, GenerationRequest, generate
from harness.pipeline.levers import check_quant
from harness.pipeline.load import LoadedPipeline, load_pipeline
from harness.preset import FRAME_RULE
from harness.toy.adherence import adherence_metrics

log = logging.getLogger(__name__)

_WARMED: set[tuple] = set()
SCORES = ("clip_score", "psnr_db", "ssim", "adherence_color", "adherence_shape", "adherence_direction")


@dataclass
class Session:
    """What measuring needs, loaded once per process: pipeline, CLIP scorer, references."""

    loaded: LoadedPipeline
    scorer: ClipScorer | None
    references: ReferenceVideos
    solvers: dict
    mag_ratios: MagCacheRatios  # MagCache's ratios for this pipeline, calibrated on first use

    @property
    def plain(self) -> LoadedPipeline:
        """The worker's own pipeline (no lever on its transformer): the baseline's, and the references'."""
        return self.references.loaded


def open_session(cfg: DictConfig, plan_: Plan) -> Session:
    """Load the pipeline and scorer (reused across calls) for a config.

    Raises:
        harness.pipeline.load.ModelUnavailableError: the weights cannot be found.
        ValueError: an attention backend this device cannot run.
    """
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    torch.set_num_threads(plan_.threads)
    check_quant(plan_.speed.quant, resolve_device(str(cfg.model.device)))  # before anything loads or opens
    loaded = load_pipeline(cfg.model, plan_.worker, plan_.speed)
    check_attention(plan_.speed.attention, loaded.device)  # before any run is opened
    asked = f"preset.size={plan_.preset.size!r}, frame_num={plan_.preset.frame_num}"
    loaded.check_shape(*plan_.shape.generated, asked)
    scorer = ClipScorer(cfg.model) if cfg.quality.clip else None
    folder = Path(cfg.paths.cache_dir) / "references"
    plain = load_pipeline(cfg.model, plan_.worker)  # the worker's own transformer: what every video is judged against
    references = ReferenceVideos(folder, plain, plan_.reference, plan_.reference_shape, solvers)
    mag_ratios = MagCacheRatios(folder, loaded, solvers)
    return Session(loaded=loaded, scorer=scorer, references=references, solvers=solvers, mag_ratios=mag_ratios)


def warm_up(loaded: LoadedPipeline, request: GenerationRequest, steps: int, solvers: dict) -> float:
    """One short, unmeasured generation per video shape and process (kernels, allocator,
    caches, and compilation when the pipeline is compiled).

    Returns:
        Its seconds (0 when this shape was already warm).
    """
    key = (id(loaded.pipe), request.shape.width, request.shape.height, request.shape.num_frames)
    if steps <= 0 or key in _WARMED:
        return 0.0
    started = time.perf_counter()
    generate(loaded, replace(request, steps=steps), solvers)
    _WARMED.add(key)
    return time.perf_counter() - started


def measure_video(
    loaded: LoadedPipeline, request: GenerationRequest, repeats: int, solvers: dict
) -> tuple[Generation, dict[str, float], list[float]]:
    """Generate a video ``repeats`` times; the first video, the median of each time, every wall time.

    Returns:
        The first generation, the median times (seconds) by stage, and each run's wall time.
    """
    runs = [generate(loaded, request, solvers) for _ in range(repeats)]
    return runs[0], stage_medians(runs), [r.wall_s for r in runs]


class Pairing:
    """The baseline generated beside each of a preset's videos, interleaved, for a paired speed-up.

    Every repeat of every prompt x seed is one pair: the preset's video and the baseline's (same prompt and
    seed), the preset first in every other pair (:func:`harness.measure.pairing.preset_first`).
    """

    def __init__(self, baseline: Plan, session: Session):
        self.baseline, self.session = baseline, session
        self.pairs: list[dict[str, Any]] = []

    def measure(self, request: GenerationRequest, repeats: int) -> tuple[list[Generation], Generation]:
        """The preset's ``repeats`` generations of a request, and the baseline's first video of it."""
        ours, theirs = [], []
        sides = [(ours, self.session.loaded, request), (theirs, self.session.plain, self.baseline_request(request))]
        for _ in range(repeats):
            first = preset_first(len(self.pairs))
            for runs, loaded, side in sides if first else sides[::-1]:
                runs.append(generate(loaded, side, self.session.solvers))
            self.pairs.append({"prompt": request.prompt, "seed": request.seed, "preset_first": first,
                               "preset_s": ours[-1].wall_s, "baseline_s": theirs[-1].wall_s})  # fmt: skip
        return ours, theirs[0]

    def baseline_request(self, request: GenerationRequest) -> GenerationRequest:
        return self.baseline.request(request.prompt, request.seed)

    def result(self) -> PairedSpeedup:
        return paired_speedup([p["baseline_s"] for p in self.pairs], [p["preset_s"] for p in self.pairs])


def stage_medians(runs: list[Generation]) -> dict[str, float]:
    """The median of each stage's time over repeated generations of one video (and their spread)."""
    medians = {
        "time_text_encode_s": statistics.median(r.text_encode_s for r in runs),
        "time_denoise_s": statistics.median(r.denoise_s for r in runs),
        "time_decode_s": statistics.median(r.decode_s for r in runs),
        "time_step_median_s": statistics.median(r.step_median_s for r in runs),
        "wall_time_s": statistics.median(r.wall_s for r in runs),
        "peak_memory_mb": max(r.peak_memory_mb for r in runs),
    }
    if len(runs) > 1:
        medians["wall_time_spread"] = relative_spread([r.wall_s for r in runs])
    return medians


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
    experiment_id = tracking.use_store(cfg)
    name = tracking.unique_run_name(experiment_id, run_title(plan_.name, plan_, session))
    with tracking.run(name, tags={"kind": "preset", "preset_name": plan_.name}):
        return measure_in_run(cfg, plan_, session, paired=plan_.pair)


def run_title(name: str, plan_: Plan, session: Session) -> str:
    """A run name that says what was measured: preset, model, output spec."""
    return f"{name} | {session.loaded.name} | {plan_.shape.output_spec(plan_.fps)}"


def score_video(
    cfg: DictConfig, plan_: Plan, session: Session, request: GenerationRequest, frames: Any
) -> tuple[dict, Any]:
    """CLIP score, toy-world adherence and fidelity to the reference video, as configured; and the reference
    video (None without fidelity)."""
    scores: dict[str, float] = {}
    reference = None
    if session.scorer is not None:
        scores["clip_score"] = session.scorer.score(frames, request.prompt)
    if cfg.model.get("world") == "toy":
        scores.update(adherence_metrics(frames, request.prompt))
    if cfg.quality.fidelity:
        reference = session.references.get(request, own_frames=frames if plan_.is_reference else None)
        scores.update(fidelity(match_reference(frames, reference.shape), reference, float(cfg.quality.psnr_cap_db)))
    return scores, reference


def _log_side_by_side(cfg: DictConfig, plan_: Plan, frames: Any, reference: Any, metrics: dict) -> None:
    """baseline | this preset, same prompt and seed, labelled and enlarged for a person (display only)."""
    fps = plan_.fps
    ours = f"{plan_.name}, {metrics['wall_time_s']:.3g} s" + (
        f", {metrics['psnr_db']:.1f} dB" if "psnr_db" in metrics else ""
    )
    labels = [_label("baseline", plan_.reference_shape, fps), _label(ours, plan_.shape, fps)]
    tracking.log_comparison(side_by_side([reference, frames], labels),
                            side_by_side([reference, frames], labels, min_height=120, stacked=True),
                            fps, int(cfg.tracking.grid_frames), mp4=bool(cfg.tracking.video))  # fmt: skip


def _label(title: str, shape: Any, fps: int) -> str:
    """A side-by-side label: the title, the output, and what a scaled model's clip stands for."""
    return "\n".join(line for line in (title, shape.output_spec(fps), shape.stands_for()) if line)


def _log_video_run(
    cfg: DictConfig,
    plan_: Plan,
    params: dict,
    request: GenerationRequest,
    generation: Generation,
    metrics: dict[str, float],
    reference: Any,
    tags: dict[str, str],
) -> str:
    """One video's child run: params, metrics, the video and its grid (and the side-by-side); returns its id."""
    name = f"{cfg.name} seed {request.seed}: {request.prompt[:48]}"
    with tracking.run(name, nested=True, tags=tags) as run:
        mlflow.log_params(
            {**params, "prompt": request.prompt, "seed": request.seed, "negative_prompt": request.negative_prompt}
        )
        metrics["time_video_write_s"] = tracking.log_video(
            generation.frames, int(cfg.tracking.fps), int(cfg.tracking.grid_frames), mp4=bool(cfg.tracking.video)
        )
        mlflow.log_metrics(metrics)
        tracking.log_step_times(generation.step_times)
        mlflow.log_dict(generation.schedule, "schedule.json")  # the timesteps and sigmas it sampled at
        tracking.log_config(cfg)
        mlflow.set_tag("memory_kind", generation.memory_kind)
        mlflow.log_metric("guided_steps", generation.guided_steps)
        if reference is not None:
            _log_side_by_side(cfg, plan_, generation.frames, reference, metrics)
    return run.info.run_id


def measure_in_run(
    cfg: DictConfig,
    plan_: Plan,
    session: Session,
    on_video: Callable[[int, dict[str, float]], None] | None = None,
    video_tags: dict[str, str] | None = None,
    paired: bool = False,
) -> dict[str, Any]:
    """Measure a plan into the active MLflow run, one nested run per prompt x seed.

    Args:
        cfg: the composed config (logged as the run's config).
        plan_: the validated plan.
        session: pipeline, scorer, references.
        on_video: called after each video with its index and metrics; may raise (e.g. to
            prune a trial), which ends the runs as the exception dictates.
        video_tags: extra tags for each video's run.
        paired: generate the baseline beside each video (:class:`Pairing`) for a paired speed-up (not for the
            baseline itself, whose speed-up is 1 by definition).

    Returns:
        Summary: name, run id, generated shape, sampler, median wall time, mean scores, and ``paired``: the
        paired speed-up (:class:`harness.measure.pairing.PairedSpeedup`) or None.
    """
    _announce(plan_)
    pairing = Pairing(plan_.baseline(), session) if paired and not plan_.is_reference else None
    rows: list[dict[str, float]] = []
    walls: list[float] = []
    warmup_s, params = 0.0, {}
    tracking.log_config(cfg)
    mlflow.set_tag("is_baseline", str(plan_.is_reference).lower())
    requests = [plan_.request(prompt, seed) for prompt in plan_.prompts for seed in plan_.seeds]
    calibration_s = 0.0
    for request in tqdm(requests, desc=plan_.name + (" + baseline, paired" if pairing else ""), unit="video"):
        if plan_.speed.cache == "magcache":
            request, seconds = _calibrated(session, request, first=not rows)
            calibration_s += seconds
        warmup_s += warm_up(session.loaded, request, plan_.warmup_steps, session.solvers)
        if pairing:
            warmup_s += warm_up(session.plain, pairing.baseline_request(request), plan_.warmup_steps, session.solvers)
        metrics, times, params = _one_video(cfg, plan_, session, request, params, pairing, video_tags)
        walls += times
        rows.append(metrics)
        if on_video is not None:
            on_video(len(rows) - 1, metrics)
    summary = _log_summary(plan_, rows, walls)
    # warm-up and MagCache calibration: never in wall time
    mlflow.log_metrics({"time_warmup_s": warmup_s, "time_calibration_s": calibration_s, "videos": len(rows)})
    summary["paired"] = _log_pairing(pairing)
    identity = {"name": plan_.name, "run_id": _active_run_id(), "is_baseline": plan_.is_reference}
    return {**identity, **_sampler_columns(plan_), **summary}


def _one_video(
    cfg: DictConfig,
    plan_: Plan,
    session: Session,
    request: GenerationRequest,
    params: dict,
    pairing: Pairing | None,
    tags: dict | None,
) -> tuple[dict, list[float], dict]:
    """Generate, time, score and log one prompt x seed; its metrics, every wall time, and the run's params."""
    if pairing is None:
        runs = [generate(session.loaded, request, session.solvers) for _ in range(plan_.repeats)]
    else:
        runs, baseline = pairing.measure(request, plan_.repeats)
        session.references.get(request, own_frames=baseline.frames)  # the baseline's video is the reference
    generation, metrics = runs[0], stage_medians(runs)
    first = not params
    if first:
        params = run_params(plan_, session.loaded, cfg, generation.scheduler)
        mlflow.log_params(params)
    metrics["time_per_video_second_s"] = metrics["wall_time_s"] / plan_.shape.seconds(plan_.fps)
    scores, reference = score_video(cfg, plan_, session, request, generation.frames)
    metrics.update(scores)
    compare = reference if cfg.tracking.side_by_side and not plan_.is_reference else None
    _log_video_run(cfg, plan_, params, request, generation, metrics, compare, {"kind": "video", **(tags or {})})
    if compare is not None and first:
        _log_side_by_side(cfg, plan_, generation.frames, compare, metrics)  # the parent run shows its first one
    return metrics, [r.wall_s for r in runs], params


def _calibrated(session: Session, request: GenerationRequest, first: bool) -> tuple[GenerationRequest, float]:
    """The request with its MagCache ratios (calibrated now if none are stored), and the seconds that took; the
    ratios are logged with the run's first video, as a table and a plot."""
    calibration = session.mag_ratios.get(request)
    if first:
        steps = list(range(len(calibration.ratios)))
        mlflow.log_table({"step": steps, "ratio": list(calibration.ratios)}, "magcache_ratios.json")
        mlflow.log_figure(ratio_plot(calibration.ratios, request.steps), "magcache_ratios.png")
        mlflow.set_tag("magcache_ratios", f"magcache-{calibration.key}.json")
    return replace(request, mag_ratios=calibration.ratios), calibration.seconds


def _log_pairing(pairing: Pairing | None) -> PairedSpeedup | None:
    """The paired speed-up, logged with every pair's seconds (``pairing.json``); None when not paired."""
    if pairing is None:
        return None
    result = pairing.result()
    mlflow.log_metrics(result.to_metrics())
    mlflow.log_dict({"speedup": result.to_dict(), "pairs": pairing.pairs}, "pairing.json")
    return result


def _log_summary(plan_: Plan, rows: list[dict[str, float]], walls: list[float]) -> dict[str, Any]:
    """The parent run's medians, means and timing noise, logged to MLflow; NOISY is warned."""
    summary = {**_aggregate(rows), **_noise(walls, plan_.noise_bound)}
    mlflow.log_metrics({k: v for k, v in summary.items() if k != "timing_noisy"})
    mlflow.set_tag("timing_noisy", {True: "true", False: "false", None: "unknown"}[summary["timing_noisy"]])
    if summary["timing_noisy"]:
        log.warning(
            "%s: NOISY timing, its %d generations spread %.0f%% (bound %.0f%%): another process is "
            "probably loading the machine",
            plan_.name,
            len(walls),
            100 * summary["wall_time_spread"],
            100 * plan_.noise_bound,
        )
    return summary


def _noise(walls: list[float], bound: float) -> dict[str, Any]:
    """The spread of every generation's wall time, and whether it exceeds the bound (None: one generation)."""
    measured = relative_spread(walls)
    if measured is None:
        return {"timing_noisy": None}
    return {"wall_time_spread": measured, "timing_noisy": measured > bound}


def _announce(plan_: Plan) -> None:
    load, cpus = os.getloadavg()[0], available_cpus()
    if load > cpus:
        log.warning("the machine is busy (load average %.1f on %d CPUs): timings will be noisy", load, cpus)
    shape, videos = plan_.shape, len(plan_.prompts) * len(plan_.seeds)
    log.info(
        "%s: %d prompt(s) x %d seed(s) x %d repeat(s) = %d generation(s) at %dx%d (WxH), %d frames (asked %d), "
        "%d steps %s",
        plan_.name,
        len(plan_.prompts),
        len(plan_.seeds),
        plan_.repeats,
        videos * plan_.repeats,
        shape.width,
        shape.height,
        shape.num_frames,
        shape.frames_requested,
        plan_.preset.sample_steps,
        plan_.preset.sample_solver,
    )


def _active_run_id() -> str | None:
    active = mlflow.active_run()
    return active.info.run_id if active else None


def _sampler_columns(plan_: Plan) -> dict[str, Any]:
    shape = plan_.shape
    return {
        "output_spec": shape.output_spec(plan_.fps),
        "spec_change": shape.spec_change(plan_.reference_shape),
        "size": f"{shape.width}*{shape.height}",
        "frames": shape.num_frames,
        "steps": plan_.preset.sample_steps,
        "solver": plan_.preset.sample_solver,
        "shift": plan_.preset.sample_shift,
        "guidance": plan_.preset.sample_guide_scale,
    }


def _aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    summary = {
        "median_wall_time_s": statistics.median(r["wall_time_s"] for r in rows),
        "median_time_per_video_second_s": statistics.median(r["time_per_video_second_s"] for r in rows),
        "median_step_time_s": statistics.median(r["time_step_median_s"] for r in rows),
        "max_peak_memory_mb": max(r["peak_memory_mb"] for r in rows),
    }
    for metric in SCORES:
        if all(metric in r for r in rows):
            summary[f"mean_{metric}"] = statistics.fmean(r[metric] for r in rows)
    return summary
