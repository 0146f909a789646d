"""SIGTERM and Ctrl-C mid-generation end every MLflow run KILLED and the running trial failed, with no restart;
a run a dead process left RUNNING is closed by the next command."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import psutil
import pytest
from conftest import store_client
from omegaconf import OmegaConf

from harness import cli, signals

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
    ignored in ...")."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def boundary_signals(monkeypatch):
    """The boundary's signal handling installed in this process (each test's signal is the first), put back after."""
    monkeypatch.setitem(signals._received, "signal", None)
    previous = {number: signal.getsignal(number) for number in signals.EXIT_CODES}
    signals.install()
    yield
    signals._owed["on"] = False  # nothing is sent again: pytest's own handlers are put back next
    time.sleep(2 * signals.RETRY_S)
    for number, handler in previous.items():
        signal.signal(number, handler)


def sigterm_soon(within_s: float) -> threading.Timer:
    """SIGTERM to this process at a random moment within ``within_s``, from another thread."""
    timer = threading.Timer(random.uniform(0, within_s), os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    return timer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # swallowed on purpose
def test_a_sigterm_python_swallowed_stops_the_next_denoising_step(make_cfg, boundary_signals):
    from harness.measure.plan import plan
    from harness.pipeline.generate import generate
    from harness.pipeline.load import load_pipeline

    cfg = make_cfg()
    plan_ = plan(cfg)
    loaded, solvers = load_pipeline(cfg.model, plan_.worker), OmegaConf.to_container(cfg.solver)
    SignalledWhereExceptionsAreSwallowed()  # the interrupt is raised and swallowed here: nothing stops
    with pytest.raises(signals.Terminated):
        generate(loaded, plan_.request("a red circle moving left", 0), solvers)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # swallowed on purpose
def test_a_sigterm_swallowed_after_the_last_checkpoint_still_exits_143(boundary_signals, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_mask_output", lambda: None)  # pytest's capture stays as it is
    monkeypatch.setattr(signals, "install", lambda: None)  # the fixture's handling stays
    monkeypatch.setattr(signals, "uninstall", lambda: None)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # and put back what run_command sets
    monkeypatch.setenv("HYDRA_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))

    def finishes_after_a_swallowed_signal() -> None:
        SignalledWhereExceptionsAreSwallowed()

    with pytest.raises(SystemExit) as exit_:
        cli.run_command(finishes_after_a_swallowed_signal)
    assert exit_.value.code == 143
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == "SIGTERM came as the command ended: its work was done and its runs ended as usual"


def test_sigterm_during_mlflow_writes_never_leaves_the_store_locked(boundary_signals, tmp_path):
    # What CI met: the interrupt raised inside SQLAlchemy mid-transaction kept the SQLite write lock, and ending the
    # run KILLED waited 20 s and failed ("database is locked"). About one attempt in five landed there.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("writes")
        for _ in range(30):
            signals._received["signal"] = None  # each attempt's signal is a first one
            mlflow.start_run()
            timer = sigterm_soon(0.05)
            with pytest.raises(signals.Terminated):
                while True:
                    mlflow.log_metric("written", 1.0)
            timer.join()
            started = time.perf_counter()
            mlflow.end_run("KILLED")
            assert time.perf_counter() - started < 5, "ending the run waited for a lock the interrupt left held"
    finally:
        mlflow.set_tracking_uri(previous)


def test_sigterm_as_ffmpeg_starts_leaves_no_ffmpeg_behind(boundary_signals, tmp_path):
    # What the stress runs met: the interrupt raised while subprocess started ffmpeg left it running; it wrote
    # "Error opening output file" after the command had said its last line.
    from harness.measure.video import write_mp4

    frames = np.zeros((9, 32, 32, 3), np.uint8)
    for attempt in range(15):
        signals._received["signal"] = None
        timer = sigterm_soon(0.2)
        with pytest.raises(signals.Terminated):
            for video in itertools.count():  # as harness.run goes on: generate (a checkpoint), write the mp4
                signals.raise_if_stopped()
                write_mp4(frames, tmp_path / f"{attempt}-{video}.mp4")
        timer.join()
        left = [child.name() for child in psutil.Process().children(recursive=True) if child.is_running()]
        assert not [name for name in left if "ffmpeg" in name], left


def test_a_sigterm_during_a_fork_is_raised_right_after_it_leaving_logging_s_lock_free():
    # As ffmpeg starts (a fork), SIGTERM came while logging's "after fork" handler ran: raised there, the interrupt
    # was swallowed ("Exception ignored in ...") before the handler released logging's lock, and the command ran on.
    result = subprocess.run([sys.executable, "-I", "-c", FORK_CUT], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["stopped right after the fork", "logging's lock is free"]
    assert result.stderr == ""


FORK_CUT = """import functools
import hashlib
import itertools
import os
import random
import signal
import threading
import time

during_fork = threading.Event()
# "before" handlers run last registered first: logging's takes its lock, then the event is set, then the main
# thread hashes for about a second in C (no bytecode, the GIL released) while another thread sends SIGTERM. The
# signal is handled at the first bytecode after the fork: logging's "after in parent" handler, which releases
# its lock.
os.register_at_fork(before=functools.partial(hashlib.sha256, bytes(600_000_000)))
os.register_at_fork(before=during_fork.set)
import logging  # noqa: E402
import sys  # noqa: E402

from harness import signals  # noqa: E402


def send_sigterm() -> None:
    during_fork.wait()
    os.kill(os.getpid(), signal.SIGTERM)


signals.install()
sys.unraisablehook = signals.unraisable_hook
threading.Thread(target=send_sigterm, daemon=True).start()
try:
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    time.sleep(5)
    print("not stopped: the interrupt was swallowed")
except signals.Terminated:
    print("stopped right after the fork")
other = threading.Thread(target=logging.getLogger, args=("another thread",), daemon=True)
other.start()
other.join(3)
print("logging's lock is", "held" if other.is_alive() else "free")
"""


def test_a_signal_inside_a_deferred_block_waits_for_its_end(boundary_signals):
    finished = []
    with pytest.raises(signals.Terminated):
        with signals.signals_deferred():  # a run opened, not yet guarded: it must not be cut in two
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append("the block")
    assert finished == ["the block"]
    try:
        with signals.signals_deferred():  # unwinding through a block after the signal raises nothing more
            finished.append("a later block")
    except KeyboardInterrupt:  # (pytest would take it for Ctrl-C and stop the session)
        pytest.fail("a block entered after the signal raised it again")
    with pytest.raises(signals.Terminated):  # a checkpoint still raises it (were it swallowed)
        signals.raise_if_stopped()


def test_a_signal_inside_uncuttable_code_is_raised_once_the_main_thread_is_out_of_it(boundary_signals):
    import logging

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # inside logging: uncuttable
            time.sleep(3 * signals.RETRY_S)  # sent again meanwhile, and still not raised here
            emitted.append(record.getMessage())

    emitted, reached = [], []
    logger = logging.getLogger("uncuttable")
    logger.addHandler(kept := Kept())
    try:
        with pytest.raises(signals.Terminated):
            logger.warning("logged whole")
            time.sleep(5)  # raised here, soon
            reached.append("the end of the sleep")
    finally:
        logger.removeHandler(kept)
    assert emitted == ["logged whole"] and reached == []
