"""Search for the fastest preset that keeps every quality floor (an Optuna study).

    python -m harness.search model=toy search.n_trials=12     # new study, or continue it
    python -m harness.dashboard                                # the same storage, live (best = best feasible)

See ``harness.study.optimize`` for what a study does.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.study.floors import best_feasible
from harness.study.optimize import search_presets


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        study = search_presets(cfg, list(HydraConfig.get().overrides.task))
    except ValueError as error:
        sys.exit(f"error: {error}")
    best = best_feasible(study)
    return best.value if best else None


if __name__ == "__main__":
    main()
