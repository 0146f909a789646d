"""Audit the proposal's claims on this machine: ``python -m harness.audit [model=toy]``.

Measures, with the same timed generation as every run: time per step by solver and by
shift, time against steps, time per step against tokens (frames x size), guidance's
second pass, and the stages. Fits time = fixed + steps x passes x (a + b x tokens) and
reports its error; prints each knob's claimed speed-up beside the measured one. Writes
``outputs/audits/audit-<machine>-<date>/report.md`` with plots (``audit.dir``, ``audit.overwrite``), and logs it
to MLflow.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.checks import check_audit
from harness.cli import one_line_errors, run_command
from harness.pipeline.levers import check_quant_here


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_audit(cfg)  # before torch and diffusers load: a bad input is refused in about a second
    check_quant_here(cfg)  # torch alone decides it: refused before diffusers loads
    from harness.cost.audit_report import run_audit

    run_audit(cfg)


if __name__ == "__main__":
    run_command(main)
