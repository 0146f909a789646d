"""The Optuna study, by job: ``engine`` (space, samplers, pruning, floors, one trial's life in ``objective``),
``workers`` (several processes on one study: claims, heartbeats, the storage), ``report`` (pages, plots, the
dashboard) and ``export`` (the winner re-measured on held-out seeds)."""
