"""Real tiny generations through WanPipeline: solvers, shift, seeds, timings."""

import time
from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf

from harness.pipeline.generate import GenerationRequest, generate
from harness.pipeline.levers import Speed
from harness.pipeline.load import LOAD_COUNT, load_pipeline
from harness.preset import resolve_shape, validate_preset


@pytest.fixture
def setup(make_cfg):
    cfg = make_cfg("+experiment=balanced")
    solvers = OmegaConf.to_container(cfg.solver)
    preset = validate_preset(OmegaConf.to_container(cfg.preset), solvers)
    shape = resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal)
    return load_pipeline(cfg.model), shape, solvers


def request(shape, solver="unipc", shift=3.0, seed=0, steps=4, guidance=6.5):
    return GenerationRequest(
        prompt="a red circle moving left",
        seed=seed,
        shape=shape,
        steps=steps,
        guidance=guidance,
        solver=solver,
        shift=shift,
    )


def count_transformer_calls(pipe):
    calls = []
    handle = pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_each_solver_makes_a_video_of_the_resolved_shape(setup, solver):
    loaded, shape, solvers = setup
    started = time.perf_counter()
    video = generate(loaded, request(shape, solver), solvers)
    elapsed = time.perf_counter() - started
    assert video.frames.shape == (shape.num_frames, shape.height, shape.width, 3)
    assert video.frames.dtype == np.uint8
    assert video.scheduler == solvers[solver]["scheduler"]
    assert len(video.step_times) == 4 and all(t > 0 for t in video.step_times)
    assert min(video.text_encode_s, video.decode_s) > 0
    # The stage clocks account for the call: nothing timed twice, little left untimed.
    assert 0.5 * elapsed < video.wall_s <= elapsed


def test_shift_changes_the_video_not_the_work_per_step(setup):
    loaded, shape, solvers = setup
    calls, handle = count_transformer_calls(loaded.pipe)
    try:
        low = generate(loaded, request(shape, shift=1.5), solvers)
        low_calls = len(calls)
        high = generate(loaded, request(shape, shift=8.0), solvers)
    finally:
        handle.remove()
    assert not np.array_equal(low.frames, high.frames)
    assert len(calls) - low_calls == low_calls == 4 * 2  # 4 steps x (cond + uncond)


def test_same_seed_same_video_other_seed_other_video(setup):
    loaded, shape, solvers = setup
    first, again, other = (generate(loaded, request(shape, seed=s), solvers) for s in (0, 0, 1))
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)


def test_guidance_one_runs_a_single_pass_per_step(setup):
    loaded, shape, solvers = setup
    calls, handle = count_transformer_calls(loaded.pipe)
    try:
        generate(loaded, request(shape, guidance=1.0), solvers)
    finally:
        handle.remove()
    assert len(calls) == 4


def test_pipeline_loads_once_per_process(make_cfg, setup):
    before = LOAD_COUNT["pipeline"]
    cfg = make_cfg("+experiment=aggressive")
    assert load_pipeline(cfg.model) is setup[0]
    assert LOAD_COUNT["pipeline"] == before


@pytest.mark.parametrize("stop, calls", [(1.0, 8), (0.5, 6), (0.25, 5)])
def test_guidance_truncation_drops_the_unconditional_pass(setup, stop, calls):
    loaded, shape, solvers = setup
    counted, handle = count_transformer_calls(loaded.pipe)
    try:
        video = generate(loaded, replace(request(shape), speed=Speed(guidance_stop=stop)), solvers)
    finally:
        handle.remove()
    assert len(counted) == calls  # 4 steps: 2 passes while guided, 1 after
    assert video.guided_steps == calls - 4


def count_block_calls(pipe, part, index=1):
    # A cache hook short-circuits a module's forward, which torch's own forward hooks on that
    # module would still see: count a submodule that runs only when the work is really done.
    calls = []
    handle = pipe.transformer.blocks[index].get_submodule(part).register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize(
    "cache, settings, part",
    [
        ("first_block", {"cache_threshold": 0.9}, "ffn"),  # skips whole blocks after the first
        ("taylorseer", {"cache_interval": 2}, "ffn"),  # predicts whole blocks between full steps
    ],
)
def test_a_cache_skips_transformer_work_and_is_removed_afterwards(setup, cache, settings, part):
    loaded, shape, solvers = setup
    plain = request(shape, steps=8)
    calls, handle = count_block_calls(loaded.pipe, part)
    try:
        generate(loaded, plain, solvers)
        uncached = len(calls)
        cached = generate(loaded, replace(plain, speed=Speed(cache=cache, **settings)), solvers)
        with_cache = len(calls) - uncached
        generate(loaded, plain, solvers)
        after = len(calls) - uncached - with_cache
    finally:
        handle.remove()
    assert uncached == 16 and with_cache < uncached  # 8 steps x 2 passes, fewer with the cache
    assert after == uncached and not loaded.pipe.transformer.is_cache_enabled
    assert cached.frames.shape == (shape.num_frames, shape.height, shape.width, 3)


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"cache": "teacache"},
            "speed.cache='teacache' is not allowed; allowed: ['none', 'first_block', 'taylorseer', 'magcache', "
            "'dbcache']",
        ),
        ({"cache": "first_block", "cache_threshold": 1.5}, "speed.cache_threshold=1.5 must be in (0, 1)"),
        ({"cache": "taylorseer", "cache_interval": 1}, "speed.cache_interval=1 must be an integer >= 2"),
    ],
)
def test_bad_cache_settings(setup, settings, message):
    loaded, shape, solvers = setup
    with pytest.raises(ValueError) as error:
        generate(loaded, replace(request(shape), speed=Speed(**settings)), solvers)
    assert str(error.value) == message


def test_the_random_real_architecture_builds_and_loads_through_the_same_path(make_cfg, tmp_path):
    # The published 1.3B architecture, shrunk to test size through the same builder and loader.
    cfg = make_cfg(
        "model.architecture.transformer.num_layers=1",
        "model.architecture.transformer.num_attention_heads=2",
        "model.architecture.transformer.attention_head_dim=16",
        "model.architecture.transformer.ffn_dim=32",
        "model.architecture.transformer.text_dim=32",
        "model.architecture.vae.base_dim=8",
        "model.architecture.vae.dim_mult=[1,1,1,1]",
        "model.architecture.vae.num_res_blocks=1",
        "model.architecture.text_encoder.vocab_size=300",
        "model.architecture.text_encoder.d_model=32",
        "model.architecture.text_encoder.d_ff=64",
        "model.architecture.text_encoder.d_kv=8",
        "model.architecture.text_encoder.num_layers=1",
        "model.architecture.text_encoder.num_heads=4",
        "model.device=cpu",
        "model.dtype=float32",
        "preset.frame_num=5",
        "preset.size='128*128'",
        model="wan2.1-t2v-1.3b-random",
    )
    solvers = OmegaConf.to_container(cfg.solver)
    loaded = load_pipeline(cfg.model)
    assert (tmp_path / ".cache/models/wan2.1-t2v-1.3b-random/model_index.json").exists()
    assert loaded.pipe.transformer.config.num_layers == 1 and loaded.pipe.vae.config.base_dim == 8
    shape = resolve_shape(validate_preset(OmegaConf.to_container(cfg.preset), solvers))
    video = generate(loaded, request(shape, steps=2), solvers)
    assert video.frames.shape == (5, 128, 128, 3)
    # Wan's strides (4x time, 8x space, patch (1, 2, 2)): the published token count at 480*832*81
    assert loaded.latent_grid(128, 128, 5) == (2, 128)
    assert loaded.latent_grid(480, 832, 81) == (21, 32760)


def test_the_random_model_has_the_published_size(make_cfg):
    # Built on the meta device (no memory): the configured architecture is Wan 2.1 T2V-1.3B's,
    # so the random-weight model does the real model's work per step.
    import torch
    from diffusers import WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    arch = OmegaConf.to_container(make_cfg(model="wan2.1-t2v-1.3b-random").model.architecture)
    with torch.device("meta"):
        transformer = WanTransformer3DModel(
            **{**arch["transformer"], "patch_size": tuple(arch["transformer"]["patch_size"])}
        )
        encoder = UMT5EncoderModel(UMT5Config(**arch["text_encoder"]))
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(1.42, abs=0.01)
    assert sum(p.numel() for p in encoder.parameters()) / 1e9 == pytest.approx(5.7, abs=0.1)  # umT5-XXL encoder


@pytest.mark.parametrize("model", ["tiny", "toy"])
def test_the_harness_generates_exactly_what_a_plain_wanpipeline_call_makes(make_cfg, model):
    # The harness is a thin layer: same scheduler, prompt, seed, steps, size, frames and
    # guidance give the same frames as WanPipeline(...) called directly.
    import torch
    from diffusers import WanPipeline

    cfg = make_cfg("+experiment=balanced", model=model)
    solvers = OmegaConf.to_container(cfg.solver)
    preset = validate_preset(OmegaConf.to_container(cfg.preset), solvers)
    shape = resolve_shape(preset, cfg.model.scale.spatial, cfg.model.scale.temporal)
    loaded = load_pipeline(cfg.model)
    ours = generate(loaded, request(shape, solver="euler", steps=6), solvers)  # worker=diffusers: the default
    plain = WanPipeline(**loaded.pipe.components)(
        prompt="a red circle moving left",
        height=shape.height,
        width=shape.width,
        num_frames=shape.num_frames,
        num_inference_steps=6,
        guidance_scale=6.5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]
    assert type(loaded.pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"  # the harness's, reused
    assert np.array_equal(ours.frames, np.clip(np.round(plain * 255.0), 0, 255).astype(np.uint8))
