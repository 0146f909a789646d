"""Measure a preset: ``python -m harness.run +experiment=balanced`` (``-m`` for several)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.checks import check_run
from harness.cli import one_line_errors, run_command
from harness.pipeline.levers import check_quant_here


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> float:
    check_run(cfg)  # before torch and diffusers load: a bad input is refused in about a second
    check_quant_here(cfg)  # torch alone decides it: refused before diffusers loads
    from harness.measure.session import measure_preset
    from harness.measure.terminal import MEASURED, print_summary
    from harness.measure.tracking import where_to_look

    summary = measure_preset(cfg)
    MEASURED.append(summary)
    print_summary([summary])
    print(where_to_look(summary.run_id))
    return summary.seconds_per_video


if __name__ == "__main__":
    run_command(main)
