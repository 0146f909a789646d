"""The audit's report: the proposal's claims beside measurement, the cost model, plots, MLflow."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import torch
from omegaconf import DictConfig

from harness.cost.model import CostModel, fit_cost_model
from harness.cost.sweep import CLAIMS, Point, Sweep
from harness.measure import noise_floor, tracking
from harness.measure.figures import save_figure
from harness.measure.pairing import MIN_PAIRS, PairedSpeedup
from harness.measure.plan import plan
from harness.measure.session import open_session
from harness.pipeline.device import device_label, dtype_name, load_average, load_line, machine_name
from harness.pipeline.load import LoadedPipeline, resolve_model
from harness.preset import Preset


@dataclass
class Audit:
    """Everything an audit measured and fitted, on one machine."""

    machine: str
    loaded: LoadedPipeline
    repeats: int
    base: Preset
    points: dict[str, list[Point]]
    baseline: Point
    claims: dict[str, Point]
    model: CostModel
    noise: float  # median relative spread of the repeats over every configuration
    noise_bound: float  # timing.noise_bound
    noise_floor: dict[str, dict[str, float]]  # the baseline's fidelity to itself under changes that should not matter
    claim_speedups: dict[str, PairedSpeedup]  # each claim paired with the baseline (Sweep.claims)
    load: str = ""  # the machine's load average when the audit started and ended (harness.pipeline.device.load_line)

    @property
    def noisy(self) -> bool:
        return self.noise > self.noise_bound

    @property
    def noisy_points(self) -> list[Point]:
        return [p for group in self.points.values() for p in group if p.spread > self.noise_bound]


def _resolution(noise: float) -> float:
    """The smallest difference the audit tells from noise: three times the noise, at least 2%.

    Each figure is a median of noisy repeats, so two figures of the same work differ by
    about the noise; three times it is a difference that noise alone seldom makes.
    """
    return max(3 * noise, 0.02)


def _rounds(audit: Audit) -> int:
    return next(iter(audit.claim_speedups.values())).pairs if audit.claim_speedups else 0


def _interval_clause(audit: Audit) -> str:
    if _rounds(audit) >= MIN_PAIRS:
        return " with a 95% bootstrap interval"
    return f" (no interval under {MIN_PAIRS} rounds: judged against the noise)"


def claims_table(audit: Audit) -> list[str]:
    """Markdown rows: each claimed speed-up beside the measured one (paired, with its interval) and a verdict."""
    lines = ["| knob | claimed speed-up | measured speed-up [95% interval] | verdict |", "|---|---|---|---|"]
    for name in audit.claims:
        paired = audit.claim_speedups[name]
        lines.append(f"| {name} | +{CLAIMS[name][0]:.0%} | {_percent(paired)} | {_verdict(paired, audit.noise)} |")
    return lines


def claim_metrics(audit: Audit) -> dict[str, float]:
    """MLflow metrics: each claim's measured speed-up (as a fraction, +0.25 for 1.25x) and its interval."""
    metrics = {}
    for i, name in enumerate(audit.claims):
        paired = audit.claim_speedups[name]
        metrics[f"claim_measured_{i}"] = paired.median - 1
        if paired.low is not None:
            metrics[f"claim_measured_{i}_ci_low"] = paired.low - 1
            metrics[f"claim_measured_{i}_ci_high"] = paired.high - 1
    return metrics


def _percent(paired: PairedSpeedup) -> str:
    if paired.low is None:
        return f"{paired.median - 1:+.1%} {paired.interval}"
    return f"{paired.median - 1:+.1%} [{paired.low - 1:+.1%}, {paired.high - 1:+.1%}]"


def _verdict(paired: PairedSpeedup, noise: float) -> str:
    """Faster or slower where the interval excludes no change; without one (too few rounds), against the noise."""
    if paired.low is None:
        measured = paired.median - 1
        if abs(measured) <= _resolution(noise):
            return "within noise: not resolved"
        return "faster" if measured > 0 else "slower"
    if paired.clears(1.0):
        return "faster"
    return "slower" if paired.high < 1.0 else "not resolved: its interval holds no change"


def knob_sentence(knob: str, points: list[Point], noise: float) -> str:
    """What a knob does to the time per step, said from the measured points and the noise."""
    steps = [p.step_s for p in points]
    deviation = max(steps) / min(steps) - 1
    if deviation <= _resolution(noise):
        return (
            f"{knob.capitalize()} changes the time per step by at most {deviation:.1%}, within what this audit "
            f"resolves ({_resolution(noise):.1%}, from {noise:.1%} noise): no measurable cost."
        )
    slowest = max(points, key=lambda p: p.step_s)
    return (
        f"{knob.capitalize()} changes the time per step by up to {deviation:.1%}, more than this audit "
        f"resolves ({_resolution(noise):.1%}, from {noise:.1%} noise; {slowest.label} slowest)."
    )


def guidance_sentence(audit: Audit) -> str:
    """What guidance costs here: the passes each guidance runs, their denoising times, and whether that resolves."""
    unguided, guided = audit.points["guidance"]
    ratio = guided.denoise_s / unguided.denoise_s
    sentence = (
        f"Guidance {audit.base.sample_guide_scale:g} ({_passes(guided)} per step) takes {guided.denoise_s:.3f} s of "
        f"denoising, guidance 1 ({_passes(unguided)} per step) {unguided.denoise_s:.3f} s: **{ratio:.2f}x**"
    )
    if abs(ratio - 1) <= _resolution(audit.noise):
        sentence += f", within what this audit resolves ({_resolution(audit.noise):.1%})"
    if unguided.passes == 2:
        sentence += (
            ". The worker runs the unconditional pass at any guidance (`worker.guidance_passes=always`, as the "
            "official code does), so guidance 1 saves no time; `worker=diffusers` skips that pass at guidance 1"
        )
    return sentence + "."


def _passes(point: Point) -> str:
    return f"{point.passes:g} pass{'es' if point.passes != 1 else ''}"


def noise_line(audit: Audit) -> str:
    """The noise the figures were measured under, and a warning when it exceeds the bound."""
    line = (
        f"Run-to-run noise (median relative spread of the repeats): **{audit.noise:.1%}**; "
        f"{len(audit.noisy_points)} of {sum(len(g) for g in audit.points.values())} configurations above the "
        f"{audit.noise_bound:.0%} bound."
    )
    if audit.noisy:
        line += (
            " **NOISY: this audit ran while the machine was busy; differences below "
            f"{_resolution(audit.noise):.0%} mean nothing here. Measure again on a quiet machine.**"
        )
    return line


def _details(audit: Audit) -> list[str]:
    points, model = audit.points, audit.model
    lines = [
        "## Time per step by solver and by shift\n",
        "| configuration | s/step | relative to first |",
        "|---|---|---|",
    ]
    for group in ("solver", "shift"):
        first = points[group][0].step_s
        lines += [f"| {p.label} | {p.step_s:.4f} | {p.step_s / first:.3f} |" for p in points[group]]
    lines += [
        "",
        f"## Guidance\n\n{guidance_sentence(audit)}\n",
        "## Cost model\n",
        f"time ≈ {model.fixed:.4f} s + steps × passes × ({model.per_pass:.3e} s + {model.per_token:.3e} s × tokens); "
        f"median error **{model.median_error:.1%}** over {len(model.errors)} measured configurations "
        f"(max {model.max_error:.1%}), fitted under {audit.noise:.1%} run-to-run noise: an error near the noise "
        f"is all any model can show here.\n",
        "![time against steps](steps.png)\n",
        "![time per step against tokens](tokens.png)\n",
        "## Stages of the baseline video\n",
        "| stage | s | share |",
        "|---|---|---|",
    ]
    total = sum(audit.baseline.stages.values())
    lines += [f"| {k} | {v:.4f} | {v / total:.1%} |" for k, v in audit.baseline.stages.items()]
    lines += ["", *noise_floor_lines(audit.noise_floor)]
    lines += [
        "",
        "## Every configuration measured\n",
        "| group | configuration | tokens | steps | passes | s/video | s/step | spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group, group_points in points.items():
        lines += [
            f"| {group} | {p.label} | {p.tokens} | {p.steps} | {p.passes} | {p.wall_s:.4f} | {p.step_s:.4f} "
            f"| {p.spread:.1%}{' NOISY' if p.spread > audit.noise_bound else ''} |"
            for p in group_points
        ]
    return lines


def noise_floor_lines(floor: dict[str, dict[str, float]]) -> list[str]:
    """The fidelity noise floor: the baseline's video against itself under each change that should not matter."""
    lines = [
        "## Fidelity noise floor\n",
        "The baseline's video (first prompt and seed) against itself, plain, under changes that compute the same "
        "function up to float rounding: the scale of every fidelity floor (a floor above these cannot tell a "
        "lever from rounding).\n",
        "| change | PSNR dB | SSIM |",
        "|---|---|---|",
    ]
    return lines + [f"| {name} | {v['psnr_db']:.1f} | {v['ssim']:.4f} |" for name, v in floor.items()]


def report_lines(audit: Audit) -> list[str]:
    """The whole report as markdown lines; its first lines are the summary printed to the terminal."""
    loaded = audit.loaded
    head = [
        f"# Audit of the proposal's knobs on `{audit.machine}`\n",
        f"Model `{loaded.name}` ({dtype_name(loaded.dtype)}) on {device_label(loaded.device)},"
        f" torch {torch.__version__}; each figure is the median of {audit.repeats} generations after a warm-up, "
        "the configurations of a knob generated round-robin, one of each per round (every other round in reverse "
        "order), so a machine's drift slows them alike. The proposal's claims are paired as `harness.run` pairs a "
        f"preset: in each of {_rounds(audit)} rounds the baseline is generated beside each turned knob, alternating "
        f"which goes first, and a claim's speed-up is the median of its pairs' ratios{_interval_clause(audit)}."
        f" Baseline preset as the model generates it: {audit.baseline.tokens} tokens, {audit.base.sample_steps} "
        f"steps, {audit.baseline.wall_s:.3f} s per video. {audit.load}".rstrip()
        + "\n",
        noise_line(audit) + "\n",
        "## The proposal's claims against measurement\n",
    ]
    knobs = [knob_sentence(knob, audit.points[knob], audit.noise) for knob in ("solver", "shift")]
    return [*head, *claims_table(audit), "", " ".join(knobs) + "\n", *_details(audit)]


def plots(points: dict[str, list[Point]], folder: Path, model: CostModel) -> list[Path]:
    """Time against steps and time per step against tokens, each with the cost model's line."""
    steps = points["steps"]
    figure, axis = plt.subplots(figsize=(6, 4))
    xs = [p.steps for p in steps]
    axis.plot(xs, [p.wall_s for p in steps], "o", label="measured")
    grid = np.linspace(min(xs), max(xs), 50)
    axis.plot(grid, [model.predict(s, steps[0].passes, steps[0].tokens) for s in grid], "-", label="cost model")
    axis.set(xlabel="steps", ylabel="wall time per video (s)")
    axis.legend()
    axis.grid(alpha=0.3)
    pictures = [save_figure(figure, folder / "steps.png")]

    tokens = points["tokens"]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([p.tokens for p in tokens], [p.step_s for p in tokens], "o", label="measured s/step")
    grid = np.linspace(min(p.tokens for p in tokens), max(p.tokens for p in tokens), 50)
    axis.plot(grid, tokens[0].passes * (model.per_pass + model.per_token * grid), "-", label="cost model")
    for p in tokens:
        axis.annotate(
            p.label.replace("size=", "").replace(", frames=", " x "),
            (p.tokens, p.step_s),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, 3),
        )
    axis.set(xlabel="transformer tokens (latent frames x H/16 x W/16)", ylabel="time per step (s)")
    axis.legend()
    axis.grid(alpha=0.3)
    return [*pictures, save_figure(figure, folder / "tokens.png")]


def log_audit(machine: str, loaded: LoadedPipeline, repeats: int, metrics: dict[str, float], files: list[Path]) -> None:
    """Log the audit as one MLflow run (kind ``audit``) with its report and plots as artifacts."""
    with tracking.run(f"audit {machine}", tags={"kind": "audit", "machine": machine}):
        mlflow.log_params({"model": loaded.name, "device": loaded.device.type, "repeats": repeats})
        mlflow.log_metrics(metrics)
        for file in files:
            mlflow.log_artifact(str(file), artifact_path="audit")


def run_audit(cfg: DictConfig) -> Path:
    """Measure every knob, fit the cost model, set the proposal's claims beside it, write the report.

    Args:
        cfg: composed config (model, preset = the baseline, ``audit`` settings).

    Returns:
        The report's path (``<audit.dir>/audit-<machine>-<date>/report.md``).
    """
    cfg = resolve_model(cfg)  # once: every measurement below reads the same model
    load_before = load_average()
    base_plan = plan(cfg)
    session = open_session(cfg, base_plan)
    repeats = int(cfg.audit.repeats)
    sweep = Sweep(cfg, base_plan, session, repeats)
    points = sweep.knobs()
    everything = [p for group in points.values() for p in group]
    model = fit_cost_model([(p.steps, p.passes, p.tokens, p.wall_s) for p in everything])
    baseline, claims, claim_speedups = sweep.claims(int(cfg.audit.claim_rounds))
    audit = Audit(
        machine=machine_name(session.loaded.device),
        loaded=session.loaded,
        repeats=repeats,
        base=base_plan.preset,
        points=points,
        baseline=baseline,
        claims=claims,
        claim_speedups=claim_speedups,
        model=model,
        noise=statistics.median(p.spread for p in everything),
        noise_bound=base_plan.noise_bound,
        noise_floor=noise_floor.measure(cfg, base_plan, session, float(cfg.quality.psnr_cap_db)),
        load=load_line(load_before),
    )
    return write_audit(cfg, audit)


def audit_folder(parent: Path, machine: str, overwrite: bool) -> Path:
    """``audit-<machine>`` when overwriting, else a new ``audit-<machine>-<date>`` (``-<time>`` if taken)."""
    if overwrite:
        folder = parent / f"audit-{machine}"
    else:
        now = datetime.now()
        folder = parent / f"audit-{machine}-{now:%Y-%m-%d}"
        if folder.exists():
            folder = parent / f"audit-{machine}-{now:%Y-%m-%d-%H%M%S}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_audit(cfg: DictConfig, audit: Audit) -> Path:
    """Write the report and plots, log them to MLflow, print the summary; returns the report's path."""
    folder = audit_folder(Path(str(cfg.audit.dir)), audit.machine, bool(cfg.audit.overwrite))
    pictures = plots(audit.points, folder, audit.model)
    lines = report_lines(audit)
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n")
    model, baseline, claims = audit.model, audit.baseline, audit.claims
    tracking.use_store(cfg)
    metrics = {
        "noise": audit.noise,
        "cost_model_median_error": model.median_error,
        "baseline_wall_s": baseline.wall_s,
        **claim_metrics(audit),
    }
    log_audit(audit.machine, audit.loaded, audit.repeats, metrics, [report, *pictures])
    print("\n".join(lines[: 4 + 2 + len(claims) + 2]))  # title, noise, claims table, the knobs' sentence
    print(f"cost model median error {model.median_error:.1%} under {audit.noise:.1%} noise; wrote {report}")
    if audit.noisy:
        print(
            f"NOISY: run-to-run noise {audit.noise:.1%} exceeds timing.noise_bound {audit.noise_bound:.0%}; "
            f"measure again on a quiet machine"
        )
    return report
