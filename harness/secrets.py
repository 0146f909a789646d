"""Passwords never shown: masked in everything the harness prints, logs, saves or reports.

A storage or tracking URL may carry a password in two forms: in its userinfo
(``postgresql://user:pass@host/db``, where users type ``/`` and ``@`` unescaped) or as a
query parameter (``?password=...``). Every text that leaves the process passes through
:func:`mask`; URLs shown on purpose go through :func:`public_url`, which renders the
userinfo with SQLAlchemy (``render_as_string(hide_password=True)``). Passwords seen on the
command line are also remembered and masked wherever they appear verbatim.

This module imports no heavy library: the error boundary uses it before anything loads.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote

HIDDEN = "***"
SECRET_KEYS = ("password", "passwd", "pwd", "sslpassword", "secret", "token")
# scheme://user:password@rest; the password runs to the last '@' before whitespace, so one that
# holds '@' or '/' is masked whole
_USERINFO = re.compile(r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<password>\S*)@(?P<rest>[^\s@]*)")
_PARAM = re.compile(rf"(?i)(?<![\w.])(?P<key>{'|'.join(SECRET_KEYS)})=(?P<value>[^&\s'\",;`]*)")
_KNOWN: set[str] = set()  # passwords seen on the command line, masked wherever they appear verbatim
MIN_KNOWN = 4  # shorter values would mask ordinary words; the patterns above still mask them in URLs


def mask(text: str) -> str:
    """``text`` with every password form replaced by ``***``.

    Args:
        text: anything about to be printed, logged or saved.

    Returns:
        The text, passwords masked (userinfo passwords, secret query or key=value parameters,
        and passwords remembered from the command line).
    """
    if not text:
        return text
    masked = _USERINFO.sub(lambda m: f"{m['prefix']}:{HIDDEN}@{m['rest']}", text)
    masked = _PARAM.sub(lambda m: f"{m['key']}={HIDDEN}" if m["value"] else m[0], masked)
    for known in sorted(_KNOWN, key=len, reverse=True):
        masked = masked.replace(known, HIDDEN)
    return masked


def mask_tree(value: Any) -> Any:
    """A plain container (dicts, lists, strings) with every string in it masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_tree(item) for item in value]
    return value


def remember(texts: list[str]) -> None:
    """Remember the passwords in these texts (command-line arguments, environment values) to mask them anywhere.

    Args:
        texts: strings that may hold URLs with passwords.
    """
    for text in texts:
        for match in _USERINFO.finditer(text or ""):
            password = match["password"]
            _KNOWN.update(value for value in (password, unquote(password), quote(unquote(password), safe="")))
        for match in _PARAM.finditer(text or ""):
            _KNOWN.update((match["value"], unquote(match["value"])))
    _KNOWN.difference_update({value for value in _KNOWN if len(value) < MIN_KNOWN})


def connection_url(url: str) -> str:
    """The URL with its userinfo password percent-encoded, so a password holding ``@`` or ``/`` reaches the
    database driver whole (the userinfo ends at the last ``@``, as in the masking)."""
    match = _USERINFO.fullmatch(url.strip())
    if match is None:
        return url
    return f"{match['prefix']}:{quote(unquote(match['password']), safe='')}@{match['rest']}"


def public_url(url: str, root: str | Path | None = None) -> str:
    """A storage or tracking URL safe to print, log and commit.

    The userinfo's password is hidden by SQLAlchemy's URL rendering, secret query parameters
    become ``***``, and a SQLite file inside ``root`` (the project) is shown relative to it,
    so a report names no machine's paths.

    Args:
        url: an Optuna storage or MLflow tracking URL.
        root: the project root (``paths.root_dir``), or None to keep paths as they are.

    Returns:
        The URL as it may be shown.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    head, mark, query = connection_url(str(url)).partition("?")  # an encoded password holds no '?'
    if _USERINFO.search(head):
        try:
            head = make_url(head).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: the patterns mask it
            head = mask(head)
    shown = mask(head + mark + query)
    if root is not None and shown.startswith("sqlite:///"):
        path, base = Path(shown.removeprefix("sqlite:///")), Path(root).resolve()
        if path.is_absolute() and path.is_relative_to(base):
            return f"sqlite:///{path.relative_to(base)}"
    return shown


class MaskedStream:
    """A text stream that masks passwords in what is written to it (stdout and stderr of a command)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(mask(text))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...: the stream's own
        return getattr(self.stream, name)


def masked_record_factory(factory: Any) -> Any:
    """A log-record factory (``logging.setLogRecordFactory``) whose records carry their message masked.

    Every logger's records pass through it, whatever handler writes them (console, Hydra's job log file,
    Optuna's own handler).
    """

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it when the record is written
            return record
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    return make
