"""Harness overhead per video against a plain diffusers call, and model loads per study.

Both run in one process, on the same pipeline and preset, interleaved so machine load
affects both alike; printed as a ratio (never asserted in tests).

    python benchmarks/harness_overhead.py              # tiny model
    python benchmarks/harness_overhead.py model=toy
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.pipeline.generate import GenerationRequest, generate
from harness.pipeline.load import LOAD_COUNT, load_pipeline
from harness.preset import resolve_shape, validate_preset
from harness.study.engine.optimize import search_presets

CONF = str(Path(__file__).resolve().parents[1] / "conf")
REPEATS = 7


def main(overrides: list[str]) -> None:
    overrides = ["model=tiny", "+experiment=balanced", *overrides]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    preset = validate_preset(OmegaConf.to_container(cfg.preset, resolve=True), solvers)
    shape = resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal)
    loaded = load_pipeline(cfg.model)
    request = GenerationRequest(
        "a red circle moving left",
        0,
        shape,
        preset.sample_steps,
        preset.sample_guide_scale,
        preset.sample_solver,
        preset.sample_shift,
    )

    def plain() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            loaded.pipe(
                "a red circle moving left",
                height=shape.height,
                width=shape.width,
                num_frames=shape.num_frames,
                num_inference_steps=preset.sample_steps,
                guidance_scale=preset.sample_guide_scale,
                generator=torch.Generator().manual_seed(0),
            )
        return time.perf_counter() - start

    def harness() -> float:
        start = time.perf_counter()
        generate(loaded, request, solvers)
        return time.perf_counter() - start

    plain(), harness()  # warm-up
    pairs = [(plain(), harness()) for _ in range(REPEATS)]
    plain_s = statistics.median(p for p, _ in pairs)
    harness_s = statistics.median(h for _, h in pairs)
    print(
        f"{loaded.name} {preset.sample_steps} steps at {shape.width}x{shape.height}x{shape.num_frames}: "
        f"plain WanPipeline {plain_s:.3f} s, harness.generate {harness_s:.3f} s per video "
        f"-> overhead ratio {harness_s / plain_s:.3f} (median of {REPEATS} interleaved pairs)"
    )

    with tempfile.TemporaryDirectory() as root:
        study = [
            *overrides[:1],
            f"paths.root_dir={root}",
            "prompts=smoke",
            "search.n_trials=3",
            "search.enqueue=[baseline,balanced]",
        ]
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            study_cfg = compose("config", overrides=study)
        before = LOAD_COUNT["pipeline"]
        search_presets(study_cfg, study)
        # The study's model folder is under its own root, so this counts real loads.
        print(f"model loads during a 3-trial study: {LOAD_COUNT['pipeline'] - before} (must be 1)")


if __name__ == "__main__":
    main(sys.argv[1:])
