"""Train the toy text-to-video world and ship it to ``harness/toy/weights``.

Stages (each saves its result under ``--work``, so a later stage can run alone):
``vae`` -> ``text`` -> ``transformer`` (needs the VAE and text) -> ``transformer2``
(continues it into ``transformer2/``) -> ``clip`` -> ``ship`` (needs all).

    python -m experiments.toy_world.train --stage all
    python -m experiments.toy_world.train --stage transformer   # rerun one stage
    python -m experiments.toy_world.train --stage all --smoke --work outputs/toy_smoke --out outputs/toy_smoke/ship
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from diffusers import WanPipeline, WanTransformer3DModel

STAGES = ("vae", "text", "transformer", "transformer2", "clip", "ship")
STEPS = {"vae": 1600, "transformer": 4000, "transformer2": 3000, "clip": 1500}  # full run
SMOKE_STEPS = {"vae": 10, "transformer": 20, "transformer2": 10, "clip": 20}


def run_stage(stage: str, work: Path, out: Path, steps: dict[str, int]) -> dict:
    """Run one stage and record its summary in ``work/<stage>.json``.

    Args:
        stage: one of :data:`STAGES`.
        work: training folder.
        out: shipping folder (used by ``ship``).
        steps: optimiser steps per trained stage.

    Returns:
        The stage's summary (with its wall time in seconds).
    """
    start = time.time()
    if stage == "vae":
        from experiments.toy_world.vae import train_vae

        summary = train_vae(work / "vae", steps["vae"])
    elif stage == "text":
        from experiments.toy_world.text import build_text_encoder

        summary = build_text_encoder(work)
    elif stage == "transformer":
        from experiments.toy_world.transformer import train_transformer

        summary = train_transformer(work, steps["transformer"])
    elif stage == "transformer2":  # a second phase from the first one's EMA weights, at half the peak rate
        from experiments.toy_world.transformer import train_transformer

        summary = train_transformer(
            work, steps["transformer2"], lr=5e-4, seed=1, start_from="transformer", save_as="transformer2"
        )
    elif stage == "clip":
        from experiments.toy_world.clip import train_clip

        summary = train_clip(work, steps["clip"])
    else:
        summary = ship(work, out)
    summary["wall_s"] = round(time.time() - start, 1)
    (work / f"{stage}.json").write_text(json.dumps(summary, indent=2))
    print(f"[toy_world] stage {stage} done in {summary['wall_s']:.0f} s: {summary}", flush=True)
    return summary


def ship(work: Path, out: Path) -> dict:
    """Save the pipeline (``out/wan``) and the CLIP (``out/clip``) and check they load.

    Args:
        work: training folder with every stage done.
        out: shipping folder; its ``wan/`` and ``clip/`` are replaced, the model card is kept.

    Returns:
        Summary: size in bytes, the stage summaries.
    """
    from experiments.toy_world.transformer import load_pipeline

    missing = [s for s in STAGES[:-1] if not (work / f"{s}.json").exists()]
    if missing:
        raise ValueError(f"stages {missing} have not run in {work}; run them first (--stage all)")
    for part in ("wan", "clip"):  # the model card (README.md, grid.png) stays
        shutil.rmtree(out / part, ignore_errors=True)
    pipe = load_pipeline(work, WanTransformer3DModel.from_pretrained(str(work / "transformer2")))
    pipe.save_pretrained(str(out / "wan"), safe_serialization=True)
    shutil.copytree(work / "clip", out / "clip")
    stages = {s: json.loads((work / f"{s}.json").read_text()) for s in STAGES[:-1]}
    (out / "training.json").write_text(json.dumps(stages, indent=2))

    check = WanPipeline.from_pretrained(str(out / "wan"))
    frames = check(
        "a red circle moving left",
        height=80,
        width=48,
        num_frames=17,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"bytes": size, "check_frames_shape": list(frames.shape)}


def main() -> None:
    """Command line: pick stages, folders and the smoke mode."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="all", choices=("all",) + STAGES)
    parser.add_argument("--work", type=Path, default=Path("outputs/toy_world"), help="training folder")
    parser.add_argument("--out", type=Path, default=Path("harness/toy/weights"), help="shipping folder")
    parser.add_argument("--smoke", action="store_true", help="a few steps per stage, to test the code")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.work.mkdir(parents=True, exist_ok=True)
    steps = SMOKE_STEPS if args.smoke else STEPS
    for stage in STAGES if args.stage == "all" else (args.stage,):
        run_stage(stage, args.work, args.out, steps)


if __name__ == "__main__":
    main()
