"""Where runs and studies are kept, checked before anything opens them (no heavy import here).

- MLflow's tracking store: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in
  ``paths.mlruns_dir`` (``mlruns/mlflow.db``).
- The study's Optuna storage: ``search.storage``, else SQLite beside it (``mlruns/optuna.db``).

A refusal names the setting that chose the store, shows its URL with the password masked, and
says what is allowed. A SQLite file that is not a database, or was cut short, is named here:
opened by MLflow or Optuna it would end in a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig

from harness.folders import writable_folder
from harness.secrets import connection_url, public_url

# The user's MLFLOW_TRACKING_URI, read before anything runs: mlflow.set_tracking_uri writes the variable too.
ENV_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
STORAGE_SCHEMES = ("sqlite", "postgresql")  # the stores whose workers can share a lock (harness.study.workers.lock)
SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def scheme(url: str) -> str:
    """The database or protocol of a URL (``postgresql+psycopg://...`` -> ``postgresql``; ``''`` without one)."""
    match = _SCHEME.match(url)
    return match.group(1).split("+", 1)[0].lower() if match else ""


def tracking_uri(mlruns_dir: Path) -> str:
    """The SQLite tracking URI for an ``mlruns`` folder."""
    return f"sqlite:///{mlruns_dir.resolve() / 'mlflow.db'}"


def tracking_setting(cfg: DictConfig) -> tuple[str, str]:
    """The setting that chose the tracking store, and the store's URI (a password percent-encoded whole)."""
    if cfg.tracking.get("uri"):
        return "tracking.uri", connection_url(str(cfg.tracking.uri))
    if ENV_TRACKING_URI:
        return "MLFLOW_TRACKING_URI", connection_url(ENV_TRACKING_URI)
    return "paths.mlruns_dir", tracking_uri(Path(cfg.paths.mlruns_dir))


def store_uri(cfg: DictConfig) -> str:
    """Where runs go: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else SQLite under ``paths.mlruns_dir``."""
    return tracking_setting(cfg)[1]


def storage_url(cfg: DictConfig) -> str:
    """The study's storage: ``search.storage``, or SQLite beside the MLflow store.

    ``postgresql://`` URLs use psycopg 3 (SQLAlchemy 2.1's default driver for the scheme); a
    password holding ``@`` or ``/`` is percent-encoded, so it reaches the driver whole.
    """
    if cfg.search.storage:
        return connection_url(str(cfg.search.storage))
    return f"sqlite:///{Path(cfg.paths.mlruns_dir).resolve() / 'optuna.db'}"


def storage_setting(cfg: DictConfig) -> str:
    """The setting that chose the study's storage."""
    return "search.storage" if cfg.search.storage else "paths.mlruns_dir"


def shown_setting(cfg: DictConfig, setting: str, url: str) -> str:
    """``setting='value'`` as an error shows it: the URL with its password masked, or the ``mlruns`` folder."""
    if setting == "paths.mlruns_dir":
        return f"{setting}={str(cfg.paths.mlruns_dir)!r}"
    return f"{setting}={public_url(url, cfg.paths.root_dir)!r}"


def error_reason(error: BaseException) -> str:
    """The root of a database error, in one line: the driver's own message (Optuna and SQLAlchemy wrap it)."""
    while error.__cause__ is not None and not hasattr(error, "orig"):
        error = error.__cause__
    return " ".join(str(getattr(error, "orig", None) or error).split())[:300]


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None for another scheme or an in-memory database."""
    if scheme(url) != "sqlite":
        return None
    path = url.split("://", 1)[1].removeprefix("/").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def sqlite_problem(path: Path) -> str | None:
    """Why an existing SQLite file cannot be opened (not a database, cut short), or None.

    Reads the file's 100-byte header only: its magic string, page size and page count.
    """
    size = path.stat().st_size
    if size == 0:
        return None  # an empty file is an empty database
    with path.open("rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return "is not a SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages, changes, valid_for = (int.from_bytes(header[i : i + 4], "big") for i in (28, 24, 92))
    if changes == valid_for and size < pages * page_size:
        return f"is truncated: {size} bytes of the {pages * page_size} its header promises"
    return None


def _check_sqlite_file(setting: str, url: str, shown: str, create: bool) -> None:
    """A SQLite store: its file whole, or (when ``create``) a folder where it can be made."""
    path = sqlite_path(url)
    if path is None:
        return
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{shown} names {path}, which is not a file")
        if problem := sqlite_problem(path):
            raise ValueError(
                f"{shown}: {path.name} {problem}; move it aside (what it held is lost) or point {setting} elsewhere"
            )
    elif not create:
        raise ValueError(f"{shown}: there is no {path}; run harness.search first (or fix {setting})")
    else:  # the default store's folder is the setting itself; a URL's folder is named beside it
        writable_folder(setting, path.parent, None if setting == "paths.mlruns_dir" else shown)


def _check_reachable(setting: str, url: str, shown: str) -> None:
    """A database server answers (within 10 s) and its driver is installed."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 10})
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as error:
        raise ValueError(
            f"{shown} needs a driver that is not installed ({error.name}); for PostgreSQL: pip install -e '.[postgres]'"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise ValueError(f"{shown} cannot be reached: {error_reason(error)}") from None


def check_server(setting: str, uri: str) -> None:
    """Raises ValueError unless the tracking server answers its health check (within 5 s)."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as error:
        raise ValueError(
            f"{setting}={public_url(uri)!r} does not answer ({type(error).__name__}); start `mlflow server` "
            f"there or fix the address"
        ) from None


def check_tracking(cfg: DictConfig) -> None:
    """The tracking store: a known scheme, a SQLite file (when local) that is a whole database, a server that answers.

    Raises:
        ValueError: naming the setting, the URI (password masked) and what is allowed.
    """
    setting, uri = tracking_setting(cfg)
    shown = shown_setting(cfg, setting, uri)
    if scheme(uri) not in TRACKING_SCHEMES:
        raise ValueError(
            f"{shown} is not a tracking store MLflow can use here; allowed: http(s)://HOST:PORT (an "
            f"mlflow server), sqlite:///PATH, or a database URL ({', '.join(TRACKING_SCHEMES[3:])})"
        )
    _check_sqlite_file(setting, uri, shown, create=True)
    if scheme(uri) in ("http", "https"):
        check_server(setting, uri)


def check_storage(cfg: DictConfig, create: bool) -> None:
    """The study's storage: a scheme workers can share, and a SQLite file that is whole (or can be made).

    Args:
        cfg: the composed config.
        create: whether the command may create the storage (``harness.search``); the others read it.

    Raises:
        ValueError: naming the setting, the URL (password masked) and what is allowed, or why the database
            server cannot be reached.
    """
    setting, url = storage_setting(cfg), storage_url(cfg)
    shown = shown_setting(cfg, setting, url)
    if scheme(url) not in STORAGE_SCHEMES:
        raise ValueError(
            f"{shown} is not a storage the harness's workers can share; allowed: sqlite:///PATH (one "
            f"machine) or postgresql://USER@HOST/DB (several machines)"
        )
    _check_sqlite_file(setting, url, shown, create)
    if scheme(url) == "postgresql":
        _check_reachable(setting, url, shown)
