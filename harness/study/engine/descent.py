"""Descent from the baseline: a sampler for "the cheapest preset that still makes the baseline's video".

The floors are fidelity to the baseline, so feasible presets lie around it. This sampler
walks down from the cheapest feasible presets measured so far (the baseline first): it
proposes their untried neighbours, one knob one notch away (steps by about 12%), moves that cut the work first
(fewer steps, frames or pixels, guidance off), then moves that cost the same (another solver,
shift or guidance) and may open a cheaper path. A feasible neighbour that does less work
becomes the new frontier. A move to an output at least as small and short as one that missed a fidelity floor is
not proposed at all (the pruning gate would record it as a predicted failure; proposing it only spends a
trial). A move to an output size or length that already broke a floor one
knob away from a feasible trial, and that no feasible trial has, goes last: fidelity is scored
against the baseline's own video, so a smaller or shorter video that lost it at 18 steps loses
it at 12 too, and re-trying it at every step count spent half a study. (Steps, solver, shift
and guidance interact: 13 steps that fail with one solver may hold with another, so their
failures are not held against them.) When no neighbour is left, Optuna's TPE proposes. The
seed orders moves of equal rank.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from harness.preset import parse_size
from harness.study.engine.floors import baseline_trial, feasible, work
from harness.study.engine.pruning import dominating_failure
from harness.study.engine.space import inert

CHEAPER_WHEN_LOWER = ("sample_steps", "frame_num", "guidance_stop")
OUTPUT_SPEC = ("size", "frame_num")  # what the worker delivers: losing it loses fidelity whatever else changes
NOTCH = 0.12  # an integer knob (steps) moves by about this share of its value, on its distribution's grid


class DescentSampler(optuna.samplers.BaseSampler):
    """Propose untried one-notch neighbours of the cheapest feasible trials; TPE when there are none."""

    def __init__(self, seed: int, n_startup_trials: int, one_pass_at_guidance_one: bool = True):
        """Args:
        seed: orders moves of equal rank (and seeds the TPE fallback).
        n_startup_trials: the TPE fallback's random trials.
        one_pass_at_guidance_one: guidance <= 1 runs one transformer pass per step (diffusers); the official
            loop runs two whatever the scale, so lowering guidance to 1 then cuts no work.
        """
        self._rng = random.Random(seed)
        self._one_pass_at_guidance_one = one_pass_at_guidance_one
        self._fallback = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, BaseDistribution]:
        return optuna.search_space.intersection_search_space(study.get_trials(deepcopy=False))

    def sample_relative(self, study: optuna.Study, trial: Any, space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not space:
            return {}
        # a trial that failed with a reason was tried; one whose process was killed (no reason) was not. Workers
        # propose under the study's lock, so a running trial's values are already stored.
        trials = study.get_trials(deepcopy=False)
        tried = [t.params for t in trials if t.state != optuna.trial.TrialState.FAIL or "fail_reason" in t.user_attrs]
        for params in self._moves(trials, space):
            if params not in tried:
                return params
        fallback_space = self._fallback.infer_relative_search_space(study, trial)
        return self._fallback.sample_relative(study, trial, fallback_space)

    def sample_independent(self, study: optuna.Study, trial: Any, name: str, dist: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, name, dist)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self._fallback.after_trial(study, trial, state, values)

    def _moves(
        self, trials: list[optuna.trial.FrozenTrial], space: dict[str, BaseDistribution]
    ) -> list[dict[str, Any]]:
        """The frontier's neighbours: work-cutting moves first, then same-work moves, then moves to output sizes
        and lengths that broke a floor before; each group shuffled."""
        frontier = _frontier(trials, space)
        doubtful_values = _floor_breakers(trials, space)
        lost = _lost_outputs(trials)
        cheaper, same, doubtful = [], [], []
        for params in frontier:
            for key, dist in space.items():
                if inert(key, params):
                    continue  # moving a switched-off cache's setting makes the same video again
                for value in _neighbours(params[key], dist):
                    move = {**params, key: value}
                    rank = _work_change(key, params[key], value, self._one_pass_at_guidance_one)
                    if rank > 0 or lost(move):
                        continue
                    if (key, value) in doubtful_values:
                        doubtful.append(move)
                    else:
                        (cheaper if rank < 0 else same).append(move)
        for group in (cheaper, same, doubtful):
            self._rng.shuffle(group)
        return cheaper + same + doubtful


def _frontier(trials: list[optuna.trial.FrozenTrial], space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    """The feasible trials that do the least work (transformer calls x tokens, else their time)."""
    measured = [t for t in trials if feasible(t) and set(space) <= set(t.params)]
    if not measured:
        return []

    costed = [t for t in measured if t.user_attrs.get("cost")]
    if costed:  # work is comparable only between trials that recorded it (older studies did not)
        least = min(work(t) for t in costed)
        return [{k: t.params[k] for k in space} for t in costed if work(t) == least]
    fastest = min(measured, key=lambda t: t.value)
    return [{k: fastest.params[k] for k in space}]


def _lost_outputs(trials: list[optuna.trial.FrozenTrial]) -> Callable[[dict[str, Any]], bool]:
    """Whether a move's output (size, frames) is at least as far from the baseline's as one that missed a
    fidelity floor: the gate would record it as a predicted failure, so proposing it only spends a trial."""
    found = baseline_trial(trials)
    baseline = found.user_attrs.get("output") if found is not None else None
    if baseline is None:
        return lambda move: False

    def lost(move: dict[str, Any]) -> bool:
        width, height = parse_size(move["size"]) if "size" in move else (baseline["width"], baseline["height"])
        output = {"width": width, "height": height, "frames": move.get("frame_num", baseline["frames"])}
        return dominating_failure(trials, output, baseline) is not None

    return lost


def _floor_breakers(trials: list[optuna.trial.FrozenTrial], space: dict[str, BaseDistribution]) -> set[tuple]:
    """Output sizes and lengths that broke a floor one knob away from a feasible trial, and that no feasible
    trial has, as (knob, value) pairs."""
    measured = [t for t in trials if set(space) <= set(t.params)]
    held = [t.params for t in measured if feasible(t)]
    broke = [t.params for t in measured if _broke_a_floor(t)]
    kept = {(key, p[key]) for p in held for key in space}
    breakers = set()
    for failed in broke:
        for good in held:
            differing = [key for key in space if failed[key] != good[key]]
            if len(differing) == 1 and differing[0] in OUTPUT_SPEC:
                breakers.add((differing[0], failed[differing[0]]))
    return breakers - kept


def _broke_a_floor(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete and infeasible, or stopped because its videos so far missed a floor."""
    if trial.state == optuna.trial.TrialState.PRUNED:
        return trial.user_attrs.get("prune_rule") == "quality"
    return trial.state == optuna.trial.TrialState.COMPLETE and not feasible(trial)


def _neighbours(value: Any, dist: BaseDistribution) -> list[Any]:
    """Values one notch away: every other choice of a categorical, the values next to it on a numeric scale."""
    if isinstance(dist, CategoricalDistribution):
        return [c for c in dist.choices if c != value]
    step = dist.step or (dist.high - dist.low) / 8
    if isinstance(dist, optuna.distributions.IntDistribution):
        step *= max(1, round(NOTCH * value / step))  # 25 -> 22 -> 19 -> 17 steps: about 12% a notch
        return [int(value + delta) for delta in (-step, step) if dist.low <= value + delta <= dist.high]
    return [round(value + delta, 6) for delta in (-step, step) if dist.low <= value + delta <= dist.high]


def _work_change(key: str, old: Any, new: Any, one_pass_at_guidance_one: bool = True) -> int:
    """-1 when the move cuts the work per video, 1 when it adds to it, 0 when it costs the same."""
    if key in CHEAPER_WHEN_LOWER:
        return (new > old) - (new < old)
    if key == "sample_guide_scale" and one_pass_at_guidance_one:
        return (old <= 1) - (new <= 1)  # guidance above 1 runs a second, unconditional pass
    if key == "size":
        area_old, area_new = (w * h for w, h in (parse_size(old), parse_size(new)))
        return (area_new > area_old) - (area_new < area_old)
    return 0
