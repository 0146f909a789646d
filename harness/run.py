"""Measure a preset: ``python -m harness.run +experiment=balanced`` (``-m`` for several)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.measure.session import measure_preset
from harness.measure.terminal import MEASURED, print_summary
from harness.measure.tracking import where_to_look
from harness.pipeline.load import ModelUnavailableError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        summary = measure_preset(cfg)
    except (ValueError, ModelUnavailableError) as error:
        sys.exit(f"error: {error}")  # one line, non-zero exit; nothing half-logged
    MEASURED.append(summary)
    print_summary([summary])
    print(where_to_look(summary["run_id"]))
    return summary["median_wall_time_s"]


if __name__ == "__main__":
    main()
