"""The worker's solvers as diffusers schedulers, with the preset's shift applied.

All three evaluate the model once per step; shift only remaps the noise schedule
(sigma' = s*sigma / (1 + (s-1)*sigma)), so neither changes the cost of a step.
"""

from __future__ import annotations

from typing import Any, Mapping

import diffusers


def build_scheduler(solver: str, shift: float, solvers: Mapping[str, Any]):
    """Make the scheduler for a solver name and shift.

    Args:
        solver: the preset's ``sample_solver`` (``unipc``, ``dpm++``, ``euler``).
        shift: the preset's ``sample_shift`` (> 0).
        solvers: the mapping in ``conf/solver`` (name -> scheduler, shift_arg, kwargs).

    Returns:
        A new diffusers scheduler instance.

    Raises:
        ValueError: unknown solver, or a scheduler class diffusers does not have.
    """
    if solver not in solvers:
        raise ValueError(f"sample_solver={solver!r} is not a known solver; allowed: {sorted(solvers)}")
    spec = solvers[solver]
    scheduler_class = getattr(diffusers, str(spec["scheduler"]), None)
    if scheduler_class is None:
        raise ValueError(f"solver {solver!r}: diffusers has no scheduler {spec['scheduler']!r}")
    kwargs = dict(spec.get("kwargs") or {})
    kwargs[str(spec["shift_arg"])] = float(shift)
    return scheduler_class(**kwargs)


def is_official(solver: str, solvers: Mapping[str, Any]) -> bool:
    """Whether the official Wan code path (generate.py) offers this solver."""
    return bool(solvers.get(solver, {}).get("official", False))
