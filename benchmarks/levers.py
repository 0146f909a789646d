"""Each speed lever on the toy world: its transformer passes, its paired speed-up, its fidelity; the noise floor.

For the baseline preset and the exported preset (``experiments/video_fast/video_fast.yaml``), every lever is
measured as ``harness.run`` measures a preset: paired with the baseline (the baseline generated beside each
video, alternating order; median of the pairs' ratios with its 95% interval) and scored against the
baseline's own video (PSNR, SSIM). Its transformer passes per video are counted where the work is really
done (the last block's calls, by batch size), so a cache's skipped steps and a batch of two show. The noise
floor (``harness.measure.noise_floor``) gives the scale. A quiet machine is needed (the load is recorded):

    python benchmarks/levers.py                       # about 10 min on 2 cores
    python benchmarks/levers.py --repeats 2 --out /tmp/levers

Writes ``experiments/levers/table.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from harness.measure import noise_floor, tracking
from harness.measure.plan import plan
from harness.measure.session import measure_in_run, open_session
from harness.pipeline.generate import generate
from harness.study.engine.compose import compose_config
from harness.study.report.markdown import levers_section
from harness.study.report.summary import winner_line
from harness.study.workers.storage import load_study

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "levers"
LEVERS = {
    "none (the preset as the worker runs it)": [],
    "cfg=batched": ["speed.cfg=batched"],
    "guidance_stop=0.5": ["speed.guidance_stop=0.5"],
    "cache=first_block (0.05)": ["speed.cache=first_block", "speed.cache_threshold=0.05"],
    "cache=taylorseer (interval 5)": ["speed.cache=taylorseer", "speed.cache_interval=5"],
    "cache=magcache (0.06, K 3, 0.2)": ["speed.cache=magcache"],
    "cache=magcache (0.02, K 2, 0.2)": ["speed.cache=magcache", "speed.magcache_threshold=0.02", "speed.magcache_k=2"],
    "cache=dbcache (0.05)": ["speed.cache=dbcache", "speed.cache_threshold=0.05"],
    "cache=dbcache + TaylorSeer (0.05, order 1)": [
        "speed.cache=dbcache",
        "speed.cache_threshold=0.05",
        "speed.dbcache_taylorseer=1",
    ],
    "precision=bfloat16": ["speed.precision=bfloat16"],
    "quant=int8_weight_only": ["speed.quant=int8_weight_only"],
    "attention=_native_math": ["speed.attention=_native_math"],
}


def passes(cfg, plan_, session) -> float:
    """Transformer passes per video, counted where the work is done (the last block, by batch size)."""
    counted: list[int] = []
    request = plan_.request(plan_.prompts[0], plan_.seeds[0])
    if plan_.speed.cache == "magcache":
        request = replace(request, mag_ratios=session.mag_ratios.get(request).ratios)
    block = session.loaded.pipe.transformer.blocks[-1].ffn
    handle = block.register_forward_hook(lambda module, args, output: counted.append(args[0].shape[0]))
    try:
        generate(session.loaded, request, session.solvers)
    finally:
        handle.remove()
    return float(sum(counted))


def measure(preset: list[str], lever: list[str], repeats: int, root: Path) -> dict:
    """One lever on one preset: passes, the paired speed-up, PSNR and SSIM against the baseline's video."""
    overrides = [f"paths.root_dir={root}", "model=toy", f"timing.repeats={repeats}", *preset, *lever, "name=lever"]
    cfg = compose_config(overrides)
    plan_ = plan(cfg)
    session = open_session(cfg, plan_)
    tracking.use_store(cfg)
    with tracking.run("lever", tags={"kind": "benchmark"}):
        summary = measure_in_run(cfg, plan_, session, paired=True)
    paired = summary.paired
    return {
        "passes": passes(cfg, plan_, session),
        "speedup": None if paired is None else paired.to_dict(),
        "psnr_db": summary.mean("psnr_db"),
        "ssim": summary.mean("ssim"),
        "seconds": summary.seconds_per_video,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="pairs per prompt x seed")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--export", type=Path, default=ROOT / "experiments" / "video_fast" / "video_fast.yaml")
    parser.add_argument("--study-root", type=Path, default=ROOT, help="where `harness.search search=levers` ran")
    args = parser.parse_args(argv)
    root = ROOT / "outputs" / "bench-levers"
    presets = {
        "baseline (25 unipc, shift 5)": [],
        f"exported ({args.export.parent.name})": [f"preset_file={args.export}"],
    }
    load = [os.getloadavg()[0]]
    results = {name: {lever: measure(preset, overrides, args.repeats, root) for lever, overrides in
                      tqdm(LEVERS.items(), desc=name)} for name, preset in presets.items()}  # fmt: skip
    load.append(os.getloadavg()[0])
    cfg = compose_config([f"paths.root_dir={root}", "model=toy"])
    plan_ = plan(cfg)
    floor = noise_floor.measure(cfg, plan_, open_session(cfg, plan_), float(cfg.quality.psnr_cap_db))
    args.out.mkdir(parents=True, exist_ok=True)
    everything = {"presets": results, "noise_floor": floor, "load_average": load, "repeats": args.repeats,
                  "export": OmegaConf.to_container(OmegaConf.load(args.export)),
                  "levers_study": levers_study(args.study_root)}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(everything, indent=1))
    (args.out / "table.md").write_text(table(everything, args))
    print(table(everything, args))
    mlflow.end_run()


def levers_study(root: Path) -> dict[str, str] | None:
    """The `search=levers` study's winner at the default floors and its levers' verdicts, if it was run."""
    cfg = compose_config([f"paths.root_dir={root}", "model=toy", "search=levers"])
    try:
        study = load_study(cfg)
    except ValueError as missing:  # no such study in that storage: say so in the table
        return {"missing": str(missing)}
    floors = "; ".join(study.user_attrs.get("floors", []))
    return {
        "winner": winner_line(study),
        "floors": floors,
        "levers": levers_section(study),
        "trials": len(study.trials),
    }


def _study_lines(found: dict[str, str] | None) -> list[str]:
    lines = ["## The best preset of `harness.search search=levers` at the default floors\n"]
    if found is None or "missing" in found:
        return [*lines, f"Not measured: {(found or {}).get('missing', 'no study')}\n"]
    return [*lines, f"{found['trials']} trials; floors: {found['floors']}.\n", found["winner"] + "\n", found["levers"]]


def _speed(found: dict | None) -> str:
    if found is None:
        return "baseline"
    interval = "" if found["low"] is None else f" [{found['low']:.2f}, {found['high']:.2f}]"
    return f"{found['median']:.2f}x{interval}"


def table(results: dict, args: argparse.Namespace) -> str:
    export = results["export"]
    lines = [
        "# Speed levers on the toy world: passes, paired speed-up, fidelity\n",
        f"Made by `python benchmarks/levers.py --repeats {args.repeats}` on a 2-core CPU (load average "
        f"{results['load_average'][0]:.1f} before, {results['load_average'][1]:.1f} after). Each row is measured "
        f"as `harness.run` measures a preset: the baseline generated beside each of its videos ({args.repeats} "
        "pairs per prompt x seed, 2 prompts), the speed-up the median of the pairs' ratios with its 95% "
        "interval; PSNR and SSIM against the baseline's own video. Passes: transformer passes per video where "
        "the work is done (a batch of two counts two; a cached step none).\n",
        f"Exported preset: {export['sample_steps']} {export['sample_solver']} steps, shift {export['sample_shift']}, "
        f"guidance {export['sample_guide_scale']}.\n",
    ]
    for preset, levers in results["presets"].items():
        lines += [f"## On the {preset}\n", "| lever | passes/video | speed-up vs the baseline | PSNR dB | SSIM |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for lever, row in levers.items():
            psnr = "" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
            ssim = "" if row["ssim"] is None else f"{row['ssim']:.3f}"
            lines.append(f"| {lever} | {row['passes']:.0f} | {_speed(row['speedup'])} | {psnr} | {ssim} |")
        lines.append("")
    lines += ["## Noise floor: the baseline's video against itself\n", "| change | PSNR dB | SSIM |", "|---|---|---|"]
    lines += [f"| {name} | {v['psnr_db']:.1f} | {v['ssim']:.4f} |" for name, v in results["noise_floor"].items()]
    lines += ["", *_study_lines(results.get("levers_study"))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
