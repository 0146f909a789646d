"""Real servers the fleet tests start on this machine: PostgreSQL (pgserver) and an MLflow tracking server.

Both listen on this machine only (a unix socket, 127.0.0.1), are stopped by PID, and every
wait for them is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests


@contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL 16 server in ``folder``; yields its URL (unix socket, user postgres)."""
    import pgserver

    server = pgserver.get_server(str(folder), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(command: list[str], log: Path, ready: str) -> Iterator[None]:
    """A server process (its own session, stopped by PID); ready once ``ready`` answers, within 60 s."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(120):
            try:
                if requests.get(ready, timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{command[:4]} did not start: {log.read_text()[-2000:]}")
        yield
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with proxied artifacts in ``folder``; yields its URL."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    with serving(command, folder / "server.log", f"{url}/health"):
        yield url
