"""The study in optuna-dashboard, best trial = best feasible: ``python -m harness.dashboard``.

Serves on ``dashboard.host:dashboard.port`` (127.0.0.1:8080) over the study's storage
(``search.storage``, or ``mlruns/optuna.db``). See ``harness.study.report.dashboard``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.checks import check_dashboard
from harness.cli import one_line_errors, run_command
from harness.secrets import public_url
from harness.stores import storage_url


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_dashboard(cfg)
    try:
        from harness.study.report.dashboard import serve
    except ImportError:
        raise ValueError("optuna-dashboard is not installed; pip install -e '.[dashboard]'") from None
    from harness.study.workers.storage import read_storage

    storage = read_storage(cfg)
    url = public_url(storage_url(cfg), cfg.paths.root_dir)
    print(f"optuna-dashboard over {url} at http://{cfg.dashboard.host}:{cfg.dashboard.port}")
    serve(storage, str(cfg.dashboard.host), int(cfg.dashboard.port))


if __name__ == "__main__":
    run_command(main)
