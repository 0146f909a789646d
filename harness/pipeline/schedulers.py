"""The worker's solvers as diffusers schedulers, with the preset's shift applied.

All three evaluate the model once per step; shift only remaps the noise schedule
(sigma' = s*sigma / (1 + (s-1)*sigma)), so neither changes the cost of a step.

Under ``worker.schedule=official`` unipc and dpm++ sample at the official Wan code's sigmas and timesteps
(:func:`harness.pipeline.worker.official_sigmas`): diffusers' own ``step()`` functions, fed them, reproduce the
official latents exactly; only where the schedule is placed differs, so only ``set_timesteps`` is replaced.
"""

from __future__ import annotations

from typing import Any, Mapping

import diffusers
import numpy as np
import torch

from harness.pipeline.worker import official_sigmas, official_timesteps


class OfficialSchedule:
    """Mixin for a diffusers flow scheduler: ``set_timesteps`` places the official Wan code's schedule.

    The scheduler's own ``set_timesteps`` runs first (it resets the solver's state), then its sigmas and
    timesteps are replaced by the official ones of the same length; stepping is the scheduler's own.
    """

    official_solver = ""  # the worker's name of the solver

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None, **kwargs: Any) -> None:
        super().set_timesteps(num_inference_steps, device=device, **kwargs)
        sigmas = official_sigmas(self.official_solver, num_inference_steps, float(self.config.flow_shift))
        self.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))  # the last step ends at 0
        self.timesteps = torch.from_numpy(official_timesteps(sigmas)).to(device=device)


class OfficialUniPCMultistepScheduler(OfficialSchedule, diffusers.UniPCMultistepScheduler):
    """UniPC (order 2, bh2) on the official ``FlowUniPCMultistepScheduler``'s schedule."""

    official_solver = "unipc"


class OfficialDPMSolverMultistepScheduler(OfficialSchedule, diffusers.DPMSolverMultistepScheduler):
    """DPM-Solver++ (order 2, midpoint) on the official ``get_sampling_sigmas`` schedule."""

    official_solver = "dpm++"


OFFICIAL_CLASSES = {"unipc": OfficialUniPCMultistepScheduler, "dpm++": OfficialDPMSolverMultistepScheduler}


def build_scheduler(solver: str, shift: float, solvers: Mapping[str, Any], official: bool = False):
    """Make the scheduler for a solver name and shift.

    Built from ``conf/solver``'s arguments, not diffusers' ``Cls.from_config(pipe.scheduler.config)``: the
    official worker builds its solver from fixed arguments whatever scheduler a checkpoint ships with (the
    Diffusers-format Wan weights carry ``flow_shift: 3.0``), so a preset's video does not depend on it.

    Args:
        solver: the preset's ``sample_solver`` (``unipc``, ``dpm++``, ``euler``).
        shift: the preset's ``sample_shift`` (> 0).
        solvers: the mapping in ``conf/solver`` (name -> scheduler, shift_arg, kwargs).
        official: place unipc's and dpm++'s schedule as the official Wan code does (other solvers have no
            official schedule and keep diffusers').

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
    if official and solver in OFFICIAL_CLASSES:
        scheduler_class = OFFICIAL_CLASSES[solver]
    kwargs = dict(spec.get("kwargs") or {})
    kwargs[str(spec["shift_arg"])] = float(shift)
    return scheduler_class(**kwargs)


def scheduler_name(scheduler: Any) -> str:
    """The diffusers scheduler's name, with the schedule it samples: ``UniPCMultistepScheduler (official schedule)``."""
    if isinstance(scheduler, OfficialSchedule):
        return f"{type(scheduler).__bases__[1].__name__} (official schedule)"
    return type(scheduler).__name__


def is_official(solver: str, solvers: Mapping[str, Any]) -> bool:
    """Whether the official Wan code path (generate.py) offers this solver."""
    return bool(solvers.get(solver, {}).get("official", False))
