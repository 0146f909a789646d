"""Levers that pay on a GPU, proven on the CPU: batched guidance, MagCache with calibrated ratios, DBCache,
quantization, and the fidelity noise floor."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import store_client
from omegaconf import OmegaConf

from harness.measure import noise_floor
from harness.measure.plan import plan
from harness.measure.session import measure_preset, open_session
from harness.measure.terminal import summary_table
from harness.pipeline.generate import generate
from harness.pipeline.levers import Speed
from harness.pipeline.load import load_pipeline
from harness.study.report.markdown import _header

ROOT = Path(__file__).resolve().parents[1]


def setup_for(make_cfg, model):
    cfg = make_cfg(model=model)
    plan_ = plan(cfg)
    request = replace(plan_.request("a red circle moving left", 0), steps=8)
    return load_pipeline(cfg.model, plan_.worker), request, OmegaConf.to_container(cfg.solver)


@pytest.mark.parametrize("model", ["tiny", "toy"])
@pytest.mark.parametrize("stop", [1.0, 0.5])
def test_batched_guidance_makes_the_video_separate_passes_make(make_cfg, model, stop):
    loaded, request, solvers = setup_for(make_cfg, model)
    separate = generate(loaded, replace(request, speed=Speed(guidance_stop=stop)), solvers).frames
    batched = generate(loaded, replace(request, speed=Speed(guidance_stop=stop, cfg="batched")), solvers).frames
    assert np.abs(separate.astype(int) - batched).max() <= 1  # one batch of two rounds a little differently


def batch_sizes(pipe):
    sizes = []
    block = pipe.transformer.blocks[1].ffn  # runs only when the block is really computed (not cached)
    return sizes, block.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))


def test_a_cache_sees_both_halves_of_a_batched_step_together(make_cfg):
    loaded, request, solvers = setup_for(make_cfg, "tiny")
    speed = Speed(cfg="batched", cache="first_block", cache_threshold=0.9, guidance_stop=0.5)
    sizes, handle = batch_sizes(loaded.pipe)
    try:
        video = generate(loaded, replace(request, steps=10, speed=speed), solvers)
    finally:
        handle.remove()
    computed_while_guided = sizes[: sizes.index(1)] if 1 in sizes else sizes
    assert set(computed_while_guided) == {2} and len(sizes) < 10  # a batch of two or nothing; the cache skipped
    assert np.isfinite(video.frames).all() and not loaded.pipe.transformer.is_cache_enabled


def test_magcache_sees_both_halves_of_a_batched_step_together(make_cfg):
    loaded, request, solvers = setup_for(make_cfg, "toy")
    batched = replace(request, speed=Speed(cfg="batched", cache="magcache"))
    ratios = tuple(generate(loaded, batched, solvers).mag_ratios)  # calibrated on the batched steps
    plain = generate(loaded, replace(request, speed=Speed(cfg="batched")), solvers).frames
    at_zero = replace(batched, speed=Speed(cfg="batched", cache="magcache", magcache_threshold=0.0), mag_ratios=ratios)
    assert np.array_equal(generate(loaded, at_zero, solvers).frames, plain)  # skips nothing: the batched video
    skipping = Speed(cfg="batched", cache="magcache", magcache_threshold=0.5, magcache_retention=0.0)
    sizes, handle = batch_sizes(loaded.pipe)
    try:
        video = generate(loaded, replace(at_zero, speed=skipping), solvers)
    finally:
        handle.remove()
    assert set(sizes) == {2} and len(sizes) < request.steps  # a batch of two or nothing: both halves skip together
    assert np.isfinite(video.frames).all() and not loaded.pipe.transformer.is_cache_enabled


@pytest.mark.slow  # seconds to a minute end to end, kept out of the 5-minute default run: .ci/run runs it
def test_magcache_is_calibrated_once_per_preset_then_reused(make_cfg, tmp_path):
    cfg = make_cfg("speed.cache=magcache", "quality.clip=false", "timing.pair=false", model="toy")
    first = store_client(tmp_path).get_run(measure_preset(cfg).run_id).data.metrics
    second = store_client(tmp_path).get_run(measure_preset(cfg).run_id).data.metrics
    stored = list((tmp_path / ".cache" / "references").glob("magcache-*.json"))
    assert first["time_calibration_s"] > 0 and second["time_calibration_s"] == 0 and len(stored) == 1
    assert first["time_calibration_s"] not in (first["median_wall_time_s"], first["time_warmup_s"])


def test_magcache_at_threshold_zero_skips_nothing(make_cfg):
    loaded, request, solvers = setup_for(make_cfg, "toy")
    ratios = tuple(generate(loaded, replace(request, speed=Speed(cache="magcache")), solvers).mag_ratios)
    assert len(ratios) == request.steps and ratios[0] == 1.0
    plain = generate(loaded, request, solvers).frames
    cached = replace(request, speed=Speed(cache="magcache", magcache_threshold=0.0), mag_ratios=ratios)
    assert np.array_equal(generate(loaded, cached, solvers).frames, plain)
    skipping = replace(cached, speed=Speed(cache="magcache", magcache_threshold=0.5, magcache_retention=0.0))
    assert not np.array_equal(generate(loaded, skipping, solvers).frames, plain)


def test_dbcache_from_cache_dit_skips_work_and_leaves_the_pipeline_as_it_was(make_cfg):
    loaded, request, solvers = setup_for(make_cfg, "tiny")
    before = generate(loaded, request, solvers).frames
    sizes, handle = batch_sizes(loaded.pipe)
    try:
        generate(loaded, replace(request, steps=12, speed=Speed(cache="dbcache", cache_threshold=0.5)), solvers)
    finally:
        handle.remove()
    assert len(sizes) < 2 * 12  # fewer block computations than 12 steps x 2 passes
    assert np.array_equal(generate(loaded, request, solvers).frames, before)


def test_dbcache_with_cache_dit_s_taylorseer_calibrator_forecasts_what_plain_dbcache_repeats(make_cfg):
    from harness.measure.quality import fidelity

    loaded, request, solvers = setup_for(make_cfg, "toy")  # 6 blocks: the first computed, five cached
    request = replace(request, steps=12)
    plain = generate(loaded, request, solvers).frames
    repeated, forecast = (
        generate(
            loaded,
            replace(request, speed=Speed(cache="dbcache", cache_threshold=0.5, dbcache_taylorseer=order)),
            solvers,
        ).frames  # fmt: skip
        for order in (0, 1)
    )
    # on the toy world (measured): 15.5 dB repeating the cached residual, 19.4 dB forecasting it
    assert fidelity(forecast, plain)["psnr_db"] > fidelity(repeated, plain)["psnr_db"] + 2
    with pytest.raises(ValueError, match=r"speed.dbcache_taylorseer=3 must be 0 \(no calibrator\), 1 or 2"):
        Speed(cache="dbcache", dbcache_taylorseer=3).check()


def test_int8_weight_only_runs_on_the_cpu_as_a_lever(make_cfg, tmp_path):
    summary = measure_preset(make_cfg("speed.quant=int8_weight_only", "quality.clip=false", "timing.pair=false"))
    run = store_client(tmp_path).get_run(summary.run_id)
    assert run.data.params["quant"] == "int8_weight_only" and summary.mean("psnr_db") < 100


@pytest.mark.parametrize(
    "override, message",
    [
        ("speed.quant=float8_dynamic", "speed.quant='float8_dynamic' needs float8 matmuls (a GPU of sm89 or later"),
        ("speed.cfg=batched speed.cache=dbcache", "speed.cache='dbcache' with speed.cfg='batched' is not offered"),
        ("speed.cfg=triple", "speed.cfg='triple' is not allowed; allowed: ['separate', 'batched']"),
    ],
)
def test_a_lever_this_machine_cannot_run_is_refused_in_one_line(tmp_path, model_dir, override, message):
    command = [sys.executable, "-m", "harness.run", f"paths.root_dir={tmp_path}", "model=tiny",
               f"model.path={model_dir}/tiny-wan", f"model.clip={model_dir}/tiny-clip", *override.split()]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_the_noise_floor_measured_by_the_audit_is_printed_beside_the_floors(make_cfg):
    cfg = make_cfg()
    plan_ = plan(cfg)
    session = open_session(cfg, plan_)
    assert noise_floor.scale(cfg, session, plan_) == ""
    found = noise_floor.measure(cfg, plan_, session, 100.0)
    assert set(found) == {"cfg=batched", "precision=bfloat16", "attention=_native_math"}
    assert found["cfg=batched"]["psnr_db"] > found["precision=bfloat16"]["psnr_db"] > 30
    assert noise_floor.scale(cfg, session, plan_).startswith("noise floor (the baseline against itself): cfg=batched")
    # harness.run's table, the study report and the export print it beside PSNR and the floors
    summary = measure_preset(make_cfg("quality.clip=false", "timing.warmup=false", "preset.sample_steps=8"))
    assert summary.noise_floor == noise_floor.scale(cfg, session, plan_)
    assert f"PSNR beside its {summary.noise_floor}" in summary_table([summary]).caption
    study = optuna.create_study(study_name="video_fast")
    study.set_user_attr("noise_floor", summary.noise_floor)
    study.set_user_attr("floors", ["psnr_db >= 30"])
    header = "".join(_header(cfg, study))
    assert f"Floors: psnr_db >= 30; PSNR beside its {summary.noise_floor} (measured by harness.audit)." in header
