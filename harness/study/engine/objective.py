"""One trial of the study: compose its preset, measure it as ``harness.run`` does, set its constraints."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf

from harness.measure import tracking
from harness.measure.plan import Plan, plan
from harness.measure.results import Summary, VideoResult
from harness.measure.session import Session, measure_in_run, open_session
from harness.secrets import mask, public_url
from harness.signals import raise_if_stopped
from harness.stores import storage_url
from harness.study.engine import space
from harness.study.engine.compose import derive
from harness.study.engine.floors import FLOOR_METRICS, floors, holds
from harness.study.engine.pruning import Cost, Gate, levers_key, load_rules, prediction_error, set_floor_constraints


class PrunedTrial(tracking.Stopped, optuna.TrialPruned):
    """Pruned by the harness: Optuna records PRUNED, MLflow ends the run KILLED."""


class Objective:
    """One trial: compose its preset, measure it, set one constraint per floor."""

    def __init__(self, cfg: DictConfig, study: optuna.Study):
        self.cfg = cfg
        self.study = study
        self.solvers = OmegaConf.to_container(cfg.solver, resolve=True)
        self.dists = space.distributions(OmegaConf.to_container(cfg.search.space, resolve=True), self.solvers)
        self.floors = floors(cfg)
        self.url = public_url(storage_url(cfg))
        self.rules = load_rules(cfg)

    def trial_cfg(self, params: dict[str, Any], name: str, timing: Mapping[str, Any] | None = None) -> DictConfig:
        """The trial's config: the study's, with the trial's values, the study's seeds, and trials measured alone
        (``timing`` updates the timing settings, e.g. the closing pairing's repeats)."""
        updates = {**space.updates(params), "name": name, "prompts": {"seeds": list(self.cfg.search.seeds)}}
        return derive(self.cfg, {**updates, "timing": {"pair": False, **(timing or {})}})

    def __call__(self, trial: optuna.Trial) -> float:
        params = space.suggest(trial, self.dists)
        preset_name = trial.user_attrs.get("preset_name")
        name = preset_name or f"trial-{trial.number}"
        tags = {
            "kind": "trial",
            "study": self.study.study_name,
            "trial_number": str(trial.number),
            "optuna_storage": self.url,
            "preset_name": name,
        }
        with tracking.run(f"#{trial.number} {name}", nested=True, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            summary = self._measure(trial, params, name, preset_name is not None)
            self._record(trial, summary, preset_name)
            is_feasible = self._constrain(trial, summary)
            trial.set_user_attr("feasible", is_feasible)  # optuna-dashboard lists user attributes beside the state
            mlflow.set_tags({"state": "COMPLETE", "feasible": str(is_feasible).lower()})
            mlflow.log_param("trial_number", trial.number)
        return summary.seconds_per_video

    def _measure(self, trial: optuna.Trial, params: dict[str, Any], name: str, named: bool) -> Summary:
        """Measure the trial's preset unless its gate prunes it; a pruned or failed trial's reason goes to
        Optuna and MLflow."""
        try:
            cfg = self.trial_cfg(params, name)
            plan_ = plan(cfg)
            _record_output(trial, plan_)  # known before generating: a pruned trial's row shows it too
            gate = Gate.open(self.study, self.rules, self.floors, named, len(plan_.prompts) * len(plan_.seeds))
            session = open_session(cfg, plan_)
            tracking.log_config(cfg)  # a trial pruned before generating keeps its config too
            self._before(trial, gate, trial_cost(plan_, session), params, plan_)
            summary = measure_in_run(
                cfg,
                plan_,
                session,
                on_video=lambda index, result: self._after_video(trial, gate, result),
                video_tags={"study": self.study.study_name, "trial_number": str(trial.number)},
            )
        except optuna.TrialPruned:
            mlflow.set_tags({"state": "PRUNED", "prune_reason": trial.user_attrs.get("prune_reason", "")})
            raise
        except Exception as error:
            raise_if_stopped()  # a failure a signal caused (ffmpeg killed with the terminal's group) is a stop
            reason = mask(f"{type(error).__name__}: {error}".splitlines()[0][:500])
            trial.set_user_attr("fail_reason", reason)
            mlflow.set_tags({"state": "FAIL", "fail_reason": reason})
            raise
        trial.set_user_attr("video_scores", gate.video_scores())
        self._log_prediction(trial, gate.predicted_s, summary.seconds_per_video)
        return summary

    def _before(self, trial: optuna.Trial, gate: Gate, cost: Cost, params: dict[str, Any], plan_: Plan) -> None:
        """Record what the trial will cost; prune it, generating nothing, when it repeats a measured preset, its
        output is at least as far from the baseline's as one that missed a fidelity floor, or it is predicted
        to lose."""
        trial.set_user_attr("cost", asdict(cost))
        same = gate.same_as(params)
        if same is not None:
            self._prune(trial, gate, gate.repeat(trial, same))
        reason = gate.dominated(trial, plan_.shape.output, plan_.reference_shape.output) or gate.before(cost)
        if gate.predicted_s is not None:
            trial.set_user_attr("predicted_time_s", gate.predicted_s)
            mlflow.log_metric("predicted_time_s", gate.predicted_s)
        if reason:
            self._prune(trial, gate, reason)

    def _after_video(self, trial: optuna.Trial, gate: Gate, result: VideoResult) -> None:
        reason = gate.after_video(trial, result.wall_time_s, result.scores)
        if reason:
            trial.set_user_attr("video_scores", gate.video_scores())
            set_floor_constraints(trial, gate.slacks())  # the videos so far: samplers learn it is infeasible
            self._prune(trial, gate, reason)

    @staticmethod
    def _prune(trial: optuna.Trial, gate: Gate, reason: str) -> None:
        trial.set_user_attr("prune_reason", reason)
        trial.set_user_attr("prune_rule", gate.rule)
        raise PrunedTrial(reason)

    @staticmethod
    def _log_prediction(trial: optuna.Trial, predicted: float | None, measured: float) -> None:
        """How far the cost model's prediction was from the measured time (its error, reported)."""
        error = prediction_error(predicted, measured)
        if error is not None:
            trial.set_user_attr("prediction_error", error)
            mlflow.log_metric("prediction_error", error)

    def _record(self, trial: optuna.Trial, summary: Summary, preset_name: str | None) -> None:
        """The trial's summary as user attributes; the baseline's scores also on the study."""
        for key, value in summary.to_user_attrs().items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("preset", preset_name or f"trial-{trial.number}")  # its name, in optuna-dashboard too
        if preset_name == "baseline":
            for key, value in summary.baseline_scores().items():
                self.study.set_user_attr(key, value)

    def _constrain(self, trial: optuna.Trial, summary: Summary) -> bool:
        """One constraint per floor (threshold - value, feasible when <= 0); whether all hold."""
        baseline = {m: self.study.user_attrs.get(f"baseline_{m}") for m in FLOOR_METRICS}
        slacks = {}
        for floor in self.floors:
            if floor.ratio is not None and baseline.get(floor.metric) is None:
                raise RuntimeError(f"floor {floor.describe()} needs the baseline trial measured first")
            measured = summary.mean(floor.metric)
            if measured is None:
                raise RuntimeError(f"floor {floor.describe()}: the trial measured no {floor.metric}")
            slacks[floor.metric] = floor.threshold(baseline) - measured
            mlflow.log_metric(f"constraint_{floor.metric}", slacks[floor.metric])
        set_floor_constraints(trial, slacks)
        return holds(slacks)


def _record_output(trial: optuna.Trial, plan_: Plan) -> None:
    """The worker's output (WxH, frames, seconds) and how it differs from the baseline's."""
    trial.set_user_attr("output_spec", plan_.shape.output_spec(plan_.fps))
    trial.set_user_attr("output", plan_.shape.output)  # compared with other trials' (pruning.Gate.dominated)
    trial.set_user_attr("scaled", plan_.shape.scaled)
    change = plan_.shape.spec_change(plan_.reference_shape)
    if change:
        trial.set_user_attr("spec_change", change)


def trial_cost(plan_: Plan, session: Session) -> Cost:
    """What one of the plan's videos costs, known before generating it."""
    request = plan_.request(plan_.prompts[0], plan_.seeds[0])
    return Cost(
        steps=request.steps,
        calls=request.steps + request.guided_steps,
        tokens=session.loaded.latent_grid(*plan_.shape.generated)[1],
        levers=levers_key(plan_.speed),
    )
