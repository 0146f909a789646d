"""Export a study's production preset: ``python -m harness.select study=NAME``.

Chooses the winner, re-measures it on held-out seeds and writes it in the worker's
format (see ``harness.study.export.selection``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.checks import check_select
from harness.cli import one_line_errors, run_command


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_select(cfg)  # before torch and diffusers load: a bad input is refused in about a second
    from harness.study.export.selection import select_preset

    yaml_path, json_path = select_preset(cfg)
    print(yaml_path.read_text())
    print(f"wrote {yaml_path}, {json_path} and {yaml_path.with_suffix('.py')} (an entry of the worker's preset dict)")
    print(f"measure it again: python -m harness.run preset_file={yaml_path}")


if __name__ == "__main__":
    run_command(main)
