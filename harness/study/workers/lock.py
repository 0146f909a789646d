"""One lock per study, shared by every worker: who may claim the next trial.

Workers claim trials under this lock, so however many start together a study gets
exactly ``search.n_trials`` trials and its presets are enqueued once. On SQLite (one
machine) the lock is ``flock`` on a file beside the database; on PostgreSQL (many
machines) it is a session advisory lock of the server itself.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from pathlib import Path

import sqlalchemy

from harness.atomic import file_lock
from harness.stores import scheme


class StudyLock:
    """The study's lock; ``with lock:`` holds it (re-entrant use is not needed and not supported)."""

    def __init__(self, url: str, study_name: str):
        self.url, self.study_name = url, study_name
        self._engine: sqlalchemy.Engine | None = None
        self._connection: sqlalchemy.Connection | None = None
        self._file: AbstractContextManager | None = None

    @property
    def key(self) -> int:
        """A signed 64-bit advisory-lock key of the study's name."""
        digest = hashlib.sha256(f"harness-study:{self.study_name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def __enter__(self) -> "StudyLock":
        if scheme(self.url) == "sqlite":
            database = Path(sqlalchemy.engine.make_url(self.url).database or "")
            self._file = file_lock(database.with_name(database.name + f".{self.study_name}.lock"))
            self._file.__enter__()
            return self
        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        self._connection = self._engine.connect()
        self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.__exit__(None, None, None)
            self._file = None
        if self._connection is not None:
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._connection.close()
            self._connection = None
