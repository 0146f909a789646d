"""Measure one preset: generate its videos, time them, score them; the results go to MLflow (``sink``).

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
from types import MappingProxyType
from typing import Any, Callable

import mlflow
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from harness.measure import noise_floor, sink, tracking
from harness.measure.calibration import MagCacheRatios
from harness.measure.pairing import PairedSpeedup, paired_speedup, preset_first
from harness.measure.plan import Plan, plan
from harness.measure.quality import ClipScorer, fidelity, match_reference
from harness.measure.references import ReferenceVideos
from harness.measure.results import Summary, VideoResult
from harness.pipeline.device import available_cpus, check_attention, resolve_device
from harness.pipeline.generate import Generation, GenerationRequest, generate
from harness.pipeline.levers import check_quant
from harness.pipeline.load import LoadedPipeline, load_pipeline, resolve_model
from harness.toy.adherence import adherence_metrics

log = logging.getLogger(__name__)


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

    def warm_up(self, loaded: LoadedPipeline, request: GenerationRequest, steps: int) -> float:
        """One short, unmeasured generation per pipeline and video shape (kernels, allocator, caches, and
        compilation when the pipeline is compiled); its seconds (0 when already warm)."""
        if steps <= 0 or request.shape.generated in loaded.warm_shapes:
            return 0.0
        started = time.perf_counter()
        generate(loaded, replace(request, steps=steps), self.solvers)
        loaded.warm_shapes.add(request.shape.generated)  # the pipeline is shared by every session of the process
        return time.perf_counter() - started


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


def measure_video(loaded: LoadedPipeline, request: GenerationRequest, repeats: int, solvers: dict) -> list[Generation]:
    """Generate a video ``repeats`` times."""
    return [generate(loaded, request, solvers) for _ in range(repeats)]


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


def measure_preset(cfg: DictConfig) -> Summary:
    """Measure the configured preset on every prompt x seed and log it all to MLflow.

    Args:
        cfg: the composed config.

    Returns:
        The parent run's summary (see ``measure_in_run``).

    Raises:
        ValueError: bad input (before anything is logged).
        harness.pipeline.load.ModelUnavailableError: the model's weights cannot be found.
    """
    cfg = resolve_model(cfg)  # once: every step below reads the same model
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
) -> tuple[dict[str, float], Any]:
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


def measure_in_run(
    cfg: DictConfig,
    plan_: Plan,
    session: Session,
    on_video: Callable[[int, VideoResult], None] | None = None,
    video_tags: dict[str, str] | None = None,
    paired: bool = False,
) -> Summary:
    """Measure a plan into the active MLflow run, one nested run per prompt x seed.

    Args:
        cfg: the composed config (logged as the run's config).
        plan_: the validated plan.
        session: pipeline, scorer, references.
        on_video: called after each video with its index and result; may raise (e.g. to prune a trial), which
            ends the runs as the exception dictates.
        video_tags: extra tags for each video's run.
        paired: generate the baseline beside each video (:class:`Pairing`) for a paired speed-up (not for the
            baseline itself, whose speed-up is 1 by definition).

    Returns:
        The preset's summary: its videos, their figures, and its paired speed-up (None when not paired).
    """
    _announce(plan_)
    pairing = Pairing(plan_.baseline(), session) if paired and not plan_.is_reference else None
    videos: list[VideoResult] = []
    spent = {"time_warmup_s": 0.0, "time_calibration_s": 0.0}  # never in the generation time
    tracking.log_config(cfg)
    mlflow.set_tag("is_baseline", str(plan_.is_reference).lower())
    requests = [plan_.request(prompt, seed) for prompt in plan_.prompts for seed in plan_.seeds]
    for request in tqdm(requests, desc=plan_.name + (" + baseline, paired" if pairing else ""), unit="video"):
        if plan_.speed.cache == "magcache":
            request = _calibrated(session, request, spent, first=not videos)
        spent["time_warmup_s"] += session.warm_up(session.loaded, request, plan_.warmup_steps)
        if pairing:
            spent["time_warmup_s"] += session.warm_up(
                session.plain, pairing.baseline_request(request), plan_.warmup_steps
            )
        videos.append(_one_video(cfg, plan_, session, request, pairing, video_tags, first=not videos))
        if on_video is not None:
            on_video(len(videos) - 1, videos[-1])
    summary = _summary(plan_, videos, pairing.result() if pairing else None)
    if cfg.quality.fidelity:  # the scale of its PSNR: how far the baseline is from itself
        summary = replace(summary, noise_floor=noise_floor.scale(cfg, session, plan_))
    sink.log_summary(summary, {**spent, "videos": len(videos)})
    if pairing:
        sink.log_pairing(summary.paired, pairing.pairs)
    return summary


def _one_video(
    cfg: DictConfig,
    plan_: Plan,
    session: Session,
    request: GenerationRequest,
    pairing: Pairing | None,
    tags: dict | None,
    first: bool,
) -> VideoResult:
    """Generate, time and score one prompt x seed, and log it as a child run."""
    if pairing is None:
        runs = measure_video(session.loaded, request, plan_.repeats, session.solvers)
    else:
        runs, baseline = pairing.measure(request, plan_.repeats)
        session.references.get(request, own_frames=baseline.frames)  # the baseline's video is the reference
    scores, reference = score_video(cfg, plan_, session, request, runs[0].frames)
    result = _result(request, runs, scores, plan_.shape.seconds(plan_.fps))
    params = sink.run_params(plan_, session.loaded, cfg, runs[0].scheduler)
    if first:
        mlflow.log_params(params)
    compare = reference if cfg.tracking.side_by_side and not plan_.is_reference else None
    sink.log_video_run(cfg, plan_, params, request, runs[0], result, compare, {"kind": "video", **(tags or {})})
    if compare is not None and first:
        sink.log_side_by_side(cfg, plan_, runs[0].frames, compare, result)  # the parent run shows its first one
    return result


def _result(request: GenerationRequest, runs: list[Generation], scores: dict, video_seconds: float) -> VideoResult:
    """One video's result: the median of each stage over its repeats, and its scores."""
    return VideoResult(
        prompt=request.prompt,
        seed=request.seed,
        walls=tuple(r.wall_s for r in runs),
        text_encode_s=statistics.median(r.text_encode_s for r in runs),
        denoise_s=statistics.median(r.denoise_s for r in runs),
        decode_s=statistics.median(r.decode_s for r in runs),
        step_median_s=statistics.median(r.step_median_s for r in runs),
        peak_memory_mb=max(r.peak_memory_mb for r in runs),
        video_seconds=video_seconds,
        scores=MappingProxyType(dict(scores)),
    )


def _summary(plan_: Plan, videos: list[VideoResult], paired: PairedSpeedup | None) -> Summary:
    shape = plan_.shape
    return Summary(
        name=plan_.name,
        run_id=_active_run_id(),
        is_baseline=plan_.is_reference,
        output_spec=shape.output_spec(plan_.fps),
        spec_change=shape.spec_change(plan_.reference_shape),
        size=f"{shape.width}*{shape.height}",
        frames=shape.num_frames,
        steps=plan_.preset.sample_steps,
        solver=plan_.preset.sample_solver,
        shift=plan_.preset.sample_shift,
        guidance=plan_.preset.sample_guide_scale,
        videos=tuple(videos),
        noise_bound=plan_.noise_bound,
        paired=paired,
    )


def _calibrated(session: Session, request: GenerationRequest, spent: dict, first: bool) -> GenerationRequest:
    """The request with its MagCache ratios (calibrated now if none are stored; the seconds go to ``spent``);
    the ratios are logged with the run's first video."""
    calibration = session.mag_ratios.get(request)
    spent["time_calibration_s"] += calibration.seconds
    if first:
        sink.log_calibration(calibration.ratios, request.steps, calibration.key)
    return replace(request, mag_ratios=calibration.ratios)


def _announce(plan_: Plan) -> None:
    load, cpus = os.getloadavg()[0], available_cpus()
    if load > cpus:
        log.warning("the machine is busy (load average %.1f on %d CPUs): timings will be noisy", load, cpus)
    shape, videos = plan_.shape, len(plan_.prompts) * len(plan_.seeds)
    log.info(
        "%s: %d prompt(s) x %d seed(s) x %d repeat(s) = %d generation(s) at %dx%d (WxH), %d frames (asked %d), "
        "%d steps %s",
        plan_.name, len(plan_.prompts), len(plan_.seeds), plan_.repeats, videos * plan_.repeats, shape.width,
        shape.height, shape.num_frames, shape.frames_requested, plan_.preset.sample_steps, plan_.preset.sample_solver,
    )  # fmt: skip


def _active_run_id() -> str | None:
    active = mlflow.active_run()
    return active.info.run_id if active else None
