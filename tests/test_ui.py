"""What people see, checked in a real browser (Debian's chromium, headless): the MLflow UI, the
side-by-side videos, optuna-dashboard and the report's HTML page, over presets and a short study
measured on the tiny model. Screenshots go to outputs/ui-screenshots/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from servers import free_port, serving

from harness.study.engine.floors import best_feasible

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "outputs" / "ui-screenshots"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
FLAGS += ["--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required"]
PRESETS = ("baseline", "balanced", "aggressive", "quality_first")


def harness(module: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # set by earlier in-process tests
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, model_dir):
    """The four proposal presets (one multirun) and a short study with its report, on the tiny model."""
    root = tmp_path_factory.mktemp("ui")
    args = [f"paths.root_dir={root}", "model=tiny", f"model.path={model_dir}/tiny-wan",
            f"model.clip={model_dir}/tiny-clip", "prompts=smoke"]  # fmt: skip
    harness("harness.run", "-m", f"+experiment={','.join(PRESETS)}", *args)
    harness("harness.search", *args, "search.n_trials=6")
    harness("harness.report", *args, "study=video_fast")
    return root, args


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1800, "height": 1000})
    page.goto(url)
    return page


def wait_for_video(page) -> dict:
    page.wait_for_function("document.querySelector('video') && document.querySelector('video').readyState >= 1",
                           timeout=30000)  # fmt: skip
    return page.evaluate("(v => ({duration: v.duration, width: v.videoWidth, error: v.error}))"
                         "(document.querySelector('video'))")  # fmt: skip


def test_the_mlflow_ui_shows_the_runs_with_headline_columns_and_side_by_side_videos(measured, browser):
    from harness.measure.tracking import experiment_link

    root, _ = measured
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root}/mlruns/mlflow.db"]  # fmt: skip
    client = mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("wan-presets/tiny").experiment_id
    with serving(command, root / "mlflow-ui.log", f"http://127.0.0.1:{port}/health"):
        link = experiment_link(experiment).replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
        page = open_page(browser, link.split(" ")[0])
        page.wait_for_selector("text=median_wall_time_s", timeout=30000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "mlflow-runs.png"))
        text = page.inner_text("body")
        for column in ("median_wall_time_s", "speedup_vs_baseline", "mean_psnr_db", "output_spec"):
            assert column in text
        assert all(f"{name} | tiny" in text for name in PRESETS) and "Overview" not in text.split("Runs")[0]
        runs = {r.data.tags["preset_name"]: r for r in client.search_runs([experiment], "tags.kind = 'preset'")}
        for name in PRESETS[1:]:  # each proposal preset beside the baseline (the baseline is the reference itself)
            assert "side_by_side.mp4" in {a.path for a in client.list_artifacts(runs[name].info.run_id)}
        run = runs["aggressive"]  # 9 frames beside the baseline's 17: the side by side lasts as long as the longer
        frames = max(int(runs[name].data.params["num_frames"]) for name in ("aggressive", "baseline"))
        artifact = f"#/experiments/{experiment}/runs/{run.info.run_id}/artifacts/side_by_side.mp4"
        page = open_page(browser, f"http://127.0.0.1:{port}/{artifact}?workflowType=machine_learning")
        video = wait_for_video(page)
        page.screenshot(path=str(SHOTS / "mlflow-side-by-side.png"))
    assert video["error"] is None and video["duration"] == pytest.approx(frames / 16, abs=0.05)


def test_optuna_dashboard_shows_a_feasible_best_trial(measured, browser):
    root, args = measured
    port = free_port()
    study = optuna.load_study(study_name="video_fast", storage=f"sqlite:///{root}/mlruns/optuna.db")
    command = [sys.executable, "-m", "harness.dashboard", *args, f"dashboard.port={port}"]
    with serving(command, root / "dashboard.log", f"http://127.0.0.1:{port}/api/studies"):
        page = open_page(browser, f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}")
        page.wait_for_selector("text=Best Trial", timeout=30000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / "optuna-dashboard.png"))
        detail = page.evaluate(f"fetch('/api/studies/{study._study_id}').then(r => r.json())")
    assert [t["number"] for t in detail["best_trials"]] == [best_feasible(study).number]


def test_the_report_page_plays_the_presets_side_by_side(measured, browser):
    root, _ = measured
    folder = root / "outputs" / "studies" / "video_fast"
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    with serving(command, root / "http.log", f"http://127.0.0.1:{port}/report.html"):
        page = open_page(browser, f"http://127.0.0.1:{port}/report.html")
        page.wait_for_function("Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1)",
                               timeout=30000)  # fmt: skip
        videos = page.evaluate("Array.from(document.querySelectorAll('video')).map(v => [v.duration, v.error])")
        samples = page.evaluate(WATCH_ROW)
        page.screenshot(path=str(SHOTS / "report-page.png"), full_page=True)
        text, summary = page.inner_text("body"), page.inner_text("p.summary")
    assert len(videos) >= 4 and all(duration > 0 and error is None for duration, error in videos)
    assert all(name in text for name in PRESETS) and "s/video" in text
    assert summary.startswith(("Winner: trial #", "No preset faster")) and "floors:" in summary
    durations = [duration for duration, _ in samples[0]["videos"]]
    assert max(durations) > min(durations)  # the row mixes lengths (aggressive is shorter): the hard case
    for sample in samples:  # one row plays together: frame k of each clip beside frame k of the others
        playing = [time for _, time in sample["videos"] if time is not None]  # none: all ended, restarting
        assert not sample["stalled"] and (not playing or max(playing) - min(playing) < 0.25), sample
    assert all(time is not None for _, time in samples[0]["videos"])  # every clip started
    restarts = sum(later["longest"] < earlier["longest"] for earlier, later in zip(samples, samples[1:]))
    assert restarts >= 1  # ... and when the longest clip ends, all start again from their first frame


# Samples the first row every 100 ms for 2.5 s (longer than two plays of the tiny model's 17 frames): each
# video's duration and current time (None once it has ended: a shorter clip holds its last frame), whether any
# video is paused without having ended, and the longest clip's time.
WATCH_ROW = """async () => {
  const videos = Array.from(document.querySelector('.row').querySelectorAll('video'));
  const samples = [];
  for (let i = 0; i < 25; i++) {
    samples.push({
      videos: videos.map(v => [v.duration, v.ended ? null : v.currentTime]),
      stalled: videos.some(v => v.paused && !v.ended),
      longest: Math.max(...videos.map(v => v.currentTime)),
    });
    await new Promise(done => setTimeout(done, 100));
  }
  return samples;
}"""
