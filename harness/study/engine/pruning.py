"""Stop a trial as soon as the evidence says it cannot win, and not before.

Rules, each judged on what the study has measured, never on one video:

- **repeat** (before generating): a searched proposal identical to a finished trial takes
  that trial's outcome (its running medians and floor slacks) instead of paying again.
- **spec** (before generating): a searched trial whose output (size and frames) is at least as far
  from the baseline's in every dimension as a trial's that missed a fidelity floor: fidelity is
  scored against the baseline's own video, so a smaller or shorter video that lost it loses it
  again, whatever the sampler (the proposal's A and B showed it at 15-18 dB).
- **prediction** (before generating): the cost model fitted to the study's own measured
  trials predicts the trial slower than it predicts the best feasible trial, by more than
  the model's measured (median leave-one-out) error -> pruned, nothing generated. Comparing
  prediction with prediction keeps the best trial's lucky or unlucky noise out of it.
- **quality** (after each video): the mean of the trial's videos so far, plus the most the
  remaining videos have ever lifted a trial's mean (measured per position on the study's
  complete trials, the baseline among them: prompts and seeds always run in one order),
  is still below a floor -> it cannot end above the floor.
- **time** (after each video, from the second): the median of the videos so far, less its
  spread, is slower than ``search.prune_margin`` x the best feasible median.

An Optuna pruner chosen in config (``search.pruner``) sees each video's running median
through ``trial.report`` and may prune too. Named presets (the baseline, the proposal's) are
never pruned: the report compares them. The same code drives ``benchmarks/search_cost.py``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import hydra.utils
import numpy as np
import optuna
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from harness.cost.model import CostModel, fit_cost_model
from harness.measure.noise import relative_spread
from harness.pipeline.levers import Speed
from harness.study.engine.floors import FLOOR_METRICS, Floor, fastest_feasible, shortfalls
from harness.study.engine.space import effective

SPREAD_TRIALS = 3  # complete trials whose videos measured a lift (not the reference: it is its own video)
MODEL_POINTS = 4  # measured trials the cost model needs before it may prune anything
PRUNERS = (
    "optuna.pruners.MedianPruner",
    "optuna.pruners.PercentilePruner",
    "optuna.pruners.SuccessiveHalvingPruner",
    "optuna.pruners.ThresholdPruner",
)  # not Hyperband (it hides other brackets' trials from the sampler) nor Wilcoxon (it wants per-video scores)
STATES = optuna.trial.TrialState


@dataclass(frozen=True)
class Rules:
    """Which rules are on (``search.prune_*``)."""

    time_margin: float = 1.25
    quality: bool = True
    predict: bool = True


def load_rules(cfg: DictConfig) -> Rules:
    """The configured rules, checked.

    Raises:
        ValueError: a margin that is not a number >= 1, a switch that is not true/false.
    """
    margin = cfg.search.prune_margin
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 1:
        raise ValueError(f"search.prune_margin={margin!r} must be a number >= 1 (a multiple of the best time)")
    for key in ("prune_quality", "prune_predicted"):
        if not isinstance(cfg.search[key], bool):
            raise ValueError(f"search.{key}={cfg.search[key]!r} must be true or false")
    return Rules(float(margin), bool(cfg.search.prune_quality), bool(cfg.search.prune_predicted))


def optuna_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``search.pruner`` names, built by Hydra (``{_target_: optuna.pruners.MedianPruner,
    n_startup_trials: 5}``), or none.

    Raises:
        ValueError: a target that is not one of the pruners allowed, or arguments the pruner does not take.
    """
    if spec is None:
        return optuna.pruners.NopPruner()
    spec = dict(OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec)
    target = spec.get("_target_")
    if target not in PRUNERS:
        raise ValueError(f"search.pruner._target_={target!r} is not an Optuna pruner; allowed: {list(PRUNERS)} or null")
    try:
        return hydra.utils.instantiate(spec)
    except InstantiationException as error:
        reason = str(error.__cause__ or error).splitlines()[0]
        raise ValueError(f"search.pruner={spec} is refused by {target}: {reason}") from None


@dataclass(frozen=True)
class Cost:
    """What a trial's video costs, known before generating it."""

    steps: int
    calls: int  # transformer calls per video: steps, plus one per guided step
    tokens: int  # transformer tokens per call (latent frames x height x width / patch)
    levers: str  # the speed levers (:func:`levers_key`); the model only predicts for the same ones, cache off

    @property
    def predictable(self) -> bool:
        return "cache=none" in self.levers


def levers_key(speed: Speed) -> str:
    """The levers that change a video's cost per transformer call, as trials record them."""
    return f"cache={speed.cache} attention={speed.attention} compile={speed.compile} precision={speed.precision}"


def cost_model(trials: Sequence[optuna.trial.FrozenTrial], levers: str) -> CostModel | None:
    """The cost model fitted to complete trials with these levers, or None with too few of them."""
    points = []
    for trial in trials:
        cost = trial.user_attrs.get("cost")
        if trial.state == STATES.COMPLETE and cost and cost["levers"] == levers:
            points.append((cost["steps"], cost["calls"] / cost["steps"], cost["tokens"], trial.value))
    if len(points) < MODEL_POINTS or len({steps * passes for steps, passes, *_ in points}) < 2:
        return None
    return fit_cost_model(points)


def _quality_reason(metric: str, mean: float, videos: int, threshold: float, lift: float) -> str:
    """Why the videos so far say a trial will end below a floor: too far under it, or above it with later videos
    that have always lowered a trial's mean."""
    so_far = f"{metric} {mean:.4g} over {videos} video(s)"
    later = (
        f"the rest of a trial's videos has lifted its mean by {lift:.3g} at most"
        if lift >= 0
        else f"the rest of a trial's videos has always lowered its mean, by {-lift:.3g} or more"
    )
    if mean < threshold:
        return f"{so_far} misses its floor {threshold:.4g} by {threshold - mean:.3g}, and {later}"
    return f"{so_far} is above its floor {threshold:.4g} by {mean - threshold:.3g}, but {later}: it would end below"


def quality_lift(trials: Sequence[optuna.trial.FrozenTrial], metric: str, videos: int) -> float | None:
    """How far a trial's final mean of ``metric`` has risen above the mean of its first ``videos`` videos, at most,
    over the study's complete trials (prompts and seeds run in one order, so this is measured per position).

    None until :data:`SPREAD_TRIALS` complete trials with more than ``videos`` videos measured it (a trial whose
    videos all score the same, as the reference's fidelity to itself does, says nothing about it). It is the largest
    lift seen, not a bound: the benchmark counts the trials it wrongly stopped.
    """
    lifts = []
    for trial in trials:
        values = (trial.user_attrs.get("video_scores") or {}).get(metric) or []
        if trial.state == STATES.COMPLETE and len(values) > videos and len(set(values)) > 1:
            lifts.append(statistics.fmean(values) - statistics.fmean(values[:videos]))
    return max(lifts) if len(lifts) >= SPREAD_TRIALS else None


@dataclass
class Gate:
    """A trial's pruning rules, with the study's evidence at the trial's start."""

    rules: Rules
    floors: list[Floor]
    named: bool  # an enqueued preset: measured in full whatever happens
    best: optuna.trial.FrozenTrial | None
    baseline: dict[str, float]
    trials: list[optuna.trial.FrozenTrial]
    pruned: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    videos: int = 0  # the trial's videos in all (0: unknown)
    times: list[float] = field(default_factory=list)  # each video's seconds so far
    scores: list[Mapping[str, float]] = field(default_factory=list)  # each video's scores so far
    predicted_s: float | None = None
    rule: str = ""  # the rule that pruned it: repeat, predicted, quality, time or optuna

    @classmethod
    def open(cls, study: optuna.Study, rules: Rules, floors: list[Floor], named: bool, videos: int = 0) -> "Gate":
        """The gate of a trial starting now, that will generate ``videos`` videos."""
        finished = study.get_trials(deepcopy=False, states=(STATES.COMPLETE, STATES.PRUNED))  # one read of the store
        complete = [t for t in finished if t.state == STATES.COMPLETE]
        pruned = [t for t in finished if t.state == STATES.PRUNED]
        attrs = study.user_attrs
        baseline = {metric: attrs[f"baseline_{metric}"] for metric in FLOOR_METRICS if f"baseline_{metric}" in attrs}
        return cls(rules, floors, named, fastest_feasible(complete), baseline, complete, pruned, videos)

    def same_as(self, params: Mapping[str, Any]) -> optuna.trial.FrozenTrial | None:
        """A finished trial (complete, or pruned after measuring) of exactly these values, when this trial is
        a searched one: measuring it again would pay for the same answer."""
        if self.named or not self.rules.predict:
            return None
        wanted = effective(params)
        return next((t for t in [*self.trials, *self.pruned] if effective(t.params) == wanted and t.constraints), None)

    def repeat(self, trial: optuna.Trial, same: optuna.trial.FrozenTrial) -> str:
        """Give the trial the outcome ``same`` measured (its running medians and floor slacks: TPE ranks pruned
        trials by them; GPSampler ignores pruned trials) and say why it generates nothing."""
        for step, value in sorted(same.intermediate_values.items()):
            trial.report(value, step)
        set_floor_constraints(trial, _floor_slacks(same))
        trial.set_user_attr("same_as", same.number)
        self.rule = "repeat"
        return f"same preset as trial {same.number}, measured already: nothing generated"

    def dominated(
        self, trial: optuna.Trial, output: Mapping[str, int], baseline_output: Mapping[str, int]
    ) -> str | None:
        """Why a searched trial's output need not be generated: a finished trial whose output was at least as
        large in every dimension (width, height, frames), and not the baseline's, missed a fidelity floor. The
        trial takes that trial's floor slacks (samplers learn it is infeasible)."""
        if self.named or not self.rules.predict:
            return None
        failed = dominating_failure([*self.trials, *self.pruned], output, baseline_output)
        if failed is None:
            return None
        self.rule = "spec"
        set_floor_constraints(trial, _floor_slacks(failed))
        shown = ", ".join(f"{metric} by {value:.3g}" for metric, value in _fidelity_shortfalls(failed).items())
        return (
            f"its output {_spec(output)} is at least as far from the baseline's {_spec(baseline_output)} as "
            f"trial {failed.number}'s {_spec(failed.user_attrs['output'])}, which missed {shown}: predicted to miss "
            f"too, nothing generated"
        )
        return None

    def before(self, cost: Cost) -> str | None:
        """Why the trial need not generate at all (it is predicted to do more work than the best), or None."""
        model = cost_model(self.trials, cost.levers) if cost.predictable else None
        if model is None:
            return None
        self.predicted_s = model.predict(cost.steps, cost.calls / cost.steps, cost.tokens)
        if self.named or not self.rules.predict or self.best is None:
            return None
        best_s, error = self._best_predicted(model, cost.levers), model.loo_error
        if self.predicted_s <= best_s * (1 + error):
            return None
        self.rule = "predicted"
        return (
            f"predicted {self.predicted_s:.3f} s/video > {best_s:.3f} s predicted for the best feasible trial "
            f"{self.best.number} by more than the cost model's error ({error:.1%}): nothing generated"
        )

    def _best_predicted(self, model: CostModel, levers: str) -> float:
        """The best feasible trial's time as the model predicts it (its measured time includes its noise, the
        prediction does not), or as measured when the model does not cover its levers."""
        cost = self.best.user_attrs.get("cost")
        if not cost or cost["levers"] != levers:
            return self.best.value
        return model.predict(cost["steps"], cost["calls"] / cost["steps"], cost["tokens"])

    def after_video(self, trial: optuna.Trial, seconds: float, scores: Mapping[str, float]) -> str | None:
        """Record one video (its generation seconds and scores); why the trial should stop now, or None."""
        self.times.append(seconds)
        self.scores.append(dict(scores))
        median = statistics.median(self.times)
        trial.report(median, step=len(self.times))
        if self.named or len(self.times) == self.videos:
            return None  # after the last video, stopping saves nothing and would throw its measurements away
        for rule, reason in (("quality", self._quality()), ("time", self._time(median))):
            if reason:
                self.rule = rule
                return reason
        if trial.should_prune():
            self.rule = "optuna"
            return f"Optuna's pruner: running median {median:.3f} s/video"
        return None

    def _quality(self) -> str | None:
        if not self.rules.quality:
            return None
        for floor in self.floors:
            lift = quality_lift(self.trials, floor.metric, len(self.times))
            if lift is None or (floor.ratio is not None and floor.metric not in self.baseline):
                continue
            mean, threshold = self.mean(floor.metric), floor.threshold(self.baseline)
            if mean + lift < threshold:
                return _quality_reason(floor.metric, mean, len(self.times), threshold, lift)
        return None

    def _time(self, median: float) -> str | None:
        times = self.times
        spread = relative_spread(times)
        if self.best is None or spread is None:
            return None  # one video says nothing about its preset's median
        limit = self.rules.time_margin * self.best.value
        if median * (1 - spread) <= limit:
            return None
        return (
            f"median {median:.3f} s over {len(times)} videos (spread {spread:.0%}) > {self.rules.time_margin:g} x "
            f"best feasible {self.best.value:.3f} s (trial {self.best.number})"
        )

    def mean(self, metric: str) -> float:
        return statistics.fmean(scores[metric] for scores in self.scores)

    def slacks(self) -> dict[str, float]:
        """Each floor's threshold - the mean of the videos so far (feasible when <= 0)."""
        return {
            floor.metric: floor.threshold(self.baseline) - self.mean(floor.metric)
            for floor in self.floors
            if floor.value is not None or floor.metric in self.baseline
        }

    def video_scores(self) -> dict[str, list[float]]:
        """Per-video time and floor metrics, in the order measured (a user attribute of the trial)."""
        found = {"wall_time_s": [float(t) for t in self.times]}
        for metric in (f.metric for f in self.floors):
            if all(metric in scores for scores in self.scores):
                found[metric] = [float(scores[metric]) for scores in self.scores]
        return found


FIDELITY = ("psnr_db", "ssim")  # scored against the baseline's own video: what a lost output spec loses


def dominating_failure(
    trials: Sequence[optuna.trial.FrozenTrial], output: Mapping[str, int], baseline_output: Mapping[str, int]
) -> optuna.trial.FrozenTrial | None:
    """A finished trial whose output (not the baseline's) was at least as large as ``output`` in every dimension
    (width, height, frames) and that missed a fidelity floor; None when there is none, or ``output`` is the
    baseline's own."""
    if dict(output) == dict(baseline_output):
        return None
    for trial in trials:
        theirs = trial.user_attrs.get("output")
        if not theirs or theirs == dict(baseline_output) or not _fidelity_shortfalls(trial):
            continue
        if all(output[key] <= theirs[key] for key in ("width", "height", "frames")):
            return trial
    return None


def _fidelity_shortfalls(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The fidelity floors a finished trial missed (complete and infeasible, or pruned on its videos so far)."""
    if trial.state == STATES.PRUNED and trial.user_attrs.get("prune_rule") not in ("quality", "spec"):
        return {}
    return {metric: value for metric, value in shortfalls(trial).items() if metric in FIDELITY}


def _floor_slacks(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """A finished trial's floor slacks by metric (its ``floor_<metric>`` constraints; not the dashboard's list)."""
    return {k.removeprefix("floor_"): v for k, v in (trial.constraints or {}).items() if k.startswith("floor_")}


def _spec(output: Mapping[str, int]) -> str:
    return f"{output['width']}x{output['height']}, {output['frames']} frames"


def set_floor_constraints(trial: optuna.Trial, slacks: Mapping[str, float]) -> None:
    """One Optuna constraint per floor, ``floor_<metric>`` (feasible when <= 0)."""
    for metric, slack in slacks.items():
        trial.set_constraint(f"floor_{metric}", slack)
    # optuna-dashboard 0.21 reads only the older list form of constraints: write it too
    trial.storage.set_trial_system_attr(trial._trial_id, "constraints", list(slacks.values()))


def prediction_error(predicted: float | None, measured: float) -> float | None:
    """(measured - predicted) / measured, or None without a prediction."""
    return None if predicted is None else float(np.round((measured - predicted) / measured, 6))


def summary(trials: Sequence[optuna.trial.FrozenTrial]) -> str | None:
    """One line: what pruning saved, by rule, and how far the cost model's predictions were off."""
    rules = [t.user_attrs.get("prune_rule", "time") for t in trials if t.state == STATES.PRUNED]
    if not rules and not any("predicted_time_s" in t.user_attrs for t in trials):
        return None
    count = {rule: rules.count(rule) for rule in ("predicted", "spec", "repeat", "quality", "time", "optuna")}
    line = (
        f"pruned: {count['predicted']} before generating (predicted slower), {count['spec']} before generating (an "
        f"output at least as far from the baseline's as one that missed a fidelity floor), {count['repeat']} "
        f"repeating a measured preset, {count['quality']} on quality, {count['time']} on time, {count['optuna']} "
        "by Optuna's pruner"
    )
    errors = [abs(t.user_attrs["prediction_error"]) for t in trials if "prediction_error" in t.user_attrs]
    if errors:
        line += (
            f"; cost model error on {len(errors)} measured trial(s): median {statistics.median(errors):.1%}, "
            f"max {max(errors):.1%}"
        )
    return line
