"""Search for the fastest preset that keeps every quality floor (an Optuna study).

    python -m harness.search model=toy search.n_trials=12     # new study, or continue it
    python -m harness.dashboard                                # the same storage, live (best = best feasible)

See ``harness.study.engine.optimize`` for what a study does.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.checks import check_search
from harness.cli import one_line_errors, run_command


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    check_search(cfg)  # before torch and diffusers load: a bad input is refused in about a second
    from harness.study.engine.floors import best_feasible
    from harness.study.engine.optimize import search_presets

    best = best_feasible(search_presets(cfg, list(HydraConfig.get().overrides.task)))
    return best.value if best else None


if __name__ == "__main__":
    run_command(main)
