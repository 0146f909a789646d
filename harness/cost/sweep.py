"""Measure the knobs one at a time around the baseline, each point the median of a few generations."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig
from tqdm.auto import tqdm

from harness.measure.noise import relative_spread
from harness.measure.pairing import PairedSpeedup, paired_speedup, preset_first
from harness.measure.plan import Plan
from harness.measure.session import Session
from harness.pipeline.generate import generate
from harness.preset import resolve_shape, validate_preset

# The proposal's claimed speed-ups, each against the baseline preset, and the knob it turns.
CLAIMS = {
    "steps 25 -> 18": (0.40, {"steps": 18}),
    "solver unipc -> euler": (0.25, {"solver": "euler"}),
    "shift 5 -> 3": (0.15, {"shift": 3.0}),
    "frames 83 -> 64": (0.25, {"frames": 64}),
    "size 480*832 -> 384*640": (0.35, {"size": "384*640"}),
}


@dataclass
class Point:
    """One measured configuration: median wall and denoise times over repeats."""

    label: str
    steps: int
    passes: float  # transformer passes per step: 2 with both guidance passes on every step
    tokens: int
    wall_s: float
    denoise_s: float
    step_s: float
    spread: float  # relative spread of the wall times over repeats (harness.measure.noise.relative_spread)
    stages: dict[str, float]


class Sweep:
    """Generates the baseline with one knob changed, at the model's own scale."""

    def __init__(self, cfg: DictConfig, plan_: Plan, session: Session, repeats: int):
        self.cfg, self.plan, self.session, self.repeats = cfg, plan_, session, repeats

    def _request(self, steps: int, solver: str, shift: float, guidance: float, size: str, frames: int) -> Any:
        base = self.plan.preset
        preset = validate_preset({**base.to_worker(), "size": size, "frame_num": frames}, self.session.solvers)
        shape = resolve_shape(preset, self.cfg.model.scale.spatial, self.cfg.model.scale.temporal)
        request = self.plan.request(self.plan.prompts[0], 0)
        return replace(request, shape=shape, steps=steps, solver=solver, shift=shift, guidance=guidance)

    def _settings(self, knobs: dict[str, Any]) -> dict[str, Any]:
        base = self.plan.preset
        return {
            "steps": base.sample_steps,
            "solver": base.sample_solver,
            "shift": base.sample_shift,
            "guidance": base.sample_guide_scale,
            "size": base.size,
            "frames": base.frame_num,
            **knobs,
        }

    def measure_group(self, configs: list[tuple[str, dict[str, Any]]]) -> list[Point]:
        """Each configuration (label, knobs changed from the baseline): the median of ``repeats`` generations.

        After a warm-up of each, the configurations are generated round-robin, one of each per round, every
        other round in reverse order: on a machine whose speed drifts over minutes (a shared CPU), every
        configuration of a group sees the same drift, so it does not pass for a difference between them, as
        it would measured one after another; and none always runs first in its round.
        """
        requests = [self._request(**self._settings(knobs)) for _, knobs in configs]
        loaded, solvers = self.session.loaded, self.session.solvers
        self._warm(requests)
        runs: list[list[Any]] = [[] for _ in requests]
        for round_ in range(self.repeats):
            order = list(zip(runs, requests))
            for done, request in order if round_ % 2 == 0 else reversed(order):
                done.append(generate(loaded, request, solvers))
        return [self._point(label, request, done) for (label, _), request, done in zip(configs, requests, runs)]

    def _warm(self, requests: list[Any]) -> None:
        """Generate each shape once, two steps, before any is timed (its first run pays for allocation)."""
        for request in requests:
            generate(self.session.loaded, replace(request, steps=2), self.session.solvers)

    def _point(self, label: str, request: Any, runs: list[Any]) -> Point:
        walls = [r.wall_s for r in runs]
        shape = request.shape
        return Point(
            label=label,
            steps=request.steps,
            # per step, as the worker runs them: both at any guidance (official), the second only while guided
            passes=(request.steps + request.guided_steps) / request.steps,
            tokens=self.session.loaded.latent_grid(shape.width, shape.height, shape.num_frames)[1],
            wall_s=statistics.median(walls),
            denoise_s=statistics.median(r.denoise_s for r in runs),
            step_s=statistics.median(statistics.median(r.step_times[1:] or r.step_times) for r in runs),
            spread=relative_spread(walls) or 0.0,
            stages={
                "text encoding": statistics.median(r.text_encode_s for r in runs),
                "denoising": statistics.median(r.denoise_s for r in runs),
                "VAE decode": statistics.median(r.decode_s for r in runs),
            },
        )

    def knobs(self) -> dict[str, list[Point]]:
        """Every knob across its range (``audit`` config), grouped by knob, each group measured round-robin."""
        audit, base = self.cfg.audit, self.plan.preset
        groups = {
            "solver": [{"solver": s} for s in ("unipc", "dpm++", "euler")],
            "shift": [{"shift": s} for s in (1.0, 3.0, 5.0, 8.0)],
            "steps": [{"steps": s} for s in audit.steps],
            "tokens": [{"size": size, "frames": f} for size in audit.sizes for f in audit.frames],
            "guidance": [{"guidance": g} for g in (1.0, base.sample_guide_scale)],
        }
        points: dict[str, list[Point]] = {}
        for group, configs in tqdm(groups.items(), desc="audit", unit="knob"):
            labelled = [(", ".join(f"{k}={v}" for k, v in knobs.items()), knobs) for knobs in configs]
            points[group] = self.measure_group(labelled)
        return points

    def claims(self, rounds: int) -> tuple[Point, dict[str, Point], dict[str, PairedSpeedup]]:
        """The baseline, the baseline with each claimed knob turned, and each claim's paired speed-up.

        Paired as ``harness.run`` pairs a preset: in each of ``rounds`` rounds the baseline is generated beside
        each turned knob, alternating which goes first, so a load that comes and goes falls on both sides; a
        claim's speed-up is the median of its pairs' ratios, with a 95% interval from
        :data:`harness.measure.pairing.MIN_PAIRS` rounds on.
        """
        baseline_request = self._request(**self._settings({}))
        turned = {name: self._request(**self._settings(knobs)) for name, (_, knobs) in CLAIMS.items()}
        loaded, solvers = self.session.loaded, self.session.solvers
        self._warm([baseline_request, *turned.values()])
        beside: dict[str, list[Any]] = {name: [] for name in turned}
        runs: dict[str, list[Any]] = {name: [] for name in turned}
        videos = rounds * len(turned) * 2
        print(f"claims: {rounds} rounds x {len(turned)} claims x 2 (the baseline beside each) = {videos} videos")
        for pair_index in tqdm(range(rounds), desc="claims", unit="round"):
            for name, request in turned.items():
                pair = [(runs[name], request), (beside[name], baseline_request)]
                for done, each in pair if preset_first(pair_index) else reversed(pair):
                    done.append(generate(loaded, each, solvers))
        baseline = self._point("baseline", baseline_request, [run for done in beside.values() for run in done])
        speedups = {
            name: paired_speedup([r.wall_s for r in beside[name]], [r.wall_s for r in runs[name]]) for name in turned
        }
        return baseline, {name: self._point(name, turned[name], runs[name]) for name in turned}, speedups
