"""One trial of the study: compose its preset, measure it as ``harness.run`` does, set its constraints."""

from __future__ import annotations

from typing import Any, Callable

import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf

from harness.measure import tracking
from harness.measure.plan import plan
from harness.measure.session import measure_in_run, open_session
from harness.study import space
from harness.study.compose import compose_trial
from harness.study.floors import FLOOR_METRICS, best_feasible, floors
from harness.study.storage import public_url, storage_url

SUMMARY_ATTRS = (
    "median_wall_time_s",
    "mean_clip_score",
    "mean_psnr_db",
    "mean_ssim",
    "median_step_time_s",
    "median_time_per_video_second_s",
    "wall_time_spread",
    "timing_noisy",
    "output_spec",
    "spec_change",
)


class PrunedTrial(tracking.Stopped, optuna.TrialPruned):
    """Pruned by the harness: Optuna records PRUNED, MLflow ends the run KILLED."""


class Objective:
    """One trial: compose its preset, measure it, set one constraint per floor."""

    def __init__(self, cfg: DictConfig, base_overrides: list[str], study: optuna.Study):
        self.cfg = cfg
        self.base_overrides = base_overrides
        self.study = study
        self.solvers = OmegaConf.to_container(cfg.solver, resolve=True)
        self.dists = space.distributions(OmegaConf.to_container(cfg.search.space, resolve=True), self.solvers)
        self.floors = floors(cfg)
        self.url = public_url(storage_url(cfg))

    def trial_cfg(self, params: dict[str, Any], name: str) -> DictConfig:
        """The trial's config: the study's overrides, the trial's values, the study's seeds."""
        seeds = list(self.cfg.search.seeds)
        return compose_trial([*self.base_overrides, *space.overrides(params), f"name={name}", f"prompts.seeds={seeds}"])

    def _pruner(self, trial: optuna.Trial, named: bool) -> Callable[[int, dict[str, float]], None]:
        best = best_feasible(self.study)
        margin = float(self.cfg.search.prune_margin)

        def on_video(index: int, metrics: dict[str, float]) -> None:
            if named or best is None or metrics["wall_time_s"] <= margin * best.value:
                return
            reason = (
                f"video {index + 1} took {metrics['wall_time_s']:.3f} s > {margin:g} x best feasible "
                f"{best.value:.3f} s (trial {best.number})"
            )
            trial.set_user_attr("prune_reason", reason)
            raise PrunedTrial(reason)

        return on_video

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
            mlflow.set_tags({"state": "COMPLETE", "feasible": str(is_feasible).lower()})
            mlflow.log_param("trial_number", trial.number)
        return summary["median_wall_time_s"]

    def _measure(self, trial: optuna.Trial, params: dict[str, Any], name: str, named: bool) -> dict[str, Any]:
        """Measure the trial's preset; a pruned or failed trial's reason goes to Optuna and MLflow."""
        try:
            cfg = self.trial_cfg(params, name)
            plan_ = plan(cfg)
            return measure_in_run(
                cfg,
                plan_,
                open_session(cfg, plan_),
                on_video=self._pruner(trial, named),
                video_tags={"study": self.study.study_name, "trial_number": str(trial.number)},
            )
        except optuna.TrialPruned:
            mlflow.set_tag("state", "PRUNED")
            mlflow.set_tag("prune_reason", trial.user_attrs.get("prune_reason", ""))
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:500]
            trial.set_user_attr("fail_reason", reason)
            mlflow.set_tags({"state": "FAIL", "fail_reason": reason})
            raise

    def _record(self, trial: optuna.Trial, summary: dict[str, Any], preset_name: str | None) -> None:
        """The trial's summary as user attributes; the baseline's scores also on the study."""
        for metric in SUMMARY_ATTRS:
            if summary.get(metric) is not None:
                trial.set_user_attr(metric, summary[metric])
        trial.set_user_attr("generated", f"{summary['size']} x {summary['frames']} frames")
        trial.set_user_attr("preset", preset_name or f"trial-{trial.number}")  # its name, in optuna-dashboard too
        if preset_name == "baseline":
            for metric in FLOOR_METRICS:
                if f"mean_{metric}" in summary:
                    self.study.set_user_attr(f"baseline_{metric}", summary[f"mean_{metric}"])

    def _constrain(self, trial: optuna.Trial, summary: dict[str, Any]) -> bool:
        """One constraint per floor (threshold - value, feasible when <= 0); whether all hold."""
        baseline = {m: self.study.user_attrs.get(f"baseline_{m}") for m in FLOOR_METRICS}
        slacks = []
        for floor in self.floors:
            if floor.ratio is not None and baseline.get(floor.metric) is None:
                raise RuntimeError(f"floor {floor.describe()} needs the baseline trial measured first")
            slacks.append(floor.threshold(baseline) - summary[f"mean_{floor.metric}"])
            trial.set_constraint(f"floor_{floor.metric}", slacks[-1])
            mlflow.log_metric(f"constraint_{floor.metric}", slacks[-1])
        # optuna-dashboard 0.21 reads only the older list form of constraints: write it too
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", slacks)
        return all(slack <= 0 for slack in slacks)
