"""The error boundary every entry point runs in: how a command ends.

- Every failure a user can cause ends as one line on stderr, ``error: <setting>=<value> ...``,
  and a non-zero exit; no traceback. ``HYDRA_FULL_ERROR=1`` keeps the traceback for developers.
- SIGTERM (what ``timeout``, systemd and Kubernetes send) is handled as Ctrl-C is: the
  ``KeyboardInterrupt`` unwinds through the code that closes MLflow runs as KILLED and fails the
  running trial (raised where it breaks nothing: :mod:`harness.signals`); the command then exits 143 (SIGTERM)
  or 130 (SIGINT).
- Passwords are masked in everything printed or logged (:mod:`harness.secrets`).

Hydra reports its own errors (an unknown ``model=``, a malformed override) over several lines;
run here, it raises them instead, and they are said in one line like every other error.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

from omegaconf import DictConfig

from harness import CONF_DIR, secrets, signals

_traceback_wanted = {"on": False}  # HYDRA_FULL_ERROR=1 as the user set it (the boundary sets it for Hydra)


def _hydra_line(error: Exception) -> str | None:
    """One line for Hydra's own errors (unknown config, override that cannot be applied or read), or None."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.missing_cfg_file and "/" in error.missing_cfg_file:
        group, name = error.missing_cfg_file.rsplit("/", 1)
        return f"{group}={name!r} is not a config in conf/{group}; allowed: {', '.join(error.options or [])}"
    if isinstance(error, OverrideParseException):
        return f"{_unreadable_override()}: {str(error).splitlines()[0]}; quote a value that holds = ? , or spaces"
    if isinstance(error, ConfigCompositionException):
        from omegaconf.errors import ValidationError

        cause = error.__cause__
        if isinstance(cause, ValidationError) and cause.full_key:  # a wrong type for its schema (harness/schema.py)
            return f"{cause.full_key}: {str(cause).splitlines()[0]}"
        message = " ".join(str(error).split())
        key = message.split("'")[1] if message.startswith("Could not override '") else ""
        if key and (CONF_DIR / key).is_dir():
            options = sorted(path.stem for path in (CONF_DIR / key).glob("*.yaml"))
            return f"{key} is a config group that is not in the defaults: write +{key}=NAME; allowed: {options}"
        return message
    return None


def _unreadable_override() -> str:
    """The first command-line override Hydra's grammar cannot read, for the error line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for argument in sys.argv[1:]:
        if argument.startswith("-"):
            continue
        try:
            parser.parse_overrides([argument])
        except Exception:
            return f"the override {argument!r} cannot be read"
    return "an override cannot be read"


def error_line(error: BaseException) -> str:
    """What went wrong, in one line (passwords masked): the message of a user-facing error, named otherwise.

    Args:
        error: the exception that ended the command.

    Returns:
        ``error: ...``, one line.
    """
    from omegaconf.errors import OmegaConfBaseException

    line = _hydra_line(error) if isinstance(error, Exception) else None
    if line is None and isinstance(error, OmegaConfBaseException) and getattr(error, "full_key", None):
        line = f"{error.full_key}: {str(error).splitlines()[0]}"
    if line is None and isinstance(error, ValueError):
        line = str(error)
    if line is None and isinstance(error, OSError) and error.filename:
        line = f"{error.filename}: {error.strerror or error}"
    if line is None:  # not an error the harness anticipated: say what it is, and how to see where
        line = f"{type(error).__name__}: {error} (HYDRA_FULL_ERROR=1 shows the traceback)"
    return "error: " + secrets.mask(" ".join(line.split()))


def _mask_output() -> None:
    """Mask passwords in everything this process prints or logs, remembering the command line's."""
    secrets.remember([*sys.argv[1:], os.environ.get("MLFLOW_TRACKING_URI", "")])
    sys.stdout, sys.stderr = secrets.MaskedStream(sys.stdout), secrets.MaskedStream(sys.stderr)
    logging.setLogRecordFactory(secrets.masked_record_factory(logging.getLogRecordFactory()))


def one_line_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Decorate an entry point's task function (beneath ``@hydra.main``): its errors end the command in one line.

    Hydra would catch them and print its own line of the job's overrides first; a ``SystemExit`` passes.
    """

    @functools.wraps(task)
    def guarded(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as error:
            if _traceback_wanted["on"]:
                raise
            sys.exit(error_line(error))

    return guarded


def run_command(hydra_main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` entry point inside the boundary (see the module's docstring).

    Args:
        hydra_main: the decorated ``main`` of an entry point (its task function under :func:`one_line_errors`).
    """
    _traceback_wanted["on"] = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them over several lines
    _mask_output()
    signals.install()
    sys.unraisablehook = signals.unraisable_hook
    try:
        _run_guarded(hydra_main)
    finally:
        signals.uninstall()  # the work is done: a later signal ends the process as it ends any other


def _run_guarded(hydra_main: Callable[[], Any]) -> None:
    try:
        hydra_main()
        signals.uninstall()  # the work is done: no interrupt is raised past this point (a retry may still come)
    except KeyboardInterrupt as interrupt:
        stopped = signals.stopping_signal(interrupt)
        print(f"stopped by {stopped.name}: open MLflow runs ended KILLED", file=sys.stderr)
        sys.exit(signals.EXIT_CODES[stopped])
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # sys.exit("error: ...") deeper in: one line, masked
            sys.exit(secrets.mask(" ".join(exit_.code.split())))
        raise
    except Exception as error:  # Hydra's own (composition, overrides) and the run folder's checks
        if _traceback_wanted["on"]:
            raise
        sys.exit(error_line(error))
    if came := signals.received():  # it came after the last checkpoint, or its interrupt was swallowed there
        print(f"{came.name} came as the command ended: its work was done and its runs ended as usual", file=sys.stderr)
        sys.exit(signals.EXIT_CODES[came])
