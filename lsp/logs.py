"""Logging for the server: stderr, and the client's ``window/logMessage``.

On stdio the protocol owns stdout, so nothing may be printed there: every log record
goes to stderr, and records from codeglm's own loggers also go to the client's log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LEVELS = ("debug", "info", "warning", "error")
# Loggers whose records the client sees; pygls's own debug chatter stays on stderr.
CLIENT_LOGGERS = ("lsp", "codeglm")


class ClientLogHandler(logging.Handler):
    """Forwards records to ``send(level, message)`` (the server's ``window/logMessage``)."""

    def __init__(self, send: Callable[[str, str], None]) -> None:
        super().__init__(logging.INFO)
        self._send = send
        self.addFilter(lambda record: record.name.split(".")[0] in CLIENT_LOGGERS)

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING else "info"
        try:
            self._send(level, self.format(record))
        except Exception:  # logging must never break serving
            self.handleError(record)


def configure_logging(level: str, send_to_client: Callable[[str, str], None] | None = None) -> None:
    """Route logs to stderr (at ``level``) and, if given, to the client."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    stderr.setLevel(level.upper())
    root.addHandler(stderr)
    root.setLevel(min(logging.getLevelName(level.upper()), logging.INFO))
    # pygls logs every message it sends at info level: only worth seeing when debugging.
    logging.getLogger("pygls").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    if send_to_client is not None:
        client = ClientLogHandler(send_to_client)
        client.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(client)
