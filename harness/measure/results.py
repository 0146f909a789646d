"""What measuring returns, typed: each video's result and a preset's summary (as diffusers returns
``WanPipelineOutput``, not a dict).

The names the figures carry in MLflow and on Optuna trials (``median_wall_time_s``, ``mean_psnr_db``, ...) are
spelled here only: a summary turns itself into metrics (:meth:`Summary.to_metrics`) and trial attributes
(:meth:`Summary.to_user_attrs`), and :class:`Recorded` reads a trial's attributes back.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from harness.measure.noise import relative_spread
from harness.measure.pairing import PairedSpeedup

SCORES = ("clip_score", "psnr_db", "ssim", "adherence_color", "adherence_shape", "adherence_direction")
# The MLflow runs table's headline columns: the time, its spread, the paired speed-up and the scores.
HEADLINE_METRICS = ("median_wall_time_s", "wall_time_spread", "speedup_vs_baseline", "mean_psnr_db", "mean_ssim",
                    "mean_clip_score")  # fmt: skip


@dataclass(frozen=True)
class VideoResult:
    """One prompt x seed: its stage times (medians over the repeats) and its scores."""

    prompt: str
    seed: int
    walls: tuple[float, ...]  # every repeat's generation time: text encoding + denoising + decoding
    text_encode_s: float
    denoise_s: float
    decode_s: float
    step_median_s: float
    peak_memory_mb: float
    video_seconds: float  # seconds of video the worker outputs
    scores: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def wall_time_s(self) -> float:
        return statistics.median(self.walls)

    def score(self, metric: str) -> float | None:
        return self.scores.get(metric)

    def to_metrics(self) -> dict[str, float]:
        """The video run's MLflow metrics."""
        metrics = {
            "wall_time_s": self.wall_time_s,
            "time_text_encode_s": self.text_encode_s,
            "time_denoise_s": self.denoise_s,
            "time_decode_s": self.decode_s,
            "time_step_median_s": self.step_median_s,
            "peak_memory_mb": self.peak_memory_mb,
            "time_per_video_second_s": self.wall_time_s / self.video_seconds,
            **self.scores,
        }
        if len(self.walls) > 1:
            metrics["wall_time_spread"] = relative_spread(list(self.walls))
        return metrics


@dataclass(frozen=True)
class Summary:
    """A preset measured on every prompt x seed: what it is, its videos, and the figures made of them."""

    name: str
    run_id: str | None
    is_baseline: bool
    output_spec: str
    spec_change: str
    size: str  # generated, W*H
    frames: int  # generated
    steps: int
    solver: str
    shift: float
    guidance: float
    videos: tuple[VideoResult, ...]
    noise_bound: float
    paired: PairedSpeedup | None = None
    noise_floor: str = ""  # the baseline's fidelity to itself, as harness.audit measured it ("" when it has not)

    @property
    def seconds_per_video(self) -> float:
        """The median generation time of its videos: what a study minimizes, and harness.run reports."""
        return statistics.median(v.wall_time_s for v in self.videos)

    @property
    def per_video_second_s(self) -> float:
        """Generation seconds per second of video the worker outputs (median over the videos)."""
        return statistics.median(v.wall_time_s / v.video_seconds for v in self.videos)

    @property
    def spread(self) -> float | None:
        """The spread of every generation's time (prompts x seeds x repeats), None with a single one."""
        return relative_spread([w for v in self.videos for w in v.walls])

    @property
    def timing_noisy(self) -> bool | None:
        spread = self.spread
        return None if spread is None else spread > self.noise_bound

    def mean(self, metric: str) -> float | None:
        """The mean of a score over the videos, None when a video lacks it."""
        values = [v.score(metric) for v in self.videos]
        return None if not values or None in values else statistics.fmean(values)

    def to_metrics(self) -> dict[str, float]:
        """The preset run's MLflow metrics (the paired speed-up's too, when paired)."""
        metrics = {
            "median_wall_time_s": self.seconds_per_video,
            "median_time_per_video_second_s": self.per_video_second_s,
            "median_step_time_s": statistics.median(v.step_median_s for v in self.videos),
            "max_peak_memory_mb": max(v.peak_memory_mb for v in self.videos),
            **{f"mean_{metric}": self.mean(metric) for metric in SCORES if self.mean(metric) is not None},
        }
        if self.spread is not None:
            metrics["wall_time_spread"] = self.spread
        return {**metrics, **(self.paired.to_metrics() if self.paired else {})}

    def to_user_attrs(self) -> dict[str, Any]:
        """What an Optuna trial keeps of it (the time is the trial's value)."""
        kept = ("median_wall_time_s", "median_step_time_s", "median_time_per_video_second_s", "wall_time_spread")
        metrics = self.to_metrics()
        attrs = {key: metrics[key] for key in (*kept, *(f"mean_{m}" for m in SCORES)) if key in metrics}
        if self.timing_noisy is not None:
            attrs["timing_noisy"] = self.timing_noisy
        return {**attrs, "generated": f"{self.size} x {self.frames} frames"}

    def baseline_scores(self) -> dict[str, float]:
        """The scores ratio floors are relative to, as the study keeps them (``baseline_<metric>``)."""
        return {f"baseline_{metric}": self.mean(metric) for metric in SCORES if self.mean(metric) is not None}


@dataclass(frozen=True)
class Recorded:
    """A trial's summary as Optuna kept it (:meth:`Summary.to_user_attrs`), read back."""

    attrs: Mapping[str, Any]

    def mean(self, metric: str) -> float | None:
        return self.attrs.get(f"mean_{metric}")

    @property
    def spread(self) -> float | None:
        return self.attrs.get("wall_time_spread")

    @property
    def noisy(self) -> bool:
        return bool(self.attrs.get("timing_noisy"))

    @property
    def per_video_second_s(self) -> float | None:
        return self.attrs.get("median_time_per_video_second_s")

    @property
    def measured(self) -> bool:
        """Whether the trial measured any video (a trial pruned before generating did not)."""
        return "median_wall_time_s" in self.attrs

    def headline(self) -> dict[str, float]:
        """Its headline metrics, as the MLflow runs table shows them."""
        return {key: self.attrs[key] for key in HEADLINE_METRICS if self.attrs.get(key) is not None}


def recorded(trial: Any) -> Recorded:
    """A trial's recorded summary."""
    return Recorded(trial.user_attrs)
