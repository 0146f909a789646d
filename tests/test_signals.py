"""SIGTERM and Ctrl-C mid-generation end every MLflow run KILLED and the running trial failed, with no restart;
a run a dead process left RUNNING is closed by the next command."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import store_client

ROOT = Path(__file__).resolve().parents[1]
SEEDS = "prompts.seeds=[0,1,2,3,4,5,6,7,8,9]"  # ten videos: the signal always lands mid-generation


def running(root: Path, kind: str) -> bool:
    """Whether the MLflow store under ``root`` holds a RUNNING run of this kind (read with sqlite3, no lock)."""
    try:
        with sqlite3.connect(f"{(root / 'mlruns' / 'mlflow.db').as_uri()}?mode=ro", uri=True) as database:
            query = (
                "SELECT count(*) FROM runs JOIN tags ON runs.run_uuid = tags.run_uuid "
                "WHERE runs.status = 'RUNNING' AND tags.key = 'kind' AND tags.value = ?"
            )
            return database.execute(query, (kind,)).fetchone()[0] > 0
    except sqlite3.Error:
        return False


def stop_mid_video(command: list[str], root: Path, kind: str, number: signal.Signals) -> subprocess.CompletedProcess:
    """Start a command, wait until a run of ``kind`` is RUNNING and a video is being made, send the signal."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not running(root, kind) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # into the generations (warm-up and the first videos)
    assert process.poll() is None, "the command ended before the signal"
    process.send_signal(number)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def statuses(root: Path) -> dict[str, str]:
    client = store_client(root)
    experiment = client.get_experiment_by_name("wan-presets/tiny")
    return {run.info.run_name: run.info.status for run in client.search_runs([experiment.experiment_id])}


@pytest.mark.slow
@pytest.mark.parametrize("number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_generation_ends_harness_run_with_every_run_killed(tmp_path, base_overrides, number, code):
    command = [sys.executable, "-m", "harness.run", *base_overrides, SEEDS]
    result = stop_mid_video(command, tmp_path, "preset", number)
    assert result.returncode == code, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"stopped by {number.name}: open MLflow runs ended KILLED"
    assert "Traceback" not in result.stderr
    found = statuses(tmp_path)
    assert "RUNNING" not in found.values(), found  # without a restart
    assert [status for name, status in found.items() if " | tiny | " in name] == ["KILLED"]


@pytest.mark.slow
def test_sigterm_to_a_search_worker_fails_its_trial_and_ends_its_runs_killed(tmp_path, base_overrides):
    command = [
        sys.executable,
        "-m",
        "harness.search",
        *base_overrides,
        "search.n_trials=2",
        SEEDS.replace("prompts.", "search."),
    ]
    result = stop_mid_video(command, tmp_path, "trial", signal.SIGTERM)
    assert result.returncode == 143, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    found = statuses(tmp_path)
    assert "RUNNING" not in found.values(), found
    assert found["study video_fast"] == "KILLED" and found["#0 baseline"] == "KILLED"
    trials = optuna.load_study(study_name="video_fast", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}").trials
    assert [(t.state, t.user_attrs.get("stopped_by")) for t in trials] == [(optuna.trial.TrialState.FAIL, "SIGTERM")]
    assert "fail_reason" not in trials[0].user_attrs  # not the trial's own failure: not counted, measured again


def test_a_run_whose_process_died_is_closed_by_the_next_command(make_cfg, tmp_path):
    from harness.measure import tracking

    experiment_id = tracking.use_store(make_cfg())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process of this machine that no longer exists, as after SIGKILL
    client = mlflow.MlflowClient()
    here = socket.gethostname()
    orphan, elsewhere, alive = (
        client.create_run(experiment_id, tags={"worker": worker, "kind": "preset"}).info.run_id
        for worker in (f"{here}:{dead.pid}", "another-host:1", f"{here}:{os.getpid()}")
    )
    tracking.use_store(make_cfg())  # what harness.run does first
    status = {run_id: client.get_run(run_id).info.status for run_id in (orphan, elsewhere, alive)}
    assert status == {orphan: "KILLED", elsewhere: "RUNNING", alive: "RUNNING"}
