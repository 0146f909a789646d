"""Write a study's report: ``python -m harness.report study=NAME``.

Writes ``report.md`` and ``report.html`` with its pictures into the study's folder (``study_dir``:
``outputs/studies/<study>/`` unless named) and logs them to the study's
MLflow run (see ``harness.study.markdown``).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.study.markdown import write_report


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        report = write_report(cfg)
        print(f"wrote {report} and {report.with_suffix('.html')} (the presets' videos side by side)")
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
