"""Optuna study: the fastest preset that keeps every quality floor.

    python -m harness.search model=toy search.n_trials=12     # new study, or continue it
    optuna-dashboard sqlite:///mlruns/optuna.db                # the same storage, live

Each trial composes its preset with Hydra's Compose API from the trial's choices, is
measured exactly as ``harness.run`` measures (same figures), and is logged to MLflow as a
child of the study's run, with its videos beneath it. The baseline and the proposal's
presets are enqueued first, so floors and speed-ups are relative to the baseline on the
same machine. The pipeline is loaded once for the whole study.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import hydra
import mlflow
import optuna
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from harness.study import space
from harness.measure import tracking
from harness.pipeline.generate import GenerationRequest, generate
from harness.measure.session import measure_in_run, open_session, plan
from harness.pipeline.load import load_pipeline

log = logging.getLogger(__name__)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
FLOOR_METRICS = ("clip_score", "psnr_db", "ssim")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class PrunedTrial(tracking.Stopped, optuna.TrialPruned):
    """Pruned by the harness: Optuna records PRUNED, MLflow ends the run KILLED."""


@dataclass(frozen=True)
class Floor:
    """A quality floor: ``metric`` >= ``value``, or >= ``ratio`` x the baseline's."""

    metric: str
    value: float | None = None
    ratio: float | None = None

    def threshold(self, baseline: dict[str, float]) -> float:
        if self.value is not None:
            return self.value
        return float(self.ratio) * baseline[self.metric]

    def describe(self) -> str:
        return f"{self.metric} >= {self.value:g}" if self.value is not None else f"{self.metric} >= {self.ratio:g} x baseline"


def floors(cfg: DictConfig) -> list[Floor]:
    """The configured floors, checked.

    Raises:
        ValueError: unknown metric, or not exactly one of ``value`` and ``ratio``.
    """
    result = []
    for metric, spec in (cfg.search.floors or {}).items():
        if metric not in FLOOR_METRICS:
            raise ValueError(f"search.floors.{metric}: unknown metric; allowed: {list(FLOOR_METRICS)}")
        value, ratio = spec.get("value"), spec.get("ratio")
        if (value is None) == (ratio is None):
            raise ValueError(f"search.floors.{metric}={OmegaConf.to_container(spec)} must set exactly one of value, ratio")
        if ratio is not None and not ratio > 0:
            raise ValueError(f"search.floors.{metric}.ratio={ratio!r} must be > 0")
        if metric == "clip_score" and not cfg.quality.clip or metric != "clip_score" and not cfg.quality.fidelity:
            raise ValueError(f"search.floors.{metric} needs its metric on (quality.clip / quality.fidelity)")
        result.append(Floor(metric, None if value is None else float(value), None if ratio is None else float(ratio)))
    return result


def storage_url(cfg: DictConfig) -> str:
    """The study's storage: ``search.storage``, or SQLite beside the MLflow store."""
    if cfg.search.storage:
        return str(cfg.search.storage)
    mlruns = Path(cfg.paths.mlruns_dir).resolve()
    mlruns.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{mlruns / 'optuna.db'}"


def open_study(cfg: DictConfig) -> optuna.Study:
    """Create the study, or load it when it exists, and fail trials a killed process left RUNNING."""
    storage = optuna.storages.RDBStorage(
        storage_url(cfg), heartbeat_interval=int(cfg.search.heartbeat_s), grace_period=int(cfg.search.grace_s)
    )
    sampler = optuna.samplers.TPESampler(
        seed=int(cfg.search.sampler.seed), n_startup_trials=int(cfg.search.sampler.n_startup_trials)
    )
    study = optuna.create_study(
        study_name=str(cfg.search.study_name), storage=storage, sampler=sampler,
        direction="minimize", load_if_exists=True,
    )
    optuna.storages.fail_stale_trials(study)
    return study


def measured_with(cfg: DictConfig, base_overrides: list[str]) -> dict[str, str]:
    """What every trial of a study must share to be compared: weights, device, prompts and seeds.

    Loads the pipeline (once per process; the trials reuse it).
    """
    base = compose_trial(base_overrides)
    plan_ = plan(base)
    loaded = load_pipeline(base.model, plan_.speed.compile)
    device = torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else "cpu"
    prompts = json.dumps([plan_.prompts, list(cfg.search.seeds), plan_.negative_prompt])
    return {
        "model": f"{loaded.name} (weights {loaded.weights})",
        "device": f"{device} {str(loaded.dtype).removeprefix('torch.')}",
        "prompts": f"{len(plan_.prompts)} prompt(s) x {len(cfg.search.seeds)} seed(s) "
                   f"({hashlib.sha256(prompts.encode()).hexdigest()[:8]})",
    }


def check_comparable(study: optuna.Study, identity: dict[str, str], storage: str) -> None:
    """Record what the study measures with, or refuse to add trials measured with something else.

    Raises:
        ValueError: the study's trials were measured with other weights, device or prompts
            (a retrained model, a new GPU): mixing them would compare unlike times and scores.
    """
    recorded = study.user_attrs.get("measured_with")
    if recorded is None:
        if study.get_trials(deepcopy=False):
            log.warning("study %s predates fingerprints of what it measures with; assuming its trials used %s",
                        study.study_name, identity)
        study.set_user_attr("measured_with", identity)
        return
    changed = [f"{key} {recorded.get(key)!r}, now {value!r}" for key, value in identity.items() if recorded.get(key) != value]
    if changed:
        raise ValueError(
            f"study {study.study_name!r} was measured with {'; '.join(changed)}: its trials would not compare with "
            f"new ones; choose a new search.study_name, or delete it: "
            f"optuna delete-study --study-name {study.study_name} --storage {storage}"
        )


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, with every constraint <= 0."""
    return (
        trial.state == optuna.trial.TrialState.COMPLETE
        and bool(trial.constraints)
        and all(value <= 0 for value in trial.constraints.values())
    )


def best_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The fastest feasible trial, or None."""
    candidates = [t for t in study.get_trials(deepcopy=False) if feasible(t)]
    return min(candidates, key=lambda t: t.value) if candidates else None


def compose_trial(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides (inside a Hydra app, or standalone)."""
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def _close_orphans(client: mlflow.MlflowClient, experiment_id: str, study: optuna.Study) -> int:
    """End MLflow runs of this study left RUNNING by a killed process (their trial is not running)."""
    running = {str(t.number) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    orphans = client.search_runs(
        [experiment_id],
        f"tags.study = '{study.study_name}' and attributes.status = 'RUNNING' and tags.kind != 'study'",
    )
    closed = 0
    for run in orphans:
        if run.data.tags.get("trial_number") not in running:
            client.set_terminated(run.info.run_id, "KILLED")
            client.set_tag(run.info.run_id, "note", "process ended mid-run (closed on the next start)")
            closed += 1
    return closed


def study_run_id(client: mlflow.MlflowClient, experiment_id: str, study_name: str) -> str | None:
    """The MLflow run of a study (one per study, resumed when it continues), or None."""
    found = client.search_runs([experiment_id], f"tags.kind = 'study' and tags.study = '{study_name}'", max_results=1)
    return found[0].info.run_id if found else None


class Objective:
    """One trial: compose its preset, measure it, set one constraint per floor."""

    def __init__(self, cfg: DictConfig, base_overrides: list[str], study: optuna.Study):
        self.cfg = cfg
        self.base_overrides = base_overrides
        self.study = study
        self.solvers = OmegaConf.to_container(cfg.solver, resolve=True)
        self.dists = space.distributions(OmegaConf.to_container(cfg.search.space, resolve=True), self.solvers)
        self.floors = floors(cfg)
        self.url = storage_url(cfg)

    def trial_cfg(self, params: dict[str, Any], name: str) -> DictConfig:
        seeds = list(self.cfg.search.seeds)
        return compose_trial([*self.base_overrides, *space.overrides(params), f"name={name}", f"prompts.seeds={seeds}"])

    def _pruner(self, trial: optuna.Trial, named: bool) -> Callable[[int, dict[str, float]], None]:
        best = best_feasible(self.study)
        margin = float(self.cfg.search.prune_margin)

        def on_video(index: int, metrics: dict[str, float]) -> None:
            if named or best is None or metrics["wall_time_s"] <= margin * best.value:
                return
            reason = (f"video {index + 1} took {metrics['wall_time_s']:.3f} s > {margin:g} x best feasible "
                      f"{best.value:.3f} s (trial {best.number})")
            trial.set_user_attr("prune_reason", reason)
            raise PrunedTrial(reason)

        return on_video

    def __call__(self, trial: optuna.Trial) -> float:
        params = space.suggest(trial, self.dists)
        preset_name = trial.user_attrs.get("preset_name")
        name = preset_name or f"trial-{trial.number}"
        tags = {"kind": "trial", "study": self.study.study_name, "trial_number": str(trial.number),
                "optuna_storage": self.url, "preset_name": name}
        with tracking.run(f"#{trial.number} {name}", nested=True, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            try:
                cfg = self.trial_cfg(params, name)
                plan_ = plan(cfg)
                session = open_session(cfg, plan_)
                summary = measure_in_run(
                    cfg, plan_, session, on_video=self._pruner(trial, preset_name is not None),
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
            for metric in ("median_wall_time_s", "mean_clip_score", "mean_psnr_db", "mean_ssim", "median_step_time_s"):
                if metric in summary:
                    trial.set_user_attr(metric, summary[metric])
            trial.set_user_attr("generated", f"{summary['size']} x {summary['frames']} frames")
            if preset_name == "baseline":
                for metric in FLOOR_METRICS:
                    if f"mean_{metric}" in summary:
                        self.study.set_user_attr(f"baseline_{metric}", summary[f"mean_{metric}"])
            baseline = {m: self.study.user_attrs.get(f"baseline_{m}") for m in FLOOR_METRICS}
            is_feasible = True
            for floor in self.floors:
                if floor.ratio is not None and baseline.get(floor.metric) is None:
                    raise RuntimeError(f"floor {floor.describe()} needs the baseline trial measured first")
                slack = floor.threshold(baseline) - summary[f"mean_{floor.metric}"]
                trial.set_constraint(f"floor_{floor.metric}", slack)
                mlflow.log_metric(f"constraint_{floor.metric}", slack)
                is_feasible &= slack <= 0
            mlflow.set_tags({"state": "COMPLETE", "feasible": str(is_feasible).lower()})
            mlflow.log_param("trial_number", trial.number)
        return summary["median_wall_time_s"]


def estimate(base_overrides: list[str]) -> tuple[float, float, str]:
    """Time a 1-step and a 3-step generation at the baseline's shape (also a warm-up).

    Returns:
        (seconds per step, fixed seconds per video) at the baseline's shape, and a line
        naming the model and machine.
    """
    base = compose_trial(base_overrides)
    plan_ = plan(base)
    session = open_session(base, plan_)
    request = GenerationRequest(plan_.prompts[0], 0, plan_.shape, 1, plan_.preset.sample_guide_scale,
                                plan_.preset.sample_solver, plan_.preset.sample_shift, plan_.negative_prompt)
    one = generate(session.loaded, request, session.solvers).wall_s
    three = generate(session.loaded, GenerationRequest(**{**request.__dict__, "steps": 3}), session.solvers).wall_s
    per_step = max((three - one) / 2, 1e-6)
    loaded = session.loaded
    device = torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    machine = f"Measured with model `{loaded.name}` ({str(loaded.dtype).removeprefix('torch.')}) on {device}."
    return per_step, max(one - per_step, 0.0), machine


def enqueue_presets(study: optuna.Study, cfg: DictConfig, base_overrides: list[str], dists: dict, room: int) -> None:
    """Enqueue the baseline and the proposal's presets that the study still lacks.

    A preset counts as measured once it has a trial that is waiting, running, complete,
    pruned, or failed for a reason; one whose process was killed mid-trial is enqueued
    again, so the report always shows it. At most ``room`` presets are enqueued.
    """
    from harness.preset import validate_preset

    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    had_a_chance = {
        t.user_attrs.get("preset_name")
        for t in study.get_trials(deepcopy=False)
        if t.state != optuna.trial.TrialState.FAIL or "fail_reason" in t.user_attrs
    }
    missing = [name for name in (cfg.search.enqueue or []) if name not in had_a_chance]
    for name in missing[: max(room, 0)]:
        preset_cfg = compose_trial([*base_overrides, f"+experiment={name}"])
        preset = validate_preset(OmegaConf.to_container(preset_cfg.preset, resolve=True), solvers)
        study.enqueue_trial(space.params_of(preset, dists, name), user_attrs={"preset_name": name})


def _missed(trial: optuna.trial.FrozenTrial) -> str:
    missed = {key: value for key, value in (trial.constraints or {}).items() if value > 0}
    return "missed " + ", ".join(f"{key.removeprefix('floor_')} by {value:.3g}" for key, value in missed.items())


def print_outcome(study: optuna.Study) -> None:
    """What the study did: counts by state, why trials were pruned or failed, the best."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    print(f"study {study.study_name}: {len(trials)} trials -- " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n))
    for trial in trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            print(f"  pruned #{trial.number}: {trial.user_attrs.get('prune_reason', '')}")
        elif trial.state == optuna.trial.TrialState.FAIL:
            print(f"  failed #{trial.number}: {trial.user_attrs.get('fail_reason', 'process ended mid-trial')}")
        elif trial.state == optuna.trial.TrialState.COMPLETE and not feasible(trial):
            print(f"  infeasible #{trial.number} ({trial.user_attrs.get('preset_name', 'searched')}): {_missed(trial)}")
    best = best_feasible(study)
    baseline = next((t for t in trials if t.user_attrs.get("preset_name") == "baseline" and t.state == optuna.trial.TrialState.COMPLETE), None)
    if best is None:
        print("  no feasible trial yet")
        return
    speed = f", {baseline.value / best.value:.2f}x faster than the baseline" if baseline else ""
    print(f"  best feasible #{best.number} ({best.user_attrs.get('preset_name', 'searched')}): {best.value:.3f} s/video{speed}")
    print(f"  params: {best.params}")
    print(f"  next: python -m harness.report study={study.study_name} && python -m harness.select study={study.study_name}")


def search_presets(cfg: DictConfig, base_overrides: list[str]) -> optuna.Study:
    """Run (or continue) the study until it holds ``search.n_trials`` trials.

    Args:
        cfg: the composed config (``search`` node).
        base_overrides: the overrides the config was composed with; each trial adds its own.

    Returns:
        The study.

    Raises:
        ValueError: a bad search space, floor or preset (before any trial runs).
    """
    study_name = str(cfg.search.study_name)
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    dists = space.distributions(OmegaConf.to_container(cfg.search.space, resolve=True), solvers)
    floor_list = floors(cfg)
    if any(f.ratio is not None for f in floor_list) and "baseline" not in list(cfg.search.enqueue or []):
        raise ValueError("search.floors with a ratio need 'baseline' in search.enqueue (it is measured first)")
    n_trials = cfg.search.n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"search.n_trials={n_trials!r} must be an integer >= 1")
    identity = measured_with(cfg, base_overrides)  # also checks the base preset and prompts

    study = open_study(cfg)
    check_comparable(study, identity, storage_url(cfg))
    experiment_id = tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    client = mlflow.MlflowClient()
    closed = _close_orphans(client, experiment_id, study)
    if closed:
        log.info("closed %d MLflow run(s) a killed process left RUNNING", closed)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = n_trials - done
    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    enqueue_presets(study, cfg, base_overrides, dists, remaining - waiting)
    study.set_user_attr("floors", [f.describe() for f in floor_list])
    prompts, seeds = len(cfg.prompts.texts), len(cfg.search.seeds)
    if remaining <= 0:
        print(f"study {study_name} already has {done} trials (search.n_trials={n_trials}); raise it to continue")
        print_outcome(study)
        return study

    per_step, fixed, machine = estimate(base_overrides)
    study.set_user_attr("machine", machine)
    steps = dists.get("sample_steps")
    mean_steps = (steps.low + steps.high) / 2 if isinstance(steps, optuna.distributions.IntDistribution) else cfg.preset.sample_steps
    per_video = fixed + per_step * mean_steps
    print(f"study {study_name}: {remaining} trial(s) to run ({done} done) x {prompts} prompt(s) x {seeds} seed(s) = "
          f"{remaining * prompts * seeds} videos, plus a reference video per new size/frames/prompt/seed; "
          f"about {remaining * prompts * seeds * per_video / 60:.1f} min at ~{per_video:.2f} s/video "
          f"({per_step:.3f} s/step at the baseline's shape)")
    print(f"floors: {'; '.join(f.describe() for f in floor_list)}; storage {storage_url(cfg)}")

    study_tags = {"kind": "study", "study": study_name, "optuna_storage": storage_url(cfg)}
    run_id = study_run_id(client, experiment_id, study_name)
    started = time.perf_counter()
    parent = mlflow.start_run(run_id=run_id, run_name=f"study {study_name}", tags=study_tags)
    try:
        if run_id is None:
            tracking.log_config(cfg, "study_config.yaml")
        study.optimize(
            Objective(cfg, base_overrides, study), n_trials=remaining,
            timeout=cfg.search.timeout_s, catch=(Exception,),
        )
        best = best_feasible(study)
        if best is not None:
            mlflow.log_metric("best_feasible_time_s", best.value)
            mlflow.set_tag("best_trial", str(best.number))
        mlflow.log_metric("trials", len(study.get_trials(deepcopy=False)))
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    finally:
        optuna.storages.fail_stale_trials(study)
        _close_orphans(client, experiment_id, study)
    mlflow.end_run("FINISHED")
    log.info("study ran %.0f s", time.perf_counter() - started)
    print_outcome(study)
    return study


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    import sys

    from hydra.core.hydra_config import HydraConfig

    try:
        study = search_presets(cfg, list(HydraConfig.get().overrides.task))
    except ValueError as error:
        sys.exit(f"error: {error}")
    best = best_feasible(study)
    return best.value if best else None


if __name__ == "__main__":
    main()
