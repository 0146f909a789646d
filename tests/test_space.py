"""The search space: checked when read, enqueued presets placed inside it."""

import re

import optuna
import pytest
from omegaconf import OmegaConf

from harness.preset import validate_preset
from harness.study.engine import space

SOLVERS = {"unipc": {}, "dpm++": {}, "euler": {}}


@pytest.fixture
def dists(make_cfg):
    return space.distributions(OmegaConf.to_container(make_cfg().search.space), SOLVERS)


def test_default_space_covers_the_knobs(dists):
    assert set(dists) == {"sample_steps", "sample_solver", "sample_shift", "sample_guide_scale", "frame_num", "size"}
    assert dists["frame_num"].choices == (81, 61, 45)
    assert all((f - 1) % 4 == 0 for f in dists["frame_num"].choices)


@pytest.mark.parametrize(
    "experiment, frames", [("baseline", 81), ("balanced", 61), ("aggressive", 45), ("quality_first", 81)]
)
def test_proposal_presets_enqueue_inside_the_space(make_cfg, dists, experiment, frames):
    cfg = make_cfg(f"+experiment={experiment}")
    preset = validate_preset(OmegaConf.to_container(cfg.preset), SOLVERS)
    params = space.params_of(preset, dists, experiment)
    assert params["frame_num"] == frames  # the count the official rule generates
    assert params["sample_solver"] == preset.sample_solver and params["size"] == preset.size


def test_a_preset_outside_the_space_is_refused(make_cfg, dists):
    preset = validate_preset(OmegaConf.to_container(make_cfg("preset.sample_steps=40").preset), SOLVERS)
    with pytest.raises(ValueError, match="sample_steps=40, outside search.space.sample_steps"):
        space.params_of(preset, dists, "custom")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"steps": {"type": "int", "low": 1, "high": 4}}, "search.space.steps is not searchable"),
        ({"frame_num": {"type": "categorical", "choices": [64]}}, "frame_num choice 64 must be a frame count 4n+1"),
        ({"sample_solver": {"type": "categorical", "choices": ["heun"]}}, "choice 'heun' is not a known solver"),
        ({"size": {"type": "categorical", "choices": ["480x832"]}}, "preset.size='480x832' is not 'W*H'"),
        ({"sample_steps": {"type": "int", "low": 9, "high": 4}}, "low=9, high=4 must be numbers with low <= high"),
        ({"sample_shift": {"type": "float", "low": 0.0, "high": 4.0}}, "sample_shift.low=0.0 must be >= 0.01"),
        ({"sample_steps": {"type": "loguniform", "low": 1, "high": 4}}, "type='loguniform'; allowed"),
    ],
)
def test_bad_space_entries(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        space.distributions(bad, SOLVERS)


def test_suggestions_stay_on_the_grid(dists):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = space.suggest(study.ask(), dists)
        assert (params["sample_shift"] * 2).is_integer() and 1.0 <= params["sample_shift"] <= 8.0
        assert params["frame_num"] in (81, 61, 45)


def test_a_trial_s_values_update_the_preset_and_the_levers_apart():
    found = space.updates({"size": "480*832", "sample_steps": 9, "guidance_stop": 0.5})
    assert found == {"preset": {"size": "480*832", "sample_steps": 9}, "speed": {"guidance_stop": 0.5}}


def test_levers_search_adds_guidance_stop_outside_the_preset(make_cfg):
    cfg = make_cfg("search=levers")
    dists = space.distributions(OmegaConf.to_container(cfg.search.space), SOLVERS)
    assert dists["guidance_stop"].step == 0.25 and cfg.search.study_name == "video_fast_levers"
    assert space.updates({"guidance_stop": 0.5}) == {"preset": {}, "speed": {"guidance_stop": 0.5}}
    preset = validate_preset(OmegaConf.to_container(cfg.preset), SOLVERS)
    assert space.params_of(preset, dists, "baseline")["guidance_stop"] == 1.0


def test_attention_and_compile_are_searchable_levers():
    dists = space.distributions(
        {
            "attention": {"type": "categorical", "choices": ["native", "_native_math"]},
            "compile": {"type": "categorical", "choices": ["off", "regional"]},
        },
        SOLVERS,
    )
    assert set(dists) == {"attention", "compile"}
    assert space.updates({"attention": "_native_math", "compile": "regional"})["speed"] == {
        "attention": "_native_math",
        "compile": "regional",
    }
    with pytest.raises(
        ValueError,
        match=re.escape("search.space.compile choice 'max' is not allowed; allowed: ['off', 'regional', 'full']"),
    ):
        space.distributions({"compile": {"type": "categorical", "choices": ["max"]}}, SOLVERS)


def test_a_trial_s_values_read_without_a_switched_off_cache_s_settings_or_float_noise():
    values = {"sample_steps": 11, "sample_shift": 4.0, "cache": "none", "cache_threshold": 0.12000000000000001}
    assert space.shown(values) == "sample_steps=11, sample_shift=4, cache=none"
    cached = {**values, "cache": "first_block"}
    assert space.shown(cached) == "sample_steps=11, sample_shift=4, cache=first_block, cache_threshold=0.12"
