"""optuna-dashboard that tells the truth: the best trial it badges is the best *feasible* one.

optuna-dashboard 0.21 takes the storage's lowest value as the study's best trial, whatever
its constraints, so an infeasible trial (PSNR 16 dB against a 30 dB floor) would carry
the "Best Trial" badge. This serves the same dashboard with the study's best trial
replaced by its best feasible trial (none when no trial is feasible). Trials carry their
constraints in the list form the dashboard reads (see ``harness.study.engine.objective``).
"""

from __future__ import annotations

from typing import Any

import optuna

from harness.study.engine.floors import fastest_feasible


def best_feasible_trials(storage: optuna.storages.BaseStorage, study_id: int) -> list[optuna.trial.FrozenTrial]:
    """The fastest feasible trial of a study as a one-item list, or an empty list."""
    best = fastest_feasible(storage.get_all_trials(study_id, deepcopy=False))
    return [best] if best is not None else []


def serve(storage: optuna.storages.BaseStorage, host: str, port: int) -> None:
    """Serve optuna-dashboard over the storage, best trials being feasible ones (blocks until stopped)."""
    import optuna_dashboard
    from optuna_dashboard import _app

    dashboard_serialize = _app.serialize_study_detail

    def serialize(study: Any, best_trials: list, *rest: Any) -> dict[str, Any]:
        return dashboard_serialize(study, best_feasible_trials(storage, study._study_id), *rest)

    _app.serialize_study_detail = serialize
    optuna_dashboard.run_server(storage, host=host, port=port)
