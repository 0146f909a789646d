"""A preset measured end to end into a temporary MLflow store: runs, params, metrics, mp4s."""

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import retrain_one_weight, store_client
from omegaconf import OmegaConf

from harness.measure.references import ReferenceVideos
from harness.measure.session import measure_preset
from harness.measure.video import read_video
from harness.pipeline.generate import GenerationRequest
from harness.pipeline.load import LoadedPipeline, ModelUnavailableError, load_pipeline
from harness.pipeline.worker import Worker
from harness.preset import resolve_shape, validate_preset

ROOT = Path(__file__).resolve().parents[1]


def children(client, parent):
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


def test_a_preset_is_logged_with_params_metrics_and_a_readable_mp4(make_cfg, tmp_path):
    cfg = make_cfg("+experiment=balanced", "prompts.seeds=[0,1]")
    summary = measure_preset(cfg)
    client = store_client(tmp_path)
    parent = client.get_run(summary.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "balanced | tiny | 480x832, 61 frames, 3.81 s"
    assert {"median_wall_time_s", "mean_clip_score", "mean_psnr_db", "mean_ssim"} <= set(parent.data.metrics)
    runs = children(client, parent)
    assert len(runs) == 2
    for child in runs:
        params, metrics = child.data.params, child.data.metrics
        assert params["sample_solver"] == "euler" and params["size"] == "480*832" and params["frame_num"] == "64"
        assert params["scheduler"] == "FlowMatchEulerDiscreteScheduler"
        assert (params["width"], params["height"], params["num_frames"]) == ("64", "112", "13")
        assert params["frames_official"] == "61" and params["model"] == "tiny" and params["device"] == "cpu"
        for key in (
            "time_text_encode_s",
            "time_denoise_s",
            "time_decode_s",
            "time_video_write_s",
            "time_step_median_s",
            "wall_time_s",
            "peak_memory_mb",
            "clip_score",
            "psnr_db",
            "ssim",
        ):
            assert key in metrics, key
        assert 0 <= metrics["clip_score"] <= 100 and metrics["psnr_db"] < 100  # euler 18 != reference
        assert len(client.get_metric_history(child.info.run_id, "time_step_s")) == 18
        names = {item.path for item in client.list_artifacts(child.info.run_id)}
        assert names == {
            "video.mp4",
            "frames.png",
            "config.yaml",
            "side_by_side.mp4",
            "side_by_side.png",
            "schedule.json",
        }
        video = read_video(
            Path(client.download_artifacts(child.info.run_id, "video.mp4", str(tmp_path / child.info.run_id)))
        )
        frames, height, width = video.shape[:3]
        assert (frames, height, width) == (int(params["num_frames"]), int(params["height"]), int(params["width"]))
        assert width < height  # '480*832' is portrait


def test_the_baseline_is_its_own_reference(make_cfg, tmp_path):
    summary = measure_preset(make_cfg("+experiment=baseline"))
    assert summary.mean("psnr_db") == 100.0 and summary.mean("ssim") == pytest.approx(1.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("preset.sample_steps=0", "preset.sample_steps=0 must be an integer from 1 to 1000"),
        ("preset.sample_guide_scale=inf", "preset.sample_guide_scale=inf must be a number from 0 to 100"),
        ("preset.task=i2v-14B", "preset.task='i2v-14B' is not a text-to-video task"),
        # 1001 frames are 63 latent frames on the tiny model, whose RoPE has 32 positions
        ("preset.frame_num=1001", "which model 'tiny' cannot make: 63 positions along one axis, its RoPE has 32"),
        ("preset_file=nowhere.yaml", "preset_file='nowhere.yaml' does not exist"),
    ],
)
def test_bad_input_opens_no_run(make_cfg, tmp_path, override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        measure_preset(make_cfg(override, store=False))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_real_model_without_weights_says_how_to_fix_it(make_cfg, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never reach for 1.3B weights in a test
    cfg = make_cfg(model="wan2.1-t2v-1.3b", store=False)
    with pytest.raises(ModelUnavailableError) as error:
        measure_preset(cfg)
    message = str(error.value)
    assert (
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message
        and "model=wan2.1-t2v-1.3b model.path=DIR" in message
        and "model=tiny" in message
    )
    missing = make_cfg(f"model.path={tmp_path}/nowhere", model="wan2.1-t2v-1.3b", store=False)
    with pytest.raises(ModelUnavailableError, match="there is no folder"):
        measure_preset(missing)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def cli(tmp_path, *args, multirun=False):
    command = [
        sys.executable,
        "-m",
        "harness.run",
        *(["-m"] if multirun else []),
        f"paths.root_dir={tmp_path}",
        "model=tiny",
        f"model.path={tmp_path}/tiny-wan",
        f"model.clip={tmp_path}/tiny-clip",
        "prompts=smoke",
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # seconds to a minute end to end, kept out of the 5-minute default run: .ci/run runs it
def test_the_default_relative_paths_work_from_any_folder(tmp_path):
    # the README's command leaves paths.root_dir at "." (HARNESS_ROOT unset): every path is relative
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_ROOT"}
    command = [sys.executable, "-m", "harness.run", "model=tiny", "model.path=models/tiny-wan",
               "model.clip=models/tiny-clip", "prompts=smoke"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    client = store_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("wan-presets/tiny").experiment_id], "tags.kind = 'video'")
    assert runs and "video.mp4" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def test_cli_bad_input_is_one_line_and_non_zero(tmp_path):
    result = cli(tmp_path, "preset.size=480x832")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: preset.size='480x832' is not 'W*H' (width*height, e.g. '480*832' for portrait)"
    ]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow
def test_cli_multirun_compares_the_four_proposal_presets(tmp_path):
    result = cli(tmp_path, "+experiment=baseline,balanced,aggressive,quality_first", multirun=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "presets compared" in result.stdout
    client = store_client(tmp_path)
    experiment = client.get_experiment_by_name("wan-presets/tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.kind = 'preset'")
    names = sorted(run.info.run_name.split(" | ")[0] for run in parents)
    assert names == ["aggressive", "balanced", "baseline", "quality_first"]
    by_name = {run.data.tags["preset_name"]: run for run in parents}
    # the baseline is the reference itself: no speed-up is logged for it (the table says "baseline")
    assert by_name["baseline"].data.tags["is_baseline"] == "true"
    assert "speedup_vs_baseline" not in by_name["baseline"].data.metrics
    for name in ("balanced", "aggressive", "quality_first"):  # each paired with the baseline in its own job
        metrics = by_name[name].data.metrics
        assert metrics["speedup_pairs"] == 1 and metrics["speedup_vs_baseline"] > 0, name  # smoke: 1 prompt x 1 seed
        assert metrics["speedup_vs_baseline"] == pytest.approx(
            metrics["paired_baseline_s"] / metrics["paired_preset_s"]
        ), name  # one pair: its ratio, baseline seconds over preset seconds
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert len(children(client, parent)) == 1


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5"])
def test_guidance_stop_outside_its_range_is_refused(make_cfg, value):
    from harness.measure.plan import plan

    with pytest.raises(ValueError, match=rf"speed.guidance_stop={value} must be a fraction of the steps in \(0, 1\]"):
        plan(make_cfg(f"speed.guidance_stop={value}"))


def test_truncated_guidance_is_logged_and_scored_against_the_full_baseline(make_cfg, tmp_path):
    summary = measure_preset(make_cfg("+experiment=baseline", "speed.guidance_stop=0.5"))
    client = store_client(tmp_path)
    child = children(client, client.get_run(summary.run_id))[0]
    assert child.data.params["guidance_stop"] == "0.5" and child.data.metrics["guided_steps"] == 13
    assert summary.mean("psnr_db") < 100  # not its own reference: the baseline guides every step


def test_the_toy_world_logs_prompt_adherence_beside_clip(make_cfg, tmp_path):
    cfg = make_cfg("+experiment=aggressive", "quality.fidelity=false", model="toy")
    summary = measure_preset(cfg)
    assert summary.size == "32*64" and summary.frames == 9  # 384*640 x 48 frames on the toy scale
    client = store_client(tmp_path)
    child = children(client, client.get_run(summary.run_id))[0]
    for key in ("adherence_color", "adherence_shape", "adherence_direction", "clip_score"):
        assert key in child.data.metrics, key
    assert child.data.params["model"] == "toy"


@pytest.mark.parametrize(
    "override, message",
    [
        ("speed.attention=flash_hub", "speed.attention='flash_hub' is not a local diffusers attention backend"),
        (
            "speed.attention=_native_flash",
            "speed.attention='_native_flash' needs a GPU; allowed on cpu: ['native', '_native_math']",
        ),
        ("model.dtype=float16", "model.dtype='float16' is not supported on cpu"),
        ("model.dtype=float64", "model.dtype='float64' is not allowed; allowed: auto, float32, bfloat16, float16"),
    ],
)
def test_precision_and_attention_are_checked_before_any_run(make_cfg, tmp_path, override, message):
    with pytest.raises(ValueError) as error:
        measure_preset(make_cfg(override, store=False))
    assert message in str(error.value)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow  # seconds to a minute end to end, kept out of the 5-minute default run: .ci/run runs it
def test_math_attention_and_bfloat16_run_and_are_logged(make_cfg, tmp_path):
    summary = measure_preset(
        make_cfg("speed.attention=_native_math", "model.dtype=bfloat16", "model.path=" + str(tmp_path / "bf16-wan"))
    )
    client = store_client(tmp_path)
    params = children(client, client.get_run(summary.run_id))[0].data.params
    assert params["attention"] == "_native_math" and params["dtype"] == "bfloat16"


@pytest.mark.slow
def test_regional_compile_is_a_separate_load_and_its_cost_is_reported_apart(make_cfg, tmp_path):
    from harness.pipeline.load import LOAD_COUNT

    before = LOAD_COUNT["pipeline"]
    summary = measure_preset(make_cfg("speed.compile=regional", "preset.sample_steps=4"))
    assert LOAD_COUNT["pipeline"] == before + 1  # the eager pipeline stays usable beside it
    run = store_client(tmp_path).get_run(summary.run_id)
    assert run.data.params["compile"] == "regional"
    assert run.data.metrics["time_warmup_s"] > run.data.metrics["median_wall_time_s"]  # compiling happened there


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["speed.compile=max"], "speed.compile='max' is not allowed; allowed: ['off', 'regional', 'full']"),
        (["speed.compile=full", "timing.warmup=false"], "speed.compile='full' needs timing.warmup=true"),
    ],
)
def test_bad_compile_settings(make_cfg, overrides, message):
    from harness.measure.plan import plan

    with pytest.raises(ValueError, match=re.escape(message)):
        plan(make_cfg(*overrides))


def test_references_of_a_retrained_model_at_the_same_path_are_not_reused(make_cfg, model_dir, tmp_path):
    cfg = make_cfg()
    solvers = OmegaConf.to_container(cfg.solver)
    preset = validate_preset(OmegaConf.to_container(cfg.preset), solvers)
    request = GenerationRequest("a red circle moving left", 0, resolve_shape(preset, 8, 4), 25, 6.5, "unipc", 5.0)
    weights = tmp_path / "model"
    load_pipeline(cfg.model)  # builds the tiny model, if no test before this one did
    shutil.copytree(model_dir / "tiny-wan", weights)

    def references():  # a fresh load of whatever the folder holds now
        loaded = LoadedPipeline(
            pipe=None, device=torch.device("cpu"), dtype=torch.float32, name="tiny", source=str(weights)
        )
        return ReferenceVideos(tmp_path / "references", loaded, preset, request.shape, solvers)

    before, after = np.zeros((1, 2, 2, 3), np.uint8), np.ones((1, 2, 2, 3), np.uint8)
    assert (references().get(request, own_frames=before) == before).all()
    assert (references().get(request, own_frames=after) == before).all()  # same weights: the cached reference
    official = replace(request, worker=Worker.from_config(make_cfg("worker=official").worker))
    assert (references().get(official, own_frames=after) == after).all()  # the official worker's video is another
    shutil.rmtree(weights)
    retrain_one_weight(model_dir / "tiny-wan", weights)
    assert (references().get(request, own_frames=after) == after).all()


HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


class BurstyLoad:
    """Two real busy processes on the measuring thread's core, let run during every other generation.

    A load switched by the clock is caught or missed depending on how its bursts fall across the
    repeats (a robust spread ignores a minority of slow videos); switching it per generation and
    sharing one core makes every loaded video about three times slower on any machine.
    """

    def __init__(self, generate):
        self.generate_unloaded = generate
        self.core = min(os.sched_getaffinity(0))
        self.calls = 0
        self.hogs = [subprocess.Popen([sys.executable, "-c", HOG, str(self.core)]) for _ in range(2)]
        self._signal(signal.SIGSTOP)

    def generate(self, *args, **kwargs):
        self.calls += 1
        loaded = self.calls % 2 == 0
        if loaded:
            self._signal(signal.SIGCONT)
        try:
            return self.generate_unloaded(*args, **kwargs)
        finally:
            if loaded:
                self._signal(signal.SIGSTOP)

    def _signal(self, number):
        for hog in self.hogs:
            os.kill(hog.pid, number)

    def stop(self):
        for hog in self.hogs:
            hog.kill()
            hog.wait()


@pytest.mark.slow  # seconds to a minute end to end, kept out of the 5-minute default run: .ci/run runs it
def test_a_time_measured_under_a_bursty_cpu_load_is_flagged_noisy(make_cfg, tmp_path, monkeypatch):
    # Another process loads the CPU in bursts: the repeats of one video no longer agree.
    from harness.measure import session

    cfg = make_cfg(
        "+experiment=balanced",
        "timing.repeats=6",
        "timing.threads=1",
        "quality.clip=false",
        "quality.fidelity=false",
        "timing.pair=false",
    )
    load = BurstyLoad(session.generate)
    monkeypatch.setattr(session, "generate", load.generate)
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {load.core})  # this thread computes: torch runs one thread inline
    try:
        summary = measure_preset(cfg)
    finally:
        os.sched_setaffinity(0, allowed)
        load.stop()
    assert summary.timing_noisy is True and summary.spread > cfg.timing.noise_bound
    run = store_client(tmp_path).get_run(summary.run_id)
    assert run.data.tags["timing_noisy"] == "true" and run.data.metrics["wall_time_spread"] > 0.1
    assert "NOISY" in str(summary_table_text([summary]))


def summary_table_text(rows):
    from rich.console import Console

    from harness.measure.terminal import summary_table

    console = Console(width=250, record=True, file=open(os.devnull, "w"))
    console.print(summary_table(rows))
    return console.export_text()


def test_a_smaller_shorter_preset_is_scored_against_the_baseline_s_full_video(make_cfg, tmp_path):
    summary = measure_preset(make_cfg("+experiment=aggressive"))  # 384*640, 45 frames
    assert summary.output_spec == "384x640, 45 frames, 2.81 s"
    assert summary.spec_change == "size 480x832 -> 384x640; frames 81 -> 45"
    child = children(store_client(tmp_path), store_client(tmp_path).get_run(summary.run_id))[0]
    assert child.data.params["spec_change"] == "size 480x832 -> 384x640; frames 81 -> 45"
    assert child.data.metrics["time_per_video_second_s"] == pytest.approx(child.data.metrics["wall_time_s"] / (45 / 16))
    # the reference is the baseline's own video: 480*832 x 81 frames on the tiny scale
    references = [np.load(path) for path in (tmp_path / ".cache" / "references").glob("*.npy")]
    assert [r.shape for r in references] == [(17, 112, 64, 3)]
    assert summary.mean("psnr_db") < 30  # lost size and seconds count as lost fidelity


def test_matching_the_reference_holds_the_last_frame_and_upsamples():
    from harness.measure.quality import match_reference

    short = np.stack([np.full((4, 2, 3), value, np.uint8) for value in (10, 20)])  # 2 frames, 4x2
    matched = match_reference(short, (4, 8, 4, 3))
    assert matched.shape == (4, 8, 4, 3)
    assert [int(frame.mean()) for frame in matched] == [10, 20, 20, 20]  # frame j at second j; then the last held


def test_mp4_writing_is_a_switch_for_machines_without_ffmpeg(make_cfg, tmp_path):
    summary = measure_preset(make_cfg("+experiment=balanced", "tracking.video=false"))
    client = store_client(tmp_path)
    child = children(client, client.get_run(summary.run_id))[0]
    names = {item.path for item in client.list_artifacts(child.info.run_id)}
    assert names == {"frames.png", "config.yaml", "side_by_side.png", "schedule.json"}  # the grids show what was made
    assert child.data.metrics["time_video_write_s"] == 0.0


def test_names_with_quotes_are_found_by_mlflow_filters_in_a_real_store(tmp_path):
    from harness.measure.tracking import quoted, unique_run_name

    client = store_client(tmp_path)
    experiment = client.create_experiment("quotes")
    names = ["plain", "it's", 'say "hi"', "back\\slash"]
    for name in names:
        client.create_run(experiment, run_name=name, tags={"study": name})
    for name in names:
        found = client.search_runs([experiment], f"tags.study = {quoted(name)}")
        assert [run.data.tags["study"] for run in found] == [name]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        assert unique_run_name(experiment, "it's") == "it's #2" and unique_run_name(experiment, "new") == "new"
    finally:
        mlflow.set_tracking_uri(previous)
    with pytest.raises(ValueError, match="holds both quote characters"):
        quoted('it\'s "both"')
