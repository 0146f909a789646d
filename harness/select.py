"""Choose the production preset from a study: ``python -m harness.select study=NAME``.

The fastest feasible trial wins, unless a slower feasible trial is within timing noise
of it (``search.select.noise``): then they are equally fast and the one most faithful
to the baseline's video (PSNR) wins. The winner is re-measured on seeds the search never
saw, its MLflow runs are tagged ``preset=production``, and it is written as
``experiments/<study>/video_fast.yaml`` and ``.json`` in the worker's key format, with
``expected_time`` from the re-measured median.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import hydra
import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf

from harness.study import space
from harness.measure import tracking
from harness.measure.session import measure_in_run, open_session, plan
from harness.preset import write_preset_files
from harness.report import load_study
from harness.search import compose_trial, feasible, floors
from harness.pipeline.schedulers import is_official


def choose(study: optuna.Study, noise: float) -> optuna.trial.FrozenTrial:
    """The production trial: fastest feasible; ties within ``noise`` go to higher PSNR.

    Raises:
        ValueError: no feasible trial.
    """
    candidates = sorted((t for t in study.get_trials(deepcopy=False) if feasible(t)), key=lambda t: t.value)
    if not candidates:
        raise ValueError(f"study {study.study_name!r} has no feasible trial yet; run more trials or relax search.floors")
    fastest = candidates[0].value
    tied = [t for t in candidates if t.value <= fastest * (1 + noise)]
    return max(tied, key=lambda t: (t.user_attrs.get("mean_psnr_db", 0.0), -t.value))


def select_preset(cfg: DictConfig, base_overrides: list[str]) -> tuple[Path, Path]:
    """Choose, re-measure on held-out seeds, tag and export the production preset.

    Args:
        cfg: composed config (``study``, ``search.select``).
        base_overrides: overrides the config was composed with (model, prompts, paths...).

    Returns:
        Paths of the YAML and JSON exports.

    Raises:
        ValueError: unknown study or no feasible trial.
    """
    study = load_study(cfg)
    noise = float(cfg.search.select.noise)
    winner = choose(study, noise)
    seeds = list(cfg.search.select.seeds)
    used = set(cfg.search.seeds)
    if used & set(seeds):
        raise ValueError(f"search.select.seeds={seeds} overlap the search's seeds {sorted(used)}; pick unseen seeds")
    overrides = [o for o in base_overrides if not o.startswith(("study=", "search."))]
    trial_cfg = compose_trial([
        *overrides, *space.overrides(winner.params), f"name=production-{study.study_name}",
        f"prompts.seeds={seeds}", f"timing.repeats={int(cfg.search.select.repeats)}",
    ])
    plan_ = plan(trial_cfg)
    session = open_session(trial_cfg, plan_)
    experiment_id = tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    client = mlflow.MlflowClient()
    for old in client.search_runs([experiment_id], f"tags.preset = 'production' and tags.study = '{study.study_name}'"):
        client.delete_tag(old.info.run_id, "preset")  # one production preset per study
    tags = {"kind": "production", "study": study.study_name, "trial_number": str(winner.number), "preset": "production"}
    with tracking.run(f"production {study.study_name} (#{winner.number})", tags=tags):
        summary = measure_in_run(trial_cfg, plan_, session)
    if "mlflow_run_id" in winner.user_attrs:
        client.set_tag(winner.user_attrs["mlflow_run_id"], "preset", "production")

    baseline = {m: study.user_attrs.get(f"baseline_{m}") for m in ("clip_score", "psnr_db", "ssim")}
    held = [f"{f.describe()}: {summary.get(f'mean_{f.metric}', float('nan')):.3g} on held-out seeds"
            + ("" if summary.get(f"mean_{f.metric}", -math.inf) >= f.threshold(baseline) else " (BELOW the floor)")
            for f in floors(cfg) if f.ratio is None or baseline.get(f.metric) is not None]
    preset = plan_.preset
    measured = summary["median_wall_time_s"]
    preset = type(preset)(**{**preset.to_worker(), "expected_time": math.ceil(measured * 10) / 10})
    device = session.loaded.device.type
    notes = [
        f"Production preset from study {study.study_name!r}, trial #{winner.number} "
        f"({winner.user_attrs.get('preset_name', 'searched')}); chosen by harness.select.",
        f"expected_time = median wall time re-measured on held-out seeds {seeds} ({len(plan_.prompts)} prompt(s), "
        f"{plan_.repeats} repeat(s)) with model {session.loaded.name!r} on {device}: {measured:.3f} s; "
        f"search time was {winner.value:.3f} s.",
        *held,
    ]
    if not is_official(preset.sample_solver, session.solvers):
        notes.append(
            f"WARNING: sample_solver={preset.sample_solver!r} exists only through diffusers; the official "
            f"Wan code path (generate.py) offers only unipc and dpm++."
        )
    if plan_.speed.guidance_stop < 1.0:
        notes.append(
            f"WARNING: measured with guidance truncation (speed.guidance_stop={plan_.speed.guidance_stop:g}: "
            f"guidance on the first {plan_.speed.guidance_stop:.0%} of the steps), which is not a worker key; "
            f"the worker must implement it to reach expected_time."
        )
    if plan_.speed.cache != "none":
        notes.append(
            f"WARNING: measured with the diffusers cache speed.cache={plan_.speed.cache} (threshold "
            f"{plan_.speed.cache_threshold:g}), which is not a worker key; the worker must enable it."
        )
    folder = Path(cfg.paths.root_dir) / "experiments" / study.study_name
    return write_preset_files(preset, folder, "video_fast", notes)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        yaml_path, json_path = select_preset(cfg, list(HydraConfig.get().overrides.task))
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(yaml_path.read_text())
    print(f"wrote {yaml_path} and {json_path}")
    print(f"measure it again: python -m harness.run preset_file={yaml_path}")


if __name__ == "__main__":
    main()
