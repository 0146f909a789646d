"""Export a study's production preset: ``python -m harness.select study=NAME``.

Chooses the winner, re-measures it on held-out seeds and writes it in the worker's
format (see ``harness.study.selection``).
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.study.selection import select_preset


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        yaml_path, json_path = select_preset(cfg, list(HydraConfig.get().overrides.task))
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(yaml_path.read_text())
    print(f"wrote {yaml_path}, {json_path} and {yaml_path.with_suffix('.py')} (an entry of the worker's preset dict)")
    print(f"measure it again: python -m harness.run preset_file={yaml_path}")


if __name__ == "__main__":
    main()
