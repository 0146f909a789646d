"""No password in any file: the run's outputs (Hydra's folders and logs), the MLflow stores, the report.

A real PostgreSQL (pgserver, trust authentication on its own socket: any password is accepted,
so the passwords below travel every path a real one does) holds the study. Its URL carries a
password in each form users type: in the userinfo with '/', '@' and ':' unescaped, and as a
``?password=`` query parameter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow import MlflowClient
from servers import mlflow_server, postgres

ROOT = Path(__file__).resolve().parents[1]
USERINFO_PASSWORD = "us3r/p@ss:w0rd"
QUERY_PASSWORD = "qu3ry/s3cr@t"
# every way a password could leak: as typed, percent-encoded (as the harness hands it to the driver), and
# the part after an '@' (what a mask that stops at the first '@' would leave)
LEAKS = [*(f(p) for p in (USERINFO_PASSWORD, QUERY_PASSWORD) for f in (str, lambda p: quote(p, safe=""))), "p@ss:w0rd"]
LEAKS += ["ss:w0rd", "s3cr@t"]


def command(module: str, arguments: list[str]) -> str:
    """Run a command of the harness; its stdout and stderr (it must succeed)."""
    result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_no_password_form_reaches_any_file_or_line(tmp_path, base_overrides):
    with postgres(tmp_path / "pg") as admin_url, mlflow_server(tmp_path / "server") as tracking:
        socket = admin_url.split("host=", 1)[1]
        in_userinfo = f"'postgresql://postgres:{USERINFO_PASSWORD}@/postgres?host={socket}'"
        in_query = f"'postgresql://postgres@/postgres?host={socket}&password={QUERY_PASSWORD}'"
        study = ["search.n_trials=1", "search.enqueue=[baseline]", "search.drift_check=false"]
        printed = command("harness.search", [*base_overrides, *study, f"search.storage={in_userinfo}"])
        printed += command("harness.report", [*base_overrides, "study=video_fast", f"search.storage={in_query}"])
        printed += command("harness.run", [*base_overrides, f"search.storage={in_query}", "timing.warmup=false"])
        # a tracking server behind a login: the password in the URL's userinfo (MLflow sends it as basic auth)
        on_server = f"tracking.uri='{tracking.replace('://', f'://harness:{USERINFO_PASSWORD}@')}'"
        printed += command("harness.run", [*base_overrides, on_server, "timing.warmup=false"])
        experiment = MlflowClient(tracking).get_experiment_by_name("wan-presets/tiny")
        assert MlflowClient(tracking).search_runs([experiment.experiment_id])  # the run went to the server
    files = [path for folder in ("outputs", "mlruns", "server") for path in (tmp_path / folder).rglob("*")]
    files = [path for path in files if path.is_file()]
    overrides = "".join(path.read_text() for path in files if path.name == "overrides.yaml")
    assert "postgres:***@" in printed + overrides and "password=***" in overrides  # shown, masked
    assert "harness:***@127.0.0.1" in overrides
    assert any(path.name == "overrides.yaml" for path in files) and (tmp_path / "mlruns" / "mlflow.db") in files
    assert any(path.name == "report.md" for path in files)
    leaked = {str(p.relative_to(tmp_path)): leak for p in files for leak in LEAKS if leak.encode() in p.read_bytes()}
    leaked.update({"printed": leak for leak in LEAKS if leak in printed})
    assert not leaked
