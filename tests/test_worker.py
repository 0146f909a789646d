"""worker=official generates what the official Wan 2.1 code generates; worker=diffusers what WanPipeline does.

The expected values are written here from the official code's definitions (Wan-Video/Wan2.1 at 9737cba:
wan/utils/fm_solvers_unipc.py, wan/utils/fm_solvers.py, wan/configs/shared_config.py, wan/utils/utils.py),
in this test's own words.
"""

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import store_client
from omegaconf import OmegaConf

from harness.measure.plan import plan
from harness.measure.session import measure_preset
from harness.pipeline.generate import GenerationRequest, _noise_device, generate
from harness.pipeline.levers import Speed
from harness.pipeline.load import load_pipeline, transformer_dtype
from harness.pipeline.worker import Worker, to_pixels

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = Worker(
    name="official", schedule="official", noise_device="model", guidance_passes="always", pixels="truncate",
    precision="autocast_bf16",
)  # fmt: skip
# sha256 of wan/configs/shared_config.py's sample_neg_prompt (137 characters: vivid colours, overexposed, static,
# blurred details, subtitles, ..., three legs, many people in the background, walking backwards)
WAN_NEGATIVE_SHA256 = "ce96e0324e4b54ce4b6e867f669ca520952e1a34cc116543516b1897f0d3c47e"


def official_schedule(solver, steps, shift):
    """The schedule the official loop samples at, from its definitions.

    UniPC: the scheduler is made with shift 1, so its training sigmas are 1 - alpha for alpha running from 1/1000
    up to 1, stored as float32; set_timesteps spaces steps+1 values from the largest (0.999 in float32) to the
    smallest (0), keeps all but the last, and shifts them. DPM++: get_sampling_sigmas spaces steps+1 values from
    1 to 0, keeps the first steps, shifts them; the scheduler (shift 1) leaves them be. Both: timestep = sigma *
    1000 cut to an int64, and a final sigma 0 appended, all sigmas stored as float32.
    """
    largest = float(torch.tensor(1 - 1 / 1000, dtype=torch.float32)) if solver == "unipc" else 1.0
    points = np.linspace(largest, 0.0, steps + 1)[:steps]  # numpy's spacing, as both official schedulers use it
    shifted = shift * points / (1 + (shift - 1) * points)
    timesteps = torch.from_numpy(shifted * 1000).to(torch.int64).tolist()
    return {"timesteps": timesteps, "sigmas": np.append(shifted, 0.0).astype(np.float32).tolist()}


def video_runs(root):
    client = store_client(root)
    experiment = client.get_experiment_by_name("wan-presets/tiny") or client.get_experiment_by_name("wan-presets/toy")
    return client, client.search_runs([experiment.experiment_id], "tags.kind = 'video'")


QUICK = ("quality.clip=false", "quality.fidelity=false", "tracking.video=false", "timing.warmup=false")


SLOWER = pytest.mark.slow  # a neighbour of a default case: CI runs it with the slow tests (each is a measured run)


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
@pytest.mark.parametrize("steps, shift", [(25, 5.0), pytest.param(18, 3.0, marks=SLOWER), (12, 3.0)])
def test_the_logged_schedule_is_the_official_code_s(make_cfg, tmp_path, solver, steps, shift):
    settings = (f"preset.sample_solver={solver}", f"preset.sample_steps={steps}", f"preset.sample_shift={shift}")
    measure_preset(make_cfg(*settings, *QUICK))
    client, runs = video_runs(tmp_path)
    logged = json.loads(
        Path(client.download_artifacts(runs[0].info.run_id, "schedule.json", str(tmp_path))).read_text()
    )
    assert logged == official_schedule(solver, steps, shift)
    if (steps, shift) == (25, 5.0):  # anchors read off the official code's own output
        assert logged["timesteps"][-1] == 172
        assert logged["sigmas"][0] == (1.0 if solver == "dpm++" else pytest.approx(0.99979985, abs=1e-7))
    assert runs[0].data.params["scheduler"].endswith("(official schedule)")


def test_worker_diffusers_keeps_diffusers_schedule(make_cfg, tmp_path):
    measure_preset(make_cfg("worker=diffusers", *QUICK))
    client, runs = video_runs(tmp_path)
    logged = json.loads(
        Path(client.download_artifacts(runs[0].info.run_id, "schedule.json", str(tmp_path))).read_text()
    )
    assert logged["timesteps"][-1] == 175 and logged != official_schedule("unipc", 25, 5.0)  # 25 steps, shift 5
    assert runs[0].data.params["scheduler"] == "UniPCMultistepScheduler"


@pytest.mark.parametrize(
    "overrides, model, expected",
    [
        ((), "tiny", "wan"),  # none given: the official code's default
        (("worker=diffusers",), "tiny", ""),  # WanPipeline encodes "" as given
        pytest.param(("prompts.negative_prompt='blurry, static'",), "tiny", "blurry, static", marks=SLOWER),
        ((), "toy", " "),  # the toy world reads no Chinese: the empty text, as a space the official code keeps
    ],
)
def test_the_negative_prompt_is_the_worker_s(make_cfg, tmp_path, overrides, model, expected):
    measure_preset(make_cfg(*overrides, *QUICK, model=model))
    _, runs = video_runs(tmp_path)
    encoded = runs[0].data.params["negative_prompt"] if "negative_prompt" in runs[0].data.params else ""
    if expected == "wan":
        assert len(encoded) == 137 and hashlib.sha256(encoded.encode()).hexdigest() == WAN_NEGATIVE_SHA256
    else:
        assert encoded == expected


@pytest.fixture
def tiny(make_cfg):
    cfg = make_cfg()
    plan_ = plan(cfg)
    return load_pipeline(cfg.model), plan_, OmegaConf.to_container(cfg.solver)


def test_prompts_are_cleaned_with_ftfy_as_the_official_tokenizer_does(tiny):
    loaded, plan_, solvers = tiny
    full_width = "a ｒｅｄ circle moving left"  # ftfy turns full-width letters into ASCII ones
    assert loaded.pipe.tokenizer(full_width).input_ids != loaded.pipe.tokenizer("a red circle moving left").input_ids
    request = replace(plan_.request("a red circle moving left", 0), steps=3)
    cleaned = generate(loaded, replace(request, prompt=full_width), solvers)
    assert np.array_equal(cleaned.frames, generate(loaded, request, solvers).frames)


def test_official_pixels_are_truncated_not_rounded(tiny):
    assert to_pixels(np.array([0.9999, 0.5]), "truncate").tolist() == [254, 127]
    assert to_pixels(np.array([0.9999, 0.5]), "round").tolist() == [255, 128]
    loaded, plan_, solvers = tiny
    request = replace(plan_.request("a red circle moving left", 0), steps=3)
    cut = generate(loaded, request, solvers).frames
    rounded = generate(loaded, replace(request, worker=replace(request.worker, pixels="round")), solvers).frames
    difference = rounded.astype(int) - cut
    assert difference.min() >= 0 and difference.max() == 1  # the same video, every pixel cut down, some by one


def count_calls(pipe):
    calls = []
    return calls, pipe.transformer.register_forward_hook(lambda *args: calls.append(1))


@pytest.mark.parametrize("guidance", [1.0, 0.5])
def test_the_official_loop_runs_both_passes_at_any_guidance(tiny, guidance):
    loaded, plan_, solvers = tiny
    request = replace(plan_.request("a red circle moving left", 0), steps=3, guidance=guidance)
    calls, handle = count_calls(loaded.pipe)
    try:
        official = generate(loaded, request, solvers)
        official_calls = len(calls)
        one_pass = generate(
            loaded, replace(request, worker=replace(request.worker, guidance_passes="above_one")), solvers
        )
    finally:
        handle.remove()
    assert (official_calls, len(calls) - official_calls) == (6, 3)
    # at 1.0 uncond + 1 x (cond - uncond) is cond: the same video for twice the work; below 1 another video
    assert np.array_equal(official.frames, one_pass.frames) == (guidance == 1.0)


def test_the_official_noise_generator_lives_on_the_model_s_device(tiny):
    loaded = tiny[0]
    assert _noise_device(loaded, OFFICIAL) == loaded.device and _noise_device(loaded, Worker()).type == "cpu"
    on_a_gpu = SimpleNamespace(device=torch.device("cuda", 0))  # a device object only: nothing runs on it
    assert _noise_device(on_a_gpu, OFFICIAL) == torch.device("cuda", 0)  # one seed, the worker's video
    assert _noise_device(on_a_gpu, Worker()) == torch.device("cpu")  # what WanPipeline's callers usually pass


def test_on_cuda_the_official_worker_keeps_float32_weights_and_diffusers_bfloat16():
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert transformer_dtype("auto", cuda, OFFICIAL, Speed()) == torch.float32
    assert transformer_dtype("auto", cuda, Worker(), Speed()) == torch.bfloat16
    assert transformer_dtype("auto", cuda, OFFICIAL, Speed(precision="bfloat16")) == torch.bfloat16
    assert transformer_dtype("float32", torch.device("cpu"), OFFICIAL, Speed()) == torch.float32


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # the CPU's layer norm, unfused
def test_the_official_precision_runs_float32_weights_under_bfloat16_autocast(tiny):
    from harness.pipeline.passes import official_precision

    transformer = tiny[0].pipe.transformer
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 16, 2, 8, 8, generator=generator),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "return_dict": False,
    }
    plain = transformer(**inputs)[0]
    with official_precision(transformer, enabled=True):
        autocast = transformer(**inputs)[0]
    assert next(transformer.parameters()).dtype == torch.float32  # the weights stay float32
    assert autocast.dtype == torch.float32  # the prediction comes back in float32, as WanModel's .float()
    assert not torch.equal(autocast, plain)  # computed in bfloat16 ...
    assert torch.allclose(autocast, plain, atol=0.1)  # ... to bfloat16's precision
    assert torch.equal(transformer(**inputs)[0], plain)  # off again after the block


def test_bfloat16_weights_are_a_lever_judged_against_the_worker_s_own_video(make_cfg, tmp_path):
    summary = measure_preset(make_cfg("speed.precision=bfloat16", "quality.clip=false", "timing.warmup=false"))
    assert summary.mean("psnr_db") < 100  # scored against the float32 worker's video, not its own
    _, runs = video_runs(tmp_path)
    assert runs[0].data.params["precision"] == "bfloat16" and runs[0].data.params["worker"] == "official"


def test_a_request_defaults_to_a_plain_wanpipeline_call():
    request = GenerationRequest(prompt="p", seed=0, shape=None, steps=4, guidance=1.0, solver="unipc", shift=3.0)
    assert request.worker == Worker() and request.guided_steps == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("preset.enhance_prompt=true", "preset.enhance_prompt=true is not supported: prompt extension rewrites"),
        ("worker.schedule=fast", "worker.schedule='fast' is not allowed; allowed: ['official', 'diffusers']"),
        ("worker=nope", "worker='nope' is not a config in conf/worker; allowed: diffusers, official"),
    ],
)
def test_bad_worker_input_is_one_line_before_any_run(tmp_path, override, message):
    command = [sys.executable, "-m", "harness.run", f"paths.root_dir={tmp_path}", "model=tiny", override]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "mlruns" / "mlflow.db").exists()
