"""Each worker solver maps onto its diffusers scheduler with the preset's shift."""

import pytest
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from harness.pipeline.schedulers import build_scheduler


@pytest.fixture
def solvers(make_cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(make_cfg().solver)


@pytest.mark.parametrize("name, cls", [("unipc", UniPCMultistepScheduler), ("dpm++", DPMSolverMultistepScheduler)])
def test_multistep_solvers_take_flow_arguments(solvers, name, cls):
    scheduler = build_scheduler(name, 3.5, solvers)
    assert type(scheduler) is cls
    assert scheduler.config.flow_shift == 3.5
    assert scheduler.config.use_flow_sigmas is True
    assert scheduler.config.prediction_type == "flow_prediction"


def test_euler_takes_shift(solvers):
    scheduler = build_scheduler("euler", 2.5, solvers)
    assert type(scheduler) is FlowMatchEulerDiscreteScheduler
    assert scheduler.config.shift == 2.5


def test_shift_remaps_sigmas(solvers):
    low, high = (build_scheduler("unipc", shift, solvers) for shift in (1.0, 5.0))
    for scheduler in (low, high):
        scheduler.set_timesteps(10)
    assert (high.sigmas[1:-1] > low.sigmas[1:-1]).all()  # a larger shift keeps more noise longer


def test_unknown_solver(solvers):
    with pytest.raises(ValueError, match="sample_solver='lcm' is not a known solver"):
        build_scheduler("lcm", 3.0, solvers)
