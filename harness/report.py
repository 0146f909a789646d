"""Write a study's report: ``python -m harness.report study=NAME``.

Writes ``report.md`` and ``report.html`` with its pictures into the study's folder (``study_dir``:
``outputs/studies/<study>/`` unless named) and logs them to the study's
MLflow run (see ``harness.study.report.markdown``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.checks import check_report
from harness.cli import one_line_errors, run_command


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_report(cfg)  # before the study's storage opens
    from harness.study.report.markdown import write_report

    report = write_report(cfg)
    print(f"wrote {report} and {report.with_suffix('.html')} (the presets' videos side by side)")


if __name__ == "__main__":
    run_command(main)
