"""Several workers on one study, and workers killed at any moment: on SQLite, and on PostgreSQL
with an MLflow tracking server, both real servers started here (tiny model, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
from conftest import store_client
from servers import mlflow_server, postgres

from harness.study.engine.floors import counts_toward

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STATES = optuna.trial.TrialState
PRESETS = ["baseline", "balanced", "aggressive", "quality_first"]
PASSWORD = "s3cret-pw-4711"


def worker_args(root: Path, model_dir: Path, *extra: str) -> list[str]:
    return [f"paths.root_dir={root}", "model=tiny", f"model.path={model_dir}/tiny-wan",
            f"model.clip={model_dir}/tiny-clip", "prompts=smoke", "search.heartbeat_s=1", "search.grace_s=3",
            *extra]  # fmt: skip


def start(args: list[str], log: Path, module: str = "harness.search", env: dict | None = None) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=out, env=env,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def finish(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    for process, log in zip(processes, logs):
        assert process.wait(timeout=900) == 0, log.read_text()[-3000:]


def check_study(study: optuna.Study, client: mlflow.MlflowClient, n_trials: int) -> None:
    """What a study must hold after its workers end, whatever happened to them."""
    trials = study.get_trials(deepcopy=False)
    assert sum(counts_toward(t) for t in trials) == n_trials
    assert not [t.number for t in trials if t.state in (STATES.RUNNING, STATES.WAITING)]
    measured = [t.user_attrs["preset_name"] for t in trials if counts_toward(t) and "preset_name" in t.user_attrs]
    assert sorted(measured) == sorted(PRESETS)  # each exactly once, none lost
    assert all(t.state == STATES.COMPLETE for t in trials if counts_toward(t) and t.user_attrs.get("preset_name"))
    baseline = next(t for t in trials if t.user_attrs.get("preset_name") == "baseline" and t.state == STATES.COMPLETE)
    later = [t for t in trials if counts_toward(t) and t is not baseline]
    assert all(t.datetime_start >= baseline.datetime_complete for t in later)  # the baseline first
    searched = [tuple(sorted(t.params.items())) for t in later if "preset_name" not in t.user_attrs]
    enqueued = {tuple(sorted(t.params.items())) for t in later if "preset_name" in t.user_attrs}
    assert len(set(searched)) == len(searched) and not set(searched) & enqueued
    experiment = client.get_experiment_by_name("wan-presets/tiny").experiment_id
    assert len(client.search_runs([experiment], "tags.kind = 'study'")) == 1
    for trial in trials:
        if trial.state == STATES.COMPLETE:
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            assert run.info.status == "FINISHED" and "median_wall_time_s" in run.data.metrics
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")


def run_workers(root: Path, workers: list[tuple[list[str], dict | None]]) -> list[Path]:
    """Workers (arguments, environment) started at the same moment; their logs once all ended well."""
    logs = [root / f"worker{i}.log" for i in range(len(workers))]
    finish([start(args, log, env=env) for (args, env), log in zip(workers, logs)], logs)
    return logs


def test_three_workers_on_one_sqlite_study_run_exactly_n_trials(tmp_path, model_dir):
    run_workers(tmp_path, [(worker_args(tmp_path, model_dir, "search.n_trials=12"), None)] * 3)
    study = optuna.load_study(study_name="video_fast", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    client = store_client(tmp_path)
    check_study(study, client, 12)
    assert len(study.trials) == 12  # nothing killed: not one trial more than asked
    experiment = client.get_experiment_by_name("wan-presets/tiny").experiment_id
    workers = {run.data.tags["worker"] for run in client.search_runs([experiment], "tags.kind = 'trial'")}
    assert len(workers) >= 2  # the trials were shared, not run by one worker while the others waited


def with_password(url: str) -> str:
    """A login role with a password on the test server, and its URL (the socket trusts it, as a server may)."""
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE ROLE harness LOGIN SUPERUSER PASSWORD '{PASSWORD}'"))
    engine.dispose()
    return url.replace("postgres:@", f"harness:{PASSWORD}@", 1)


def test_three_workers_on_postgresql_with_an_mlflow_server_never_show_the_password(tmp_path, model_dir):
    with postgres(tmp_path / "pg") as admin_url, mlflow_server(tmp_path / "mlflow") as tracking:
        url = with_password(admin_url)
        args = worker_args(tmp_path, model_dir, "search.n_trials=12", f"search.storage='{url}'")
        by_config = ([*args, f"tracking.uri={tracking}"], None)
        by_environment = (args, {**os.environ, "MLFLOW_TRACKING_URI": tracking})  # honoured as well
        logs = run_workers(tmp_path, [by_config, by_config, by_environment])
        report = tmp_path / "report.log"
        finish([start([*by_config[0], "study=video_fast"], report, "harness.report")], [report])
        study = optuna.load_study(study_name="video_fast", storage=url)
        client = mlflow.MlflowClient(tracking)
        check_study(study, client, 12)
        assert len(study.trials) == 12
        assert not (tmp_path / "mlruns").exists()  # everything went to the server
        experiment = client.get_experiment_by_name("wan-presets/tiny").experiment_id
        runs = client.search_runs([experiment])
        texts = [log.read_text() for log in [*logs, report]]
        texts += [str(run.data.tags) + str(run.data.params) for run in runs]
        study_run = client.search_runs([experiment], "tags.kind = 'study'")[0].info.run_id
        texts += [Path(client.download_artifacts(study_run, name, str(tmp_path / "dl"))).read_text()
                  for name in ("study_config.yaml", "report/report.md")]  # fmt: skip
        texts += [(tmp_path / "outputs" / "studies" / "video_fast" / "report.md").read_text()]  # study_dir
        assert "harness:***@" in "".join(texts)  # the URL is shown, masked
        assert not [text for text in texts if PASSWORD in text]


def wait_for_running(storage: str, wanted, deadline_s: float = 300) -> int:
    """The number of the first RUNNING trial ``wanted(trial)`` accepts, polling for at most ``deadline_s``."""
    deadline, study = time.time() + deadline_s, None
    while time.time() < deadline:
        try:
            if study is None:  # made once (quick polls catch short trials); never creates tables, never races
                watcher = optuna.storages.RDBStorage(storage, skip_table_creation=True)
                study = optuna.load_study(study_name="video_fast", storage=watcher)
            trials = study.get_trials(deepcopy=False)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):  # not created yet
            study, trials = None, []
        for trial in trials:
            if trial.state == STATES.RUNNING and wanted(trial):
                return trial.number
        time.sleep(0.1)
    pytest.fail("the awaited trial never ran")


def test_sigkill_at_any_moment_loses_only_the_killed_trial(tmp_path, model_dir):
    # pruning off: a searched trial pruned before it generates would be RUNNING too briefly to be killed
    no_pruning = ["search.prune_predicted=false", "search.prune_quality=false"]
    args = worker_args(tmp_path, model_dir, "search.n_trials=9", "search.seeds=[0,1,2]", *no_pruning)
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    log = tmp_path / "worker.log"
    moments = [  # which trial is running when the worker is killed, and when it is restarted
        (lambda t: t.user_attrs.get("preset_name") == "baseline", 0),
        (lambda t: t.user_attrs.get("preset_name") == "balanced", 5),  # after the heartbeat went stale
        (lambda t: "preset_name" not in t.user_attrs, 0),
    ]
    killed = []
    for wanted, pause_s in moments:
        process = start(args, log)
        killed.append(wait_for_running(storage, wanted))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(pause_s)
    finish([start(args, log)], [log])
    study = optuna.load_study(study_name="video_fast", storage=storage)
    check_study(study, store_client(tmp_path), 9)
    for number in killed:  # killed trials failed as stale, without a reason, and were not counted
        trial = study.trials[number]
        assert trial.state == STATES.FAIL and "fail_reason" not in trial.user_attrs and not counts_toward(trial)
