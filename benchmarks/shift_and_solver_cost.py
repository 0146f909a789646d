"""Time per denoising step by solver and shift, measured in one run, printed as ratios.

Solvers evaluate the model once per step and shift only remaps sigmas, so every ratio
should sit within the run-to-run noise (printed beside it).

    python benchmarks/shift_and_solver_cost.py            # tiny model, CPU
    python benchmarks/shift_and_solver_cost.py model=toy  # any model override
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.pipeline.generate import GenerationRequest, generate
from harness.pipeline.load import load_pipeline
from harness.preset import resolve_shape, validate_preset

CONF = str(Path(__file__).resolve().parents[1] / "conf")
REPEATS = 5
STEPS = 8


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny", *overrides])
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    preset = validate_preset(OmegaConf.to_container(cfg.preset, resolve=True), solvers)
    shape = resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal)
    loaded = load_pipeline(cfg.model)

    def step_time(solver: str, shift: float) -> list[float]:
        request = GenerationRequest("a red circle moving left", 0, shape, STEPS, 6.5, solver, shift)
        generate(loaded, request, solvers)  # warm-up
        # Skip step 0: it also times the loop's set-up.
        return [statistics.median(generate(loaded, request, solvers).step_times[1:]) for _ in range(REPEATS)]

    base = step_time("unipc", 5.0)
    noise = (max(base) - min(base)) / statistics.median(base)
    print(
        f"{loaded.name} at {shape.width}x{shape.height}x{shape.num_frames}: unipc shift 5 "
        f"{statistics.median(base) * 1e3:.2f} ms/step, run-to-run spread {noise:.1%}"
    )
    for solver, shift in [("dpm++", 5.0), ("euler", 5.0), ("unipc", 1.0), ("unipc", 3.0), ("unipc", 12.0)]:
        times = step_time(solver, shift)
        ratio = statistics.median(times) / statistics.median(base)
        print(f"  {solver:6s} shift {shift:4.1f}: {ratio:.3f}x the time per step (noise +-{noise:.1%})")


if __name__ == "__main__":
    main(sys.argv[1:])
