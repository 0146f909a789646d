"""Audit the proposal's claims on this machine: ``python -m harness.audit [model=toy]``.

Measures, with the same timed generation as every run: time per step by solver and by
shift, time against steps, time per step against tokens (frames x size), guidance's
second pass, and the stages. Fits time = fixed + steps x passes x (a + b x tokens) and
reports its error; prints each knob's claimed speed-up beside the measured one. Writes
``experiments/audit-<machine>/report.md`` with plots, and logs it to MLflow.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from harness import tracking  # noqa: E402
from harness.pipeline.generate import GenerationRequest, generate  # noqa: E402
from harness.measure.session import open_session, plan  # noqa: E402
from harness.preset import resolve_shape, validate_preset  # noqa: E402
from harness.report import save_figure  # noqa: E402

# The proposal's claimed speed-ups, each against the baseline preset.
CLAIMS = {
    "steps 25 -> 18": 0.40,
    "solver unipc -> euler": 0.25,
    "shift 5 -> 3": 0.15,
    "frames 83 -> 64": 0.25,
    "size 480*832 -> 384*640": 0.35,
}


@dataclass
class Point:
    """One measured configuration: median wall and denoise times over repeats."""

    label: str
    steps: int
    passes: int
    tokens: int
    wall_s: float
    denoise_s: float
    step_s: float
    spread: float  # (max - min) / median of the wall times over repeats
    stages: dict[str, float]


def machine_name(device: torch.device) -> str:
    """A short, file-safe name of this machine, e.g. ``cpu-2cores`` or ``nvidia-h100``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")[:40]
    return f"cpu-{os.cpu_count()}cores"


def run_audit(cfg: DictConfig) -> Path:
    """Measure, fit, compare with the proposal, and write the report.

    Args:
        cfg: composed config (model, preset = the baseline, ``audit`` settings).

    Returns:
        The report's path.
    """
    base_plan = plan(cfg)
    session = open_session(cfg, base_plan)
    solvers, loaded = session.solvers, session.loaded
    repeats = int(cfg.audit.repeats)
    base = base_plan.preset
    prompt = base_plan.prompts[0]

    def shape_of(size: str, frames: int):
        preset = validate_preset({**base.to_worker(), "size": size, "frame_num": frames}, solvers)
        return resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal)

    def measure(label: str, steps: int = base.sample_steps, solver: str = base.sample_solver,
                shift: float = base.sample_shift, guidance: float = base.sample_guide_scale,
                size: str = base.size, frames: int = base.frame_num) -> Point:
        shape = shape_of(size, frames)
        request = GenerationRequest(prompt, 0, shape, steps, guidance, solver, shift, base_plan.negative_prompt)
        generate(loaded, GenerationRequest(**{**request.__dict__, "steps": 2}), solvers)  # warm this shape
        runs = [generate(loaded, request, solvers) for _ in range(repeats)]
        walls = [r.wall_s for r in runs]
        wall = statistics.median(walls)
        return Point(
            label=label, steps=steps, passes=2 if guidance > 1 else 1,
            tokens=loaded.latent_grid(shape.width, shape.height, shape.num_frames)[1], wall_s=wall,
            denoise_s=statistics.median(r.denoise_s for r in runs),
            step_s=statistics.median(statistics.median(r.step_times[1:] or r.step_times) for r in runs),
            spread=(max(walls) - min(walls)) / wall,
            stages={"text encoding": statistics.median(r.text_encode_s for r in runs),
                    "denoising": statistics.median(r.denoise_s for r in runs),
                    "VAE decode": statistics.median(r.decode_s for r in runs)},
        )

    plan_points = (
        [("solver", dict(solver=s)) for s in ("unipc", "dpm++", "euler")]
        + [("shift", dict(shift=s)) for s in (1.0, 3.0, 5.0, 8.0)]
        + [("steps", dict(steps=s)) for s in cfg.audit.steps]
        + [("tokens", dict(size=size, frames=f)) for size in cfg.audit.sizes for f in cfg.audit.frames]
        + [("guidance", dict(guidance=g)) for g in (1.0, base.sample_guide_scale)]
    )
    points: dict[str, list[Point]] = {}
    for group, knobs in tqdm(plan_points, desc="audit", unit="config"):
        label = ", ".join(f"{k}={v}" for k, v in knobs.items())
        points.setdefault(group, []).append(measure(label, **knobs))
    everything = [p for group in points.values() for p in group]
    noise = statistics.median(p.spread for p in everything)

    # Cost model: wall = fixed + steps x passes x (a + b x tokens), least squares.
    design = np.array([[1.0, p.steps * p.passes, p.steps * p.passes * p.tokens] for p in everything])
    target = np.array([p.wall_s for p in everything])
    (fixed, per_pass, per_token), *_ = np.linalg.lstsq(design, target, rcond=None)
    predicted = design @ np.array([fixed, per_pass, per_token])
    errors = np.abs(predicted - target) / target
    model_error = float(np.median(errors))

    baseline = measure("baseline")
    claims = {
        "steps 25 -> 18": measure("steps 18", steps=18),
        "solver unipc -> euler": measure("euler", solver="euler"),
        "shift 5 -> 3": measure("shift 3", shift=3.0),
        "frames 83 -> 64": measure("frames 64", frames=64),
        "size 480*832 -> 384*640": measure("size 384*640", size="384*640"),
    }
    machine = machine_name(loaded.device)
    folder = Path(cfg.paths.root_dir) / "experiments" / f"audit-{machine}"
    folder.mkdir(parents=True, exist_ok=True)
    pictures = _plots(points, folder, (fixed, per_pass, per_token))

    lines = [
        f"# Audit of the proposal's knobs on `{machine}`\n",
        f"Model `{loaded.name}` ({str(loaded.dtype).removeprefix('torch.')}) on {loaded.device.type}"
        f" ({torch.cuda.get_device_name(loaded.device) if loaded.device.type == 'cuda' else platform.processor() or platform.machine()}),"
        f" torch {torch.__version__}; each figure is the median of {repeats} generations after a warm-up.",
        f" Baseline preset as the model generates it: {baseline.tokens} tokens, {base.sample_steps} steps, {baseline.wall_s:.3f} s per video."
        f" Run-to-run noise (median spread of repeats): **{noise:.1%}**.\n",
        "## The proposal's claims against measurement\n",
        "| knob | claimed speed-up | measured speed-up | verdict |",
        "|---|---|---|---|",
    ]
    for name, point in claims.items():
        measured = baseline.wall_s / point.wall_s - 1
        verdict = "within noise: no speed-up" if abs(measured) <= max(noise, 0.02) else ("faster" if measured > 0 else "slower")
        lines.append(f"| {name} | +{CLAIMS[name]:.0%} | {measured:+.1%} | {verdict} |")
    lines += [
        "",
        "Solver and shift do not change the work per step (one model evaluation per step; shift only "
        "remaps sigmas); steps, guidance passes, frames and size do.\n",
        "## Time per step by solver and by shift\n",
        "| configuration | s/step | relative to first |", "|---|---|---|",
    ]
    for group in ("solver", "shift"):
        first = points[group][0].step_s
        lines += [f"| {p.label} | {p.step_s:.4f} | {p.step_s / first:.3f} |" for p in points[group]]
    guided, unguided = points["guidance"][1], points["guidance"][0]
    lines += [
        "",
        f"## Guidance\n\nGuidance {base.sample_guide_scale:g} (two passes per step) takes {guided.denoise_s:.3f} s of denoising, "
        f"guidance 1 (one pass) {unguided.denoise_s:.3f} s: **{guided.denoise_s / unguided.denoise_s:.2f}x**.\n",
        "## Cost model\n",
        f"time ≈ {fixed:.4f} s + steps × passes × ({per_pass:.3e} s + {per_token:.3e} s × tokens); "
        f"median error **{model_error:.1%}** over {len(everything)} measured configurations "
        f"(max {float(errors.max()):.1%}).\n",
        "![time against steps](steps.png)\n", "![time per step against tokens](tokens.png)\n",
        "## Stages of the baseline video\n",
        "| stage | s | share |", "|---|---|---|",
    ]
    total = sum(baseline.stages.values())
    lines += [f"| {k} | {v:.4f} | {v / total:.1%} |" for k, v in baseline.stages.items()]
    lines += ["", "## Every configuration measured\n", "| group | configuration | tokens | steps | passes | s/video | s/step | spread |",
              "|---|---|---|---|---|---|---|---|"]
    for group, group_points in points.items():
        lines += [f"| {group} | {p.label} | {p.tokens} | {p.steps} | {p.passes} | {p.wall_s:.4f} | {p.step_s:.4f} | {p.spread:.1%} |"
                  for p in group_points]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n")

    tracking.use_store(Path(cfg.paths.mlruns_dir), str(cfg.tracking.experiment))
    with tracking.run(f"audit {machine}", tags={"kind": "audit", "machine": machine}):
        mlflow.log_params({"model": loaded.name, "device": loaded.device.type, "repeats": repeats})
        mlflow.log_metrics({"noise": noise, "cost_model_median_error": model_error, "baseline_wall_s": baseline.wall_s,
                            **{f"claim_measured_{i}": baseline.wall_s / p.wall_s - 1 for i, p in enumerate(claims.values())}})
        for file in [report, *pictures]:
            mlflow.log_artifact(str(file), artifact_path="audit")
    print("\n".join(lines[:5 + 2 + len(claims) + 1]))
    print(f"cost model median error {model_error:.1%}; wrote {report}")
    return report


def _plots(points: dict[str, list[Point]], folder: Path, fit: tuple[float, float, float]) -> list[Path]:
    fixed, per_pass, per_token = fit
    steps = points["steps"]
    figure, axis = plt.subplots(figsize=(6, 4))
    xs = [p.steps for p in steps]
    axis.plot(xs, [p.wall_s for p in steps], "o", label="measured")
    grid = np.linspace(min(xs), max(xs), 50)
    axis.plot(grid, fixed + grid * steps[0].passes * (per_pass + per_token * steps[0].tokens), "-", label="cost model")
    axis.set_xlabel("steps")
    axis.set_ylabel("wall time per video (s)")
    axis.legend()
    axis.grid(alpha=0.3)
    pictures = [save_figure(figure, folder / "steps.png")]

    tokens = points["tokens"]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([p.tokens for p in tokens], [p.step_s for p in tokens], "o", label="measured s/step")
    grid = np.linspace(min(p.tokens for p in tokens), max(p.tokens for p in tokens), 50)
    axis.plot(grid, tokens[0].passes * (per_pass + per_token * grid), "-", label="cost model")
    for p in tokens:
        axis.annotate(p.label.replace("size=", "").replace(", frames=", " x "), (p.tokens, p.step_s), fontsize=7,
                      textcoords="offset points", xytext=(3, 3))
    axis.set_xlabel("transformer tokens (latent frames x H/16 x W/16)")
    axis.set_ylabel("time per step (s)")
    axis.legend()
    axis.grid(alpha=0.3)
    return [*pictures, save_figure(figure, folder / "tokens.png")]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_audit(cfg)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
