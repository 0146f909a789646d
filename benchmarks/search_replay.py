"""Replay a study over the measured grid: what a search strategy finds, and what it pays for it.

A replayed study is a real Optuna study (the harness's samplers, the harness's pruning rules
from ``harness.study.engine.pruning``) whose trials read their videos from the grid instead of
generating them: every video a trial "generates" costs its measured generation-seconds, in
the order the harness would generate them, so pruned work and the baseline's reference
videos are paid for too. Feasibility and time are the grid's own measurements.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from harness.pipeline.levers import Speed
from harness.study.engine import space
from harness.study.engine.floors import Floor, best_feasible
from harness.study.engine.pruning import Cost, Gate, Rules, levers_key, prediction_error, set_floor_constraints
from harness.study.engine.samplers import make_sampler

STATES = optuna.trial.TrialState


@dataclass(frozen=True)
class Strategy:
    """A sampler and a pruning policy."""

    name: str
    sampler: str  # descent | tpe | gp | random (harness.study.engine.samplers)
    rules: Rules | None  # None: the single-video time rule the harness had before (1.25 x best)
    n_startup_trials: int = 6


@dataclass
class Replay:
    """One replayed study: per trial, what it cost and the best feasible time found so far."""

    strategy: str
    seed: int
    spent: list[float] = field(default_factory=list)  # generation-seconds after each trial
    best: list[float | None] = field(default_factory=list)  # judged time of the study's best after each trial
    best_single: list[float | None] = field(default_factory=list)  # its own measured time
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class Grid:
    """The measured grid, seen as the study sees it."""

    def __init__(self, grid: dict[str, Any], floors: list[Floor], key: Any):
        self.presets = grid["presets"]
        self.key = key
        self.floors = floors
        baseline = self.presets[key({n: grid["spec"]["baseline"][n] for n in grid["spec"]["space"]})]
        self.baseline_params = baseline["params"]
        self.baseline = {m: statistics.fmean(v[m] for v in baseline["videos"]) for m in ("clip_score", "psnr_db")}
        self.total_s = sum(v["wall_time_s"] for p in self.presets.values() for v in p["videos"])
        by_work: dict[tuple, list[float]] = {}
        for preset in self.presets.values():
            by_work.setdefault(self.work(preset), []).extend(v["wall_time_s"] for v in preset["videos"])
        self.work_time = {work: statistics.median(times) for work, times in by_work.items()}
        self.best_s = min(self.judged(p) for p in self.presets.values() if self.feasible(p))
        self.best_single_s = min(self.median(p) for p in self.presets.values() if self.feasible(p))

    @staticmethod
    def work(preset: dict[str, Any]) -> tuple[int, int]:
        """What a video costs: transformer calls and tokens (solver and shift do not change it)."""
        return preset["calls"], preset["tokens"]

    @staticmethod
    def median(preset: dict[str, Any]) -> float:
        """The preset's own measured time: the median of its videos."""
        return statistics.median(v["wall_time_s"] for v in preset["videos"])

    def judged(self, preset: dict[str, Any]) -> float:
        """The time a preset is judged by: the median of every grid video that did the same work. One preset's
        two videos carry the machine's noise (5-9% here); its work class's dozens of videos do not."""
        return self.work_time[self.work(preset)]

    def feasible(self, preset: dict[str, Any]) -> bool:
        """Meets every floor by the grid's own measurements (means over the preset's videos)."""
        means = {m: statistics.fmean(v[m] for v in preset["videos"]) for m in ("clip_score", "psnr_db")}
        return all(means[f.metric] >= f.threshold(self.baseline) for f in self.floors)


def replay(grid: Grid, dists: dict, strategy: Strategy, seed: int, budget_s: float, max_trials: int) -> Replay:
    """Run one study over the grid until it has spent ``budget_s`` generation-seconds or ``max_trials`` trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=make_sampler(strategy.sampler, seed, strategy.n_startup_trials),
        pruner=optuna.pruners.NopPruner(),
    )
    study.enqueue_trial(grid.baseline_params)
    result, spent = Replay(strategy.name, seed), 0.0
    while spent < budget_s and len(result.spent) < max_trials:
        trial = study.ask()
        params = space.suggest(trial, dists)
        preset = grid.presets[grid.key(params)]
        cost, outcome = _trial(study, trial, params, grid, strategy)
        spent += cost
        best = best_feasible(study)
        found = None if best is None else grid.presets[grid.key(best.params)]
        result.spent.append(spent)
        result.best.append(None if found is None else grid.judged(found))
        result.best_single.append(None if found is None else grid.median(found))
        result.outcomes.append({**outcome, "feasible": grid.feasible(preset), "time_s": grid.judged(preset)})
    return result


def _trial(
    study: optuna.Study, trial: optuna.Trial, params: dict, grid: Grid, strategy: Strategy
) -> tuple[float, dict]:
    """Run one trial as the harness's objective would; its generation-seconds and outcome."""
    preset, named = grid.presets[grid.key(params)], trial.number == 0
    rules = strategy.rules or Rules(quality=False, predict=False)
    gate = Gate.open(study, rules, grid.floors, named, videos=len(preset["videos"]))
    cost = Cost(preset["steps"], preset["calls"], preset["tokens"], levers_key(Speed()))
    trial.set_user_attr("cost", asdict(cost))
    same = gate.same_as(params) if strategy.rules else None
    if same is not None:
        gate.repeat(trial, same)
        study.tell(trial, state=STATES.PRUNED)
        return 0.0, {"state": "pruned", "rule": "repeat", "predicted_s": None}
    reason = gate.before(cost) if strategy.rules else None
    if reason:
        study.tell(trial, state=STATES.PRUNED)
        best_s = grid.judged(grid.presets[grid.key(gate.best.params)])
        return 0.0, {"state": "pruned", "rule": "predicted", "predicted_s": gate.predicted_s, "best_s": best_s}
    if named:  # the baseline: its scores are what ratio floors are relative to
        study.set_user_attr("baseline_clip_score", grid.baseline["clip_score"])
        study.set_user_attr("baseline_psnr_db", grid.baseline["psnr_db"])
        gate.baseline = dict(grid.baseline)
    spent = 0.0
    for video in preset["videos"]:
        spent += video["wall_time_s"]
        if strategy.rules:
            reason = gate.after_video(trial, video["wall_time_s"], video)
        else:
            reason = _old_rule(gate, video, named)
        if reason:
            if strategy.rules:  # as the harness now does; the old harness recorded nothing of a pruned trial
                set_floor_constraints(trial, gate.slacks())
                trial.set_user_attr("video_scores", gate.video_scores())
            study.tell(trial, state=STATES.PRUNED)
            return spent, {"state": "pruned", "rule": gate.rule or "time", "predicted_s": gate.predicted_s}
    trial.set_user_attr("video_scores", gate.video_scores())
    set_floor_constraints(trial, gate.slacks())
    median = statistics.median(v["wall_time_s"] for v in preset["videos"])
    study.tell(trial, median)
    error = prediction_error(gate.predicted_s, median)
    return spent, {"state": "complete", "rule": "", "predicted_s": gate.predicted_s, "prediction_error": error}


def _old_rule(gate: Gate, video: dict, named: bool) -> str | None:
    """The old rule (before pruning was noise-aware): one video slower than 1.25 x the best prunes."""
    gate.times.append(video["wall_time_s"])
    gate.scores.append(dict(video))
    if named or gate.best is None or video["wall_time_s"] <= 1.25 * gate.best.value:
        return None
    return "time: one video"
