"""The study's settings (``conf/search``), checked before anything loads: space, floors, sampler, pruning."""

from __future__ import annotations

import optuna
from omegaconf import DictConfig, OmegaConf

from harness import CONF_DIR
from harness.checks import check_flag, check_int, check_number
from harness.study.engine import space
from harness.study.engine.floors import Floor, floors
from harness.study.engine.pruning import load_rules, optuna_pruner
from harness.study.engine.samplers import check_sampler


def check_study_settings(cfg: DictConfig) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[Floor], int]:
    """The space, floors, trial count and study settings, checked.

    Args:
        cfg: the composed config (``search`` node).

    Returns:
        The space's distributions, the floors, and ``search.n_trials``.

    Raises:
        ValueError: the first bad setting, named with what is allowed.
    """
    solvers = OmegaConf.to_container(cfg.solver, resolve=True)
    dists = space.distributions(OmegaConf.to_container(cfg.search.space, resolve=True), solvers)
    floor_list = floors(cfg)
    if any(f.ratio is not None for f in floor_list) and "baseline" not in list(cfg.search.enqueue or []):
        raise ValueError("search.floors with a ratio need 'baseline' in search.enqueue (it is measured first)")
    n_trials = check_int("search.n_trials", cfg.search.n_trials, 1)
    load_rules(cfg)
    optuna_pruner(cfg.search.pruner)
    check_sampler(str(cfg.search.sampler.type))
    check_int("search.sampler.n_startup_trials", cfg.search.sampler.n_startup_trials, 0)
    seeds = list(cfg.search.seeds or [])
    if not seeds:
        raise ValueError("search.seeds=[] must list at least one integer seed")
    for seed in seeds:
        check_int("search.seeds[]", seed, 0)
    for key in ("heartbeat_s", "grace_s"):
        check_int(f"search.{key}", cfg.search[key], 1)
    if cfg.search.timeout_s is not None:
        check_number("search.timeout_s", cfg.search.timeout_s, 1.0)
    check_flag("search.drift_check", cfg.search.drift_check)
    check_int("search.pair_repeats", cfg.search.pair_repeats, 1)
    _check_enqueue(list(cfg.search.enqueue or []))
    return dists, floor_list, n_trials


def _check_enqueue(names: list) -> None:
    """Every preset ``search.enqueue`` names is an experiment of ``conf/experiment``."""
    allowed = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
    for name in names:
        if name not in allowed:
            raise ValueError(f"search.enqueue names {name!r}, which is not an experiment; allowed: {allowed}")
