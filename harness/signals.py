"""SIGTERM and Ctrl-C: where the interrupt is raised, so that stopping a command never breaks what it leaves behind.

SIGTERM (what ``timeout``, systemd and Kubernetes send) is handled as Ctrl-C is: a ``KeyboardInterrupt`` unwinds
through the code that ends MLflow runs KILLED and fails the running trial. Python runs a signal handler between
any two bytecodes of the main thread, so by itself the interrupt would land anywhere. Three kinds of place must not
be cut, and there it is raised later:

- **inside a library whose state an exception cut in two corrupts** (:data:`UNCUTTABLE`): a database transaction
  cut keeps its lock (MLflow's SQLite store then refuses to end the runs: "database is locked"), a subprocess cut
  as it starts lives on (ffmpeg writing after the command ended), ``logging``'s fork handler swallows the interrupt
  with its lock held. The signal is sent to the main thread again every :data:`RETRY_S` until it is out of them;
- **inside a :func:`signals_deferred` block** of the harness (a run opened but not yet guarded): raised at its end;
- **where Python swallows exceptions** (a ``__del__``): the signal is remembered, and :func:`raise_if_stopped`,
  called at every denoising step and every trial claimed, raises it again.

The first signal decides; later ones do not cut the closing of the runs short.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it

UNCUTTABLE = (  # modules (and their submodules) an interrupt must not be raised in
    "sqlalchemy",
    "alembic",
    "sqlite3",
    "psycopg",
    "psycopg_pool",
    "mlflow.store.db",
    "mlflow.store.tracking.sqlalchemy_store",
    "optuna.storages",
    "subprocess",
    "imageio",
    "imageio_ffmpeg",
    "logging",
)
RETRY_S = 0.01  # how soon a signal that came inside one of them is tried again


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled exactly like Ctrl-C (runs end KILLED, the running trial fails), then exit 143."""


def stopping_signal(interrupt: KeyboardInterrupt) -> signal.Signals:
    """The signal behind an interrupt: SIGTERM for :class:`Terminated`, else SIGINT."""
    return signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT


_received: dict[str, Any] = {"signal": None}  # the first stopping signal, kept after its interrupt was raised
_owed = {"on": False}  # it came and its interrupt is not raised yet
_deferred = {"depth": 0}  # inside signals_deferred(): the interrupt waits for the block's end
_retries: queue.SimpleQueue = queue.SimpleQueue()  # put() is safe in a signal handler; the retry thread gets()
_retrier: dict[str, threading.Thread | None] = {"thread": None}


def install() -> None:
    """Handle SIGTERM and SIGINT in this process as the module's docstring says (call it from the main thread)."""
    for each in EXIT_CODES:
        signal.signal(each, _on_signal)
    if _retrier["thread"] is None:
        _retrier["thread"] = threading.Thread(target=_send_again, name="signal retry", daemon=True)
        _retrier["thread"].start()


def uninstall() -> None:
    """The default disposition again (after a command's work: a late signal ends the process as it ends any)."""
    _owed["on"] = False
    for each in EXIT_CODES:
        signal.signal(each, signal.SIG_DFL)


def received() -> signal.Signals | None:
    """The stopping signal this process received, if any."""
    return None if _received["signal"] is None else signal.Signals(_received["signal"])


def _interrupt(number: int) -> KeyboardInterrupt:
    return Terminated("SIGTERM") if number == signal.SIGTERM else KeyboardInterrupt("SIGINT")


def _raise_owed() -> None:
    _owed["on"] = False
    raise _interrupt(_received["signal"])


def _on_signal(number: int, frame: FrameType | None) -> None:
    if _received["signal"] is None:
        _received["signal"] = number
        _owed["on"] = True
    if not _owed["on"] or _deferred["depth"]:
        return  # raised already (a later signal changes nothing), or raised at the deferred block's end
    if inside_uncuttable(frame):
        _retries.put(number)
        return
    _raise_owed()


def inside_uncuttable(frame: FrameType | None) -> bool:
    """Whether the main thread, at ``frame``, is running code of an :data:`UNCUTTABLE` module (at any depth)."""
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if any(name == module or name.startswith(module + ".") for module in UNCUTTABLE):
            return True
        frame = frame.f_back
    return False


def _send_again() -> None:
    """The retry thread: a signal that came inside uncuttable code is sent to the main thread again a bit later."""
    main = threading.main_thread().ident
    while True:
        number = _retries.get()
        time.sleep(RETRY_S)
        if _owed["on"] and signal.getsignal(number) is _on_signal:
            signal.pthread_kill(main, number)


def raise_if_stopped() -> None:
    """A checkpoint in long work (each denoising step, each trial claimed): stop here if a signal came.

    It also raises an interrupt that was raised before and swallowed (a ``__del__``, where Python prints
    "Exception ignored in ..." and goes on): while an interrupt propagates no video is made, so a checkpoint is
    reached after a signal only when it was swallowed or is still owed.

    Raises:
        KeyboardInterrupt: :class:`Terminated` after SIGTERM, KeyboardInterrupt after SIGINT.
    """
    if _received["signal"] is not None and not _deferred["depth"]:
        _raise_owed()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """A block a signal must not cut in two (a run opened but not yet guarded, a trial claimed but not yet
    recorded as the caller's): SIGTERM or SIGINT arriving inside it is raised when it ends.

    A block entered while an interrupt unwinds (closing runs) raises nothing more.
    """
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        if _owed["on"] and not _deferred["depth"]:
            _raise_owed()


def unraisable_hook(unraisable: Any) -> None:
    """``sys.unraisablehook``: an interrupt of ours that Python swallowed prints no traceback (the next checkpoint
    raises it again); anything else is printed as Python prints it."""
    if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _received["signal"] is not None):
        sys.__unraisablehook__(unraisable)
