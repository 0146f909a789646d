"""The error boundary every entry point runs in: how a command ends.

- Every failure a user can cause ends as one line on stderr, ``error: <setting>=<value> ...``,
  and a non-zero exit; no traceback. ``HYDRA_FULL_ERROR=1`` keeps the traceback for developers.
- SIGTERM (what ``timeout``, systemd and Kubernetes send) is handled as Ctrl-C is: the
  ``KeyboardInterrupt`` unwinds through the code that closes MLflow runs as KILLED and fails the
  running trial; the command then exits 143 (SIGTERM) or 130 (SIGINT). Python swallows an exception raised
  where it cannot propagate (a fork handler as a subprocess starts, a ``__del__``), so the signal is also
  remembered, and every denoising step and every claimed trial checks it (:func:`raise_if_stopped`).
- Passwords are masked in everything printed or logged (:mod:`harness.secrets`).

Hydra reports its own errors (an unknown ``model=``, a malformed override) over several lines;
run here, it raises them instead, and they are said in one line like every other error.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from omegaconf import DictConfig

from harness import CONF_DIR, secrets

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled exactly like Ctrl-C (runs end KILLED, the running trial fails), then exit 143."""


def stopping_signal(interrupt: KeyboardInterrupt) -> signal.Signals:
    """The signal behind an interrupt: SIGTERM for :class:`Terminated`, else SIGINT."""
    return signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT


_traceback_wanted = {"on": False}  # HYDRA_FULL_ERROR=1 as the user set it (the boundary sets it for Hydra)
_deferred = {"depth": 0}  # inside signals_deferred(): the signal waits for the block's end
_received = {"signal": None}  # the first stopping signal, kept after its interrupt was raised


def _interrupt(number: int) -> KeyboardInterrupt:
    return Terminated("SIGTERM") if number == signal.SIGTERM else KeyboardInterrupt("SIGINT")


def _on_signal(number: int, frame: Any) -> None:
    # the first signal stops the command; later ones are ignored so that closing the runs is not cut short
    for each in EXIT_CODES:
        signal.signal(each, signal.SIG_IGN)
    _received["signal"] = number
    if not _deferred["depth"]:
        raise _interrupt(number)


def raise_if_stopped() -> None:
    """A checkpoint in long work (each denoising step, each trial claimed): stop here if a signal came.

    The handler raises the interrupt wherever Python happens to be. When that is a place whose exceptions Python
    swallows, printing "Exception ignored in ..." (the fork handler ``logging`` registers, run as ffmpeg starts
    to write an mp4; a ``__del__``), the command would go on to its end as if no signal had come. While an
    interrupt propagates no video is made, so the checkpoint is reached only when it was swallowed.

    Raises:
        KeyboardInterrupt: :class:`Terminated` after SIGTERM, KeyboardInterrupt after SIGINT.
    """
    if _received["signal"] is not None and not _deferred["depth"]:
        raise _interrupt(_received["signal"])


def _unraisable(unraisable: Any) -> None:
    """``sys.unraisablehook``: an interrupt of ours that Python swallowed is no traceback (the next checkpoint
    raises it again); anything else is printed as Python prints it.

    The swallowing place CI met is the fork handler with which ``logging`` releases its lock after a fork: cut at
    its first line, it has not released it, and any other thread that logs (a trial's heartbeat) would wait for
    ever. It is released here in its stead.
    """
    if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _received["signal"] is not None):
        sys.__unraisablehook__(unraisable)
        return
    cut = unraisable.exc_traceback
    release = getattr(logging, "_releaseLock", None)
    if release is not None and cut is not None and cut.tb_frame.f_code is release.__code__:
        if cut.tb_lineno == release.__code__.co_firstlineno:  # cut before its body ran
            release()


@contextmanager
def signals_deferred(raise_at_end: bool = True) -> Iterator[None]:
    """A block a signal must not cut in two (a trial claimed but not yet guarded, a run opened but not yet
    guarded): SIGTERM or SIGINT arriving inside it is raised when it ends, or with ``raise_at_end=False`` at the
    next :func:`raise_if_stopped` (where the caller guards what the block made)."""
    before = _received["signal"]  # a signal raised before the block (unwinding through it) is not raised again
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        came_inside = before is None and _received["signal"] is not None
        if raise_at_end and came_inside and not _deferred["depth"]:
            raise _interrupt(_received["signal"])


def _hydra_line(error: Exception) -> str | None:
    """One line for Hydra's own errors (unknown config, override that cannot be applied or read), or None."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.missing_cfg_file and "/" in error.missing_cfg_file:
        group, name = error.missing_cfg_file.rsplit("/", 1)
        return f"{group}={name!r} is not a config in conf/{group}; allowed: {', '.join(error.options or [])}"
    if isinstance(error, OverrideParseException):
        return f"{_unreadable_override()}: {str(error).splitlines()[0]}; quote a value that holds = ? , or spaces"
    if isinstance(error, ConfigCompositionException):
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
    for each in EXIT_CODES:
        signal.signal(each, _on_signal)
    sys.unraisablehook = _unraisable
    try:
        hydra_main()
    except KeyboardInterrupt as interrupt:
        stopped = stopping_signal(interrupt)
        print(f"stopped by {stopped.name}: open MLflow runs ended KILLED", file=sys.stderr)
        sys.exit(EXIT_CODES[stopped])
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # sys.exit("error: ...") deeper in: one line, masked
            sys.exit(secrets.mask(" ".join(exit_.code.split())))
        raise
    except Exception as error:  # Hydra's own (composition, overrides) and the run folder's checks
        if _traceback_wanted["on"]:
            raise
        sys.exit(error_line(error))
    if _received["signal"] is not None:  # its interrupt was swallowed after the last checkpoint
        came = signal.Signals(_received["signal"])
        print(f"{came.name} came as the command ended: its work was done and its runs ended as usual", file=sys.stderr)
        sys.exit(EXIT_CODES[came])
