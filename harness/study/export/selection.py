"""Pick the production preset from a study, verify it on held-out seeds, export only what held.

Candidates are the study's feasible trials faster than the baseline, fastest first (a
slower one within timing noise, ``search.select.noise``, goes first when it is more
faithful to the baseline's video). Each is re-measured on seeds the search never saw, with
the study's own model, device and protocol (anything else is refused, naming the
difference), paired with the baseline: the baseline generated beside each of its videos,
interleaved (:mod:`harness.measure.pairing`). The first that meets every floor there and
whose paired speed-up's 95% interval lies above 1 is tagged ``preset=production`` and
written as ``video_fast.yaml``, ``.json`` and ``.py`` in the worker's keys into the study's
folder (``study_dir``), ``expected_time`` its re-measured median. A candidate that keeps
its floors but whose interval reaches below 1 is measured again, up to
``search.select.attempts`` times, each measurement's pairs pooled with the earlier ones; then
nothing is exported and the error says how noisy the machine was. If no candidate holds its
floors, nothing is exported or tagged, and the error says which floors failed by how much.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import optuna
from omegaconf import DictConfig

from harness.measure import tracking
from harness.measure.pairing import PairedSpeedup
from harness.measure.plan import Plan, plan
from harness.measure.results import Summary, recorded
from harness.measure.session import Session, measure_in_run, open_session
from harness.pipeline.load import resolve_model
from harness.pipeline.schedulers import is_official
from harness.preset import write_preset_files
from harness.study.engine import space
from harness.study.engine.compose import derive
from harness.study.engine.fingerprint import differences, measured_with
from harness.study.engine.floors import FLOOR_METRICS, Floor, baseline_trial, feasible, floors, is_baseline
from harness.study.export.drift import record_pairing
from harness.study.report.folder import study_folder
from harness.study.workers.storage import load_study, use_study_experiment

log = logging.getLogger(__name__)


def choose(study: optuna.Study, noise: float) -> optuna.trial.FrozenTrial:
    """The first candidate: fastest feasible; ties within ``noise`` go to higher PSNR.

    Raises:
        ValueError: no feasible trial.
    """
    return candidates(study, noise)[0]


def candidates(study: optuna.Study, noise: float) -> list[optuna.trial.FrozenTrial]:
    """Feasible trials other than the baseline, in the order they are verified.

    Raises:
        ValueError: no feasible trial.
    """
    feasible_trials = sorted(
        (t for t in study.get_trials(deepcopy=False) if feasible(t) and not is_baseline(t)),
        key=lambda t: t.value,
    )
    if not feasible_trials:
        raise ValueError(
            f"study {study.study_name!r} has no feasible trial yet; run more trials or relax search.floors"
        )
    fastest = feasible_trials[0].value
    tied = [t for t in feasible_trials if t.value <= fastest * (1 + noise)]
    first = max(tied, key=lambda t: (recorded(t).mean("psnr_db") or 0.0, -t.value))
    return [first, *(t for t in feasible_trials if t is not first)]


def tie_note(winner: optuna.trial.FrozenTrial, ordered: list[optuna.trial.FrozenTrial], noise: float) -> list[str]:
    """Why the winner is not the fastest feasible trial, when it went first on fidelity (see ``candidates``)."""
    fastest = min(ordered, key=lambda t: t.value)
    if winner is fastest or winner is not ordered[0]:
        return []
    fastest_psnr, winner_psnr = (recorded(t).mean("psnr_db") or float("nan") for t in (fastest, winner))
    return [
        f"Chosen over the fastest feasible trial #{fastest.number} ({fastest.value:.4g} s, PSNR {fastest_psnr:.1f} "
        f"dB on the search's seeds): within search.select.noise={noise:g} of it and more faithful to the baseline's "
        f"video (PSNR {winner_psnr:.1f} dB)."
    ]


def _missed_note(missed: list[str]) -> list[str]:
    """Candidates verified before the winner that failed their floors on the held-out seeds."""
    return [f"Failed on held-out seeds, so not chosen: {'; '.join(missed)}."] if missed else []


def _check_protocol(cfg: DictConfig, study: optuna.Study) -> None:
    """Refuse to re-measure with another model, device or protocol than the study's."""
    recorded = study.user_attrs.get("measured_with")
    if recorded is None:
        raise ValueError(f"study {study.study_name!r} has no recorded measurement protocol; run harness.search first")
    changed = differences(recorded, measured_with(cfg))
    if changed:
        raise ValueError(
            f"study {study.study_name!r} was measured with {'; '.join(changed)}: re-measure its winner with the "
            f"study's own settings (pass the same model, prompts and search overrides as harness.search)"
        )


class Verifier:
    """Re-measures presets on the held-out seeds, each as an MLflow run of kind ``verification``."""

    def __init__(self, cfg: DictConfig, study: optuna.Study):
        self.cfg, self.study = cfg, study
        self.seeds = list(cfg.search.select.seeds)
        used = set(cfg.search.seeds)
        if used & set(self.seeds):
            raise ValueError(
                f"search.select.seeds={self.seeds} overlap the search's seeds {sorted(used)}; pick unseen seeds"
            )
        self.experiment_id = use_study_experiment(cfg, study)

    def measure(
        self, params: dict[str, Any], name: str, number: int | str, paired: bool = True
    ) -> tuple[Plan, Session, Summary, str]:
        """Measure a trial's values on the held-out seeds: paired with the baseline, ``search.select.repeats`` pairs
        per video; or, not paired, once per video (the baseline's own scores, which ratio floors are relative to)."""
        repeats = int(self.cfg.search.select.repeats) if paired else 1
        updates = {"name": name, "prompts": {"seeds": self.seeds}, "timing": {"repeats": repeats}}
        trial_cfg = derive(self.cfg, {**space.updates(params), **updates})
        plan_ = plan(trial_cfg)
        session = open_session(trial_cfg, plan_)
        tags = {"kind": "verification", "study": self.study.study_name, "trial_number": str(number)}
        with tracking.run(f"{name} on held-out seeds {self.seeds}", tags=tags) as run:
            summary = measure_in_run(trial_cfg, plan_, session, paired=paired)
        return plan_, session, summary, run.info.run_id


def failed_floors(floor_list: list[Floor], baseline: Summary, summary: Summary) -> list[str]:
    """Each floor a summary misses, as ``metric value < threshold (short by x)``."""
    reference = {metric: baseline.mean(metric) for metric in FLOOR_METRICS}
    failed = []
    for floor in floor_list:
        value, threshold = summary.mean(floor.metric), floor.threshold(reference)
        if value is None or value < threshold:
            shown = "missing" if value is None else f"{value:.3g}"
            failed.append(
                f"{floor.metric} {shown} < {threshold:.3g}"
                + ("" if value is None else f" (short by {threshold - value:.3g})")
            )
    return failed


def _warnings(plan_: Plan, session: Session) -> list[str]:
    """What the worker must know: a solver off the official path, levers that are not worker keys."""
    preset, speed, notes = plan_.preset, plan_.speed, []
    if not is_official(preset.sample_solver, session.solvers):
        notes.append(
            f"WARNING: sample_solver={preset.sample_solver!r} exists only through diffusers; the official "
            f"Wan code path (generate.py) offers only unipc and dpm++."
        )
    if speed.guidance_stop < 1.0:
        notes.append(
            f"WARNING: measured with guidance truncation (speed.guidance_stop={speed.guidance_stop:g}: "
            f"guidance on the first {speed.guidance_stop:.0%} of the steps), which is not a worker key; "
            f"the worker must implement it to reach expected_time."
        )
    if speed.cache != "none":
        notes.append(f"WARNING: measured with the cache speed.cache={speed.cache} ({_cache_settings(speed)}), which is "
                     f"not a worker key; the worker must enable it to reach expected_time.")  # fmt: skip
    if speed.cfg == "batched":
        notes.append("WARNING: measured with both guidance passes as one transformer call of batch 2 "
                     "(speed.cfg=batched); the official code runs two calls: the worker must batch them.")  # fmt: skip
    if speed.precision != "worker":
        notes.append(
            f"WARNING: measured with {speed.precision} transformer weights (speed.precision={speed.precision}), "
            f"which is not a worker key; the worker must load its transformer so to reach expected_time."
        )
    if speed.quant != "none":
        notes.append(f"WARNING: measured with the transformer quantized by torchao ({speed.quant}); the worker "
                     f"must quantize it the same way (torchao.quantization.quantize_).")  # fmt: skip
    return notes


def _cache_settings(speed: Any) -> str:
    if speed.cache == "magcache":
        return (
            f"threshold {speed.magcache_threshold:g}, K {speed.magcache_k}, retention {speed.magcache_retention:g}, "
            "with ratios the harness calibrated for this model and preset: see the run's magcache_ratios.json"
        )
    if speed.cache == "dbcache":
        calibrator = f", TaylorSeer calibrator of order {speed.dbcache_taylorseer}" if speed.dbcache_taylorseer else ""
        return f"cache-dit DBCache, residual threshold {speed.cache_threshold:g}{calibrator}"
    if speed.cache == "taylorseer":
        return f"interval {speed.cache_interval}"
    return f"threshold {speed.cache_threshold:g}"


def worker_note(plan_: Plan) -> str:
    """Which worker the figures hold for."""
    if plan_.worker.name == "official":
        return (
            "Measured for the official Wan 2.1 code (worker=official): its negative prompt, noise schedule, "
            "noise generator, precision, guidance passes and pixel conversion."
        )
    return f"Measured for worker={plan_.worker.name} ({plan_.worker.describe()}), not the official Wan 2.1 code."


def expected_time(seconds: float) -> float:
    """The re-measured median to 3 significant figures: rounded by at most 0.5%, never up to the next 0.1 s."""
    return float(f"{seconds:.3g}")


def _export(
    verifier: Verifier,
    winner: optuna.trial.FrozenTrial,
    verified: tuple,
    floor_list: list[Floor],
    why: list[str],
    folder: Path,
) -> tuple[Path, Path]:
    study = verifier.study
    plan_, session, summary, verification_run = verified
    speedup: PairedSpeedup = summary.paired
    client = mlflow.MlflowClient()
    query = f"tags.preset = 'production' and tags.study = {tracking.quoted(study.study_name)}"
    for old in client.search_runs([verifier.experiment_id], query):
        client.delete_tag(old.info.run_id, "preset")  # one production preset per study
    for run_id in (verification_run, winner.user_attrs.get("mlflow_run_id")):
        if run_id:
            client.set_tag(run_id, "preset", "production")
    for key, value in speedup.to_metrics().items():  # the speed-up of every pair measured, as the export states it
        client.log_metric(verification_run, key, value)
    measured, spread = summary.seconds_per_video, summary.spread
    held = [f"{f.describe()}: {summary.mean(f.metric) or float('nan'):.3g} on held-out seeds" for f in floor_list]
    held += [f"PSNR beside its {summary.noise_floor} (measured by harness.audit)"] if summary.noise_floor else []
    notes = [
        f"Production preset from study {study.study_name!r}, trial #{winner.number} "
        f"({winner.user_attrs.get('preset_name', 'searched')}); verified by harness.select on held-out seeds.",
        f"Paired speed-up on held-out seeds: {speedup.cell()} (95% interval; {speedup.pairs} pairs, the baseline "
        f"generated beside each video in alternating order: {speedup.baseline_s:.4g} s against "
        f"{speedup.preset_s:.4g} s).",
        f"expected_time = median wall time re-measured on held-out seeds {plan_.seeds} ({len(plan_.prompts)} "
        f"prompt(s), {plan_.repeats} repeat(s), spread {'n/a' if spread is None else f'{spread:.1%}'}) with model "
        f"{session.loaded.name!r} on {session.loaded.device.type}: {measured:.4g} s; search time was "
        f"{winner.value:.4g} s.",
        worker_note(plan_),
        f"Output: {plan_.shape.output_spec(plan_.fps)}"
        + (f" (changed from the baseline's: {summary.spec_change})" if summary.spec_change else ""),
        *held,
        *why,
        *_warnings(plan_, session),
    ]
    preset = replace(plan_.preset, expected_time=expected_time(measured))
    written = write_preset_files(preset, folder, "video_fast", notes)
    study.set_user_attr("exported", {"trial": winner.number, "speedup": speedup.cell(), "pairs": speedup.pairs})
    record_pairing(study, winner.number, speedup, f"harness.select, held-out seeds {plan_.seeds}")
    return written


class NoisyVerification(ValueError):
    """A candidate kept its floors, but the machine was too noisy to show it faster than the baseline."""


def _verify(verifier: Verifier, trial: optuna.trial.FrozenTrial, floor_list: list[Floor], baseline: Summary) -> tuple:
    """Measure a candidate paired on the held-out seeds until its speed-up clears 1 (or it misses a floor).

    Each further measurement adds its pairs to the earlier ones (a busy machine needs more pairs for the same
    certainty; throwing the earlier ones away would ask as much of every measurement).

    Returns:
        ``(verified, failed)``: the last measurement, its summary carrying the speed-up of every pair measured, and
        the floors (or speed-up) it missed; ``failed`` is empty when it holds every floor and its paired speed-up's
        interval lies above 1.

    Raises:
        NoisyVerification: it held its floors, but its interval still reached below 1 after the last attempt.
    """
    name = trial.user_attrs.get("preset_name", f"trial-{trial.number}")
    attempts, speedup = int(verifier.cfg.search.select.attempts), None
    for attempt in range(1, attempts + 1):
        plan_, session, summary, run_id = verifier.measure(trial.params, name, trial.number)
        speedup = summary.paired if speedup is None else speedup.pooled_with(summary.paired)
        verified = (plan_, session, replace(summary, paired=speedup), run_id)
        failed = failed_floors(floor_list, baseline, summary)
        if failed or speedup.clears(1.0):
            return verified, failed
        if speedup.high is not None and speedup.high < 1.0:
            return verified, [f"paired speed-up {speedup.cell()}: slower than the baseline"]
        log.warning("#%d %s: paired speed-up %s over %d pairs does not clear 1 (attempt %d of %d)", trial.number,
                    name, speedup.cell(), speedup.pairs, attempt, attempts)  # fmt: skip
    spread = summary.spread
    raise NoisyVerification(
        f"candidate #{trial.number} {name} held every floor on held-out seeds, but its paired speed-up "
        f"{speedup.cell()} over {speedup.pairs} pairs in {attempts} paired measurement(s) did not clear 1 (its "
        f"videos' times spread {'n/a' if spread is None else f'{spread:.0%}'}, bound "
        f"{verifier.cfg.timing.noise_bound:.0%}): the machine is too busy to verify a speed-up, nothing exported; "
        f"run harness.select again on a quiet machine, or raise search.select.attempts"
    )


def select_preset(cfg: DictConfig) -> tuple[Path, Path]:
    """Verify the study's candidates on held-out seeds and export the first that holds every floor and is faster.

    Args:
        cfg: composed config (``study``, ``search.select``, the study's model and settings, ``study_dir``).

    Returns:
        Paths of the YAML and JSON exports.

    Raises:
        ValueError: unknown study, another protocol than the study's, no feasible trial, a ``study_dir`` that
            holds another report, no candidate that holds its floors on the held-out seeds, or one that holds
            them on a machine too noisy to show it faster (nothing is exported).
    """
    cfg = resolve_model(cfg)  # once: every measurement below reads the same model
    study = load_study(cfg)
    _check_protocol(cfg, study)
    folder = study_folder(cfg, study.study_name, len(study.trials))
    verifier = Verifier(cfg, study)
    floor_list = floors(cfg)
    trial = baseline_trial(study.trials)
    feasible_trials = candidates(study, float(cfg.search.select.noise))
    order = feasible_trials[: int(cfg.search.select.candidates)]
    params, number = (trial.params, trial.number) if trial else ({}, "baseline")
    baseline = verifier.measure(params, "baseline", number, paired=False)[2]  # its scores on the held-out seeds
    missed = []
    for trial in order:
        verified, failed = _verify(verifier, trial, floor_list, baseline)
        if not failed:
            why = [*tie_note(trial, feasible_trials, float(cfg.search.select.noise)), *_missed_note(missed)]
            return _export(verifier, trial, verified, floor_list, why, folder)
        missed.append(
            f"#{trial.number} {trial.user_attrs.get('preset_name', f'trial-{trial.number}')}: " + ", ".join(failed)
        )
    raise ValueError(
        f"no candidate of study {study.study_name!r} held its floors on held-out seeds {verifier.seeds}, nothing "
        f"exported: " + "; ".join(missed)
    )
