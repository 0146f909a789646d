"""The study in optuna-dashboard, best trial = best feasible: ``python -m harness.dashboard``.

Serves on ``dashboard.host:dashboard.port`` (127.0.0.1:8080) over the study's storage
(``search.storage``, or ``mlruns/optuna.db``). See ``harness.study.dashboard``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.measure.tracking import public_url
from harness.study.storage import storage_url


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        from harness.study.dashboard import serve
    except ImportError:
        sys.exit("error: optuna-dashboard is not installed; pip install -e '.[dashboard]'")
    url = storage_url(cfg)
    print(
        f"optuna-dashboard over {public_url(url, cfg.paths.root_dir)} at http://{cfg.dashboard.host}:{cfg.dashboard.port}"
    )
    serve(url, str(cfg.dashboard.host), int(cfg.dashboard.port))


if __name__ == "__main__":
    main()
