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
from omegaconf import OmegaConf

from harness import cli

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


class SignalledWhereExceptionsAreSwallowed:
    """Sends SIGTERM from ``__del__``: the handler's interrupt is raised there, and Python swallows it ("Exception
    ignored in ..."), as it does in the fork handler ``logging`` runs when ffmpeg starts (the case CI met)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def boundary_signals(monkeypatch):
    """The boundary's signal handler installed in this process, and put back afterwards."""
    monkeypatch.setitem(cli._received, "signal", None)
    previous = {number: signal.signal(number, cli._on_signal) for number in cli.EXIT_CODES}
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # swallowed on purpose
def test_a_sigterm_python_swallowed_stops_the_next_denoising_step(make_cfg, boundary_signals):
    from harness.measure.plan import plan
    from harness.pipeline.generate import generate
    from harness.pipeline.load import load_pipeline

    cfg = make_cfg()
    plan_ = plan(cfg)
    loaded, solvers = load_pipeline(cfg.model, plan_.worker), OmegaConf.to_container(cfg.solver)
    SignalledWhereExceptionsAreSwallowed()  # the interrupt is raised and swallowed here: nothing stops
    with pytest.raises(cli.Terminated):
        generate(loaded, plan_.request("a red circle moving left", 0), solvers)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # swallowed on purpose
def test_a_sigterm_swallowed_after_the_last_checkpoint_still_exits_143(boundary_signals, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_mask_output", lambda: None)  # pytest's capture stays as it is
    monkeypatch.setattr(cli.signal, "signal", lambda number, handler: None)  # keep the fixture's handler
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # and put back what run_command sets
    monkeypatch.setenv("HYDRA_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))

    def finishes_after_a_swallowed_signal() -> None:
        SignalledWhereExceptionsAreSwallowed()

    with pytest.raises(SystemExit) as exit_:
        cli.run_command(finishes_after_a_swallowed_signal)
    assert exit_.value.code == 143
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == "SIGTERM came as the command ended: its work was done and its runs ended as usual"


def test_a_sigterm_handled_inside_logging_s_fork_handler_leaves_its_lock_free_and_prints_nothing():
    # What CI met: ffmpeg starting (a fork) as SIGTERM came; the interrupt was raised in logging's "after fork"
    # handler before it released logging's lock, and Python printed it as "Exception ignored in ...".
    result = subprocess.run([sys.executable, "-I", "-c", FORK_CUT], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["logging's lock is free", "stopped at the checkpoint"]
    assert result.stderr == ""


FORK_CUT = """import functools
import hashlib
import os
import signal
import threading

during_fork = threading.Event()
# "before" handlers run last registered first: logging's takes its lock, then the event is set, then the main
# thread hashes for about a second in C (no bytecode, the GIL released) while another thread sends SIGTERM. The
# signal is handled at the first bytecode after the fork: logging's "after in parent" handler, which releases
# its lock, as in CI.
os.register_at_fork(before=functools.partial(hashlib.sha256, bytes(600_000_000)))
os.register_at_fork(before=during_fork.set)
import logging  # noqa: E402
import sys  # noqa: E402

from harness import cli  # noqa: E402


def send_sigterm() -> None:
    during_fork.wait()
    os.kill(os.getpid(), signal.SIGTERM)


signal.signal(signal.SIGTERM, cli._on_signal)
sys.unraisablehook = cli._unraisable
threading.Thread(target=send_sigterm, daemon=True).start()
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
other = threading.Thread(target=logging.getLogger, args=("another thread",), daemon=True)
other.start()
other.join(3)
print("logging's lock is", "held" if other.is_alive() else "free")
try:
    cli.raise_if_stopped()
except cli.Terminated:
    print("stopped at the checkpoint")
"""


def test_a_signal_inside_a_deferred_block_waits_for_its_end(boundary_signals):
    finished = []
    with pytest.raises(cli.Terminated):
        with cli.signals_deferred():  # a run opened, not yet guarded: it must not be cut in two
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append("the block")
    assert finished == ["the block"]
    try:
        with cli.signals_deferred():  # unwinding through a block after the signal raises nothing more
            finished.append("a later block")
    except KeyboardInterrupt:  # (pytest would take it for Ctrl-C and stop the session)
        pytest.fail("a block entered after the signal raised it again")
    with cli.signals_deferred(raise_at_end=False):  # a trial claimed: the caller's next checkpoint raises it
        pass
    with pytest.raises(cli.Terminated):
        cli.raise_if_stopped()
