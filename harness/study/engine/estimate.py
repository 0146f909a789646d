"""What a study session will cost, said before it starts, and how far off that was, said when it ends.

The estimate is fitted to warm measurements at the baseline's shape: after a warm-up, 2-step and 6-step
generations (the median of two each) give the seconds per step and per video; scoring and writing one video
gives the harness's own seconds per video. It counts the trials left (the enqueued presets at their own steps,
searched ones at the middle of the space's steps) and the pairing at the session's end. Pruning makes a session
cheaper than this; a busy machine dearer. The session's end prints the estimate beside what it took.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig

from harness.measure.plan import plan
from harness.measure.quality import fidelity
from harness.measure.session import Session, open_session
from harness.measure.video import write_mp4
from harness.pipeline.device import device_label, dtype_name
from harness.pipeline.generate import generate
from harness.study.engine.enqueue import preset_params

SHORT, LONG = 2, 6  # steps of the two timed generations


@dataclass(frozen=True)
class Estimate:
    """A session's expected seconds, and what they were made of."""

    per_step_s: float  # one denoising step at the baseline's shape (both guidance passes)
    fixed_s: float  # a video's seconds whatever its steps (text encoding, decoding)
    overhead_s: float  # the harness's own seconds per video (scoring, the mp4, the frame grid)
    videos: int  # videos the session generates: trials left x prompts x seeds, and the closing pairs
    seconds: float

    def line(self, remaining: int, done: int, prompts: int, seeds: int) -> str:
        """The opening line a person reads before the work starts."""
        return (
            f"{remaining} trial(s) to run ({done} done) x {prompts} prompt(s) x {seeds} seed(s), and the closing "
            f"pairing with the baseline: {self.videos} videos, about {self.seconds / 60:.1f} min "
            f"({self.per_step_s:.3f} s/step and {self.fixed_s + self.overhead_s:.2f} s per video beside the steps, "
            f"measured warm at the baseline's shape; pruning makes it less, a busy machine more)"
        )


def opening_estimate(cfg: DictConfig, dists: dict, remaining: int, study: optuna.Study):
    """Fit the estimate to warm measurements and count the session's work.

    Returns:
        The :class:`Estimate` and a line naming the model and machine it was measured on.
    """
    plan_ = plan(cfg)
    session = open_session(cfg, plan_)
    request = replace(plan_.request(plan_.prompts[0], plan_.seeds[0]), steps=SHORT)
    generate(session.loaded, request, session.solvers)  # warm-up, not counted
    short = statistics.median(generate(session.loaded, request, session.solvers).wall_s for _ in range(2))
    runs = [generate(session.loaded, replace(request, steps=LONG), session.solvers) for _ in range(2)]
    per_step = max((statistics.median(r.wall_s for r in runs) - short) / (LONG - SHORT), 1e-6)
    fixed = max(short - SHORT * per_step, 0.0)
    overhead = _overhead(cfg, session, request.prompt, runs[0].frames)
    videos_per_trial = len(plan_.prompts) * len(plan_.seeds)
    steps = _steps_left(cfg, dists, remaining, study)
    pairs = 2 * int(cfg.search.pair_repeats) * videos_per_trial if cfg.search.drift_check else 0
    seconds = sum(videos_per_trial * (fixed + overhead + per_step * s) for s in steps)
    seconds += pairs * (fixed + overhead + per_step * plan_.preset.sample_steps)
    loaded = session.loaded
    machine = f"Measured with model `{loaded.name}` ({dtype_name(loaded.dtype)}) on {device_label(loaded.device)}."
    return Estimate(per_step, fixed, overhead, len(steps) * videos_per_trial + pairs, seconds), machine


def _overhead(cfg: DictConfig, session: Session, prompt: str, frames: np.ndarray) -> float:
    """Seconds the harness spends on a video beside generating it: its scores and its mp4 (nothing is stored)."""
    started = time.perf_counter()
    if session.scorer is not None:
        session.scorer.score(frames, prompt)
    if cfg.quality.fidelity:
        fidelity(frames, frames)
    if cfg.tracking.video:
        with tempfile.TemporaryDirectory() as folder:
            write_mp4(frames, Path(folder) / "video.mp4", int(cfg.tracking.fps))
    return time.perf_counter() - started


def _steps_left(cfg: DictConfig, dists: dict, remaining: int, study) -> list[int]:
    """The steps of each trial left: the enqueued presets not measured yet at their own, the rest at the middle
    of the space's steps."""
    measured = {t.user_attrs.get("preset_name") for t in study.get_trials(deepcopy=False)}
    named = [name for name in (cfg.search.enqueue or []) if name not in measured][:remaining]
    space = dists.get("sample_steps")
    middle = (space.low + space.high) / 2 if isinstance(space, optuna.distributions.IntDistribution) else None
    steps = []
    for name in named:
        params = preset_params(cfg, dists, name)
        steps.append(params.get("sample_steps", cfg.preset.sample_steps))
    return steps + [middle or cfg.preset.sample_steps] * (remaining - len(named))


def closing_line(study: optuna.Study, estimate: Estimate, took_s: float) -> str:
    """How far the opening estimate was from what the session took; also kept on the study (``estimates``)."""
    error = estimate.seconds / took_s - 1
    record = {**asdict(estimate), "took_s": took_s, "error": error}
    study.set_user_attr("estimates", [*study.user_attrs.get("estimates", []), record])
    return (
        f"the opening estimate said {estimate.seconds / 60:.1f} min; this session took {took_s / 60:.1f} min "
        f"(the estimate was {abs(error):.0%} {'low' if error < 0 else 'high'})"
    )
