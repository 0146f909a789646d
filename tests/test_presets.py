"""Wan's size and frame conventions, the small models' scale, and bad preset values."""

import logging

import pytest

from harness.preset import official_frame_count, parse_size, read_preset_file, resolve_shape, validate_preset

SOLVERS = {"unipc": {}, "dpm++": {}, "euler": {}}
BASE = dict(
    task="t2v-1.3B",
    size="480*832",
    sample_steps=25,
    sample_guide_scale=6.5,
    sample_solver="unipc",
    sample_shift=5.0,
    frame_num=83,
    enhance_prompt=False,
    expected_time=135,
    content_type="video",
    file_extension="mp4",
)


def preset(**changes):
    return validate_preset({**BASE, **changes}, SOLVERS)


def test_size_is_width_times_height():
    assert parse_size("480*832") == (480, 832)  # portrait: narrower than high
    shape = resolve_shape(preset())
    assert (shape.width, shape.height) == (480, 832)
    landscape = resolve_shape(preset(size="832*480"))
    assert (landscape.width, landscape.height) == (832, 480)


@pytest.mark.parametrize("asked, generated", [(83, 81), (64, 61), (48, 45), (81, 81), (1, 1), (5, 5)])
def test_official_frame_rule(asked, generated):
    assert official_frame_count(asked) == generated


@pytest.mark.parametrize("asked, generated, warned", [(83, 81, True), (64, 61, True), (81, 81, False)])
def test_real_scale_resolves_frames_and_warns_when_they_change(caplog, asked, generated, warned):
    with caplog.at_level(logging.WARNING):
        shape = resolve_shape(preset(frame_num=asked), 1, 1)
    assert (shape.frames_requested, shape.frames_official, shape.num_frames) == (asked, generated, generated)
    assert (f"frame_num={asked} is not 4n+1" in caplog.text) is warned


@pytest.mark.parametrize(
    "size, frames, expected",
    [
        ("480*832", 83, (64, 112, 17)),  # 21 latent frames / 4 -> 5 -> 17 frames
        ("480*832", 64, (64, 112, 13)),  # 16 -> 4 -> 13
        ("384*640", 48, (48, 80, 9)),  # 12 -> 3 -> 9
        ("832*480", 5, (112, 64, 1)),  # at least one latent frame
    ],
)
def test_tiny_scale_keeps_relative_costs(size, frames, expected):
    shape = resolve_shape(preset(size=size, frame_num=frames), 8, 4)
    assert (shape.width, shape.height, shape.num_frames) == expected
    assert shape.width % 16 == 0 and shape.height % 16 == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"size": "480x832"}, "preset.size='480x832' is not 'W*H'"),
        ({"size": "480*830"}, "height 830 must be a positive multiple of 16"),
        ({"size": "0*832"}, "width 0 must be a positive multiple of 16"),
        (
            {"sample_solver": "heun"},
            "preset.sample_solver='heun' is not a known solver; allowed: ['dpm++', 'euler', 'unipc']",
        ),
        ({"sample_steps": 0}, "preset.sample_steps=0 must be an integer from 1 to 1000"),
        ({"sample_steps": 2.5}, "preset.sample_steps=2.5 must be an integer from 1 to"),
        ({"sample_steps": "abc"}, "preset.sample_steps='abc' must be an integer from 1 to"),
        ({"frame_num": 0}, "preset.frame_num=0 must be an integer from 1 to"),
        ({"sample_guide_scale": -1}, "preset.sample_guide_scale=-1 must be a number from 0 to 100"),
        ({"sample_shift": 0}, "preset.sample_shift=0 must be a number from 0.01 to 39.6 (at 25 steps"),
        ({"file_extension": "gif"}, "only 'mp4' is written"),
        ({"sample_steps": 1001}, "preset.sample_steps=1001 must be an integer from 1 to 1000"),
        ({"sample_guide_scale": float("inf")}, "preset.sample_guide_scale=inf must be a number from 0 to 100"),
        ({"sample_guide_scale": float("nan")}, "preset.sample_guide_scale=nan must be a number from 0 to 100"),
        ({"sample_guide_scale": 1e308}, "preset.sample_guide_scale=1e+308 must be a number from 0 to 100"),
        ({"sample_shift": float("inf")}, "preset.sample_shift=inf must be a number from 0.01 to"),
        ({"sample_shift": "nan"}, "preset.sample_shift='nan' must be a number from 0.01 to"),
        ({"sample_shift": 1e308}, "sample_steps x sample_shift <= 990, beyond which consecutive steps share"),
        ({"sample_steps": 200, "sample_shift": 5.0}, "preset.sample_shift=5.0 must be a number from 0.01 to 4.95"),
        ({"task": "i2v-14B"}, "preset.task='i2v-14B' is not a text-to-video task; allowed: ['t2v-1.3B', 't2v-14B']"),
        ({"size": "480*4096"}, "preset.size='480*4096': height 4096 is above 1920, the largest side allowed"),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(changes, message):
    with pytest.raises(ValueError) as error:
        preset(**changes)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['steps'\]"):
        validate_preset({**BASE, "steps": 4}, SOLVERS)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['frame_num'\]"):
        validate_preset({k: v for k, v in BASE.items() if k != "frame_num"}, SOLVERS)


def test_worker_format_round_trips():
    assert preset().to_worker() == {**BASE, "expected_time": 135.0}


@pytest.mark.parametrize(
    "suffix, text, problem",
    [
        (".yaml", "task: t2v-1.3B\nsize: [480*832\n", "is not valid YAML: while parsing a flow sequence"),
        (".json", '{"task": "t2v-1.3B", "size": }', "is not valid JSON: Expecting value: line 1 column 30"),
    ],
)
def test_a_malformed_preset_file_is_one_line_naming_the_file(tmp_path, suffix, text, problem):
    file = tmp_path / f"video_fast{suffix}"
    file.write_text(text)
    with pytest.raises(ValueError) as error:
        read_preset_file(file)
    assert str(error.value).startswith(f"preset_file={str(file)!r} {problem}") and "\n" not in str(error.value)
