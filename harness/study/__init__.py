"""The Optuna study: search space, floors, storage, trials, selection of the winner, the report."""
