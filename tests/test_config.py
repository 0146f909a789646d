"""Every experiment composes into a valid worker preset with the proposal's values."""

import pytest
from conftest import EXPERIMENTS

from harness.measure.plan import plan
from harness.pipeline.load import resolve_model
from harness.preset import WORKER_KEYS

PROPOSAL = {  # the proposal's table: size, steps, guide, solver, shift, frames, expected_time
    "baseline": ("480*832", 25, 6.5, "unipc", 5.0, 83, 135),
    "balanced": ("480*832", 18, 6.5, "euler", 3.0, 64, 75),
    "aggressive": ("384*640", 15, 6.0, "euler", 2.5, 48, 60),
    "quality_first": ("480*832", 20, 6.5, "dpm++", 4.0, 83, 100),
}


def test_the_four_proposal_presets_are_experiments():
    assert set(PROPOSAL) <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(make_cfg, experiment):
    cfg = make_cfg(f"+experiment={experiment}")
    assert tuple(cfg.preset.keys()) == WORKER_KEYS  # pastes in and out of the worker unchanged
    validated = plan(cfg)
    assert validated.name == experiment
    if experiment in PROPOSAL:
        preset = validated.preset
        got = (
            preset.size,
            preset.sample_steps,
            preset.sample_guide_scale,
            preset.sample_solver,
            preset.sample_shift,
            preset.frame_num,
            preset.expected_time,
        )
        assert got == PROPOSAL[experiment]


def test_overrides_reach_the_preset_but_not_the_reference(make_cfg):
    cfg = make_cfg("+experiment=balanced", "preset.sample_steps=10")
    assert cfg.preset.sample_steps == 10
    assert cfg.reference.sample_steps == 25 and cfg.reference.sample_solver == "unipc"


def test_default_model_is_real_wan_on_cuda_and_the_toy_world_elsewhere(make_cfg, caplog):
    import logging

    import torch

    auto = make_cfg(model="auto")
    with caplog.at_level(logging.INFO):
        cfg = resolve_model(auto)
        plan(cfg)
    assert auto.model.name == "auto"  # the command's own config is left as it is
    expected = "wan2.1-t2v-1.3b" if torch.cuda.is_available() else "toy"
    assert cfg.model.name == expected
    if expected == "toy":
        assert cfg.model.path.endswith("harness/toy/weights/wan") and cfg.model.scale.spatial == 10
    assert cfg.model.name in caplog.text and "choose the other with model=" in caplog.text
