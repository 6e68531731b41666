"""Logging for the command line: text or JSON lines, librdkafka's own logs among them, repeats folded.

Every Kafka client starload makes hands its librdkafka log lines to the Python logger
:data:`KAFKA_LOG` (the client's ``logger`` setting) instead of printing ``%3|…`` lines
to stderr. A client that retries by itself (a broker it cannot reach, a dropped
connection: facility ``FAIL``) logs at WARNING, not ERROR. :class:`FoldRepeats` lets
one line through and counts the repeats of it (numbers aside) for
:data:`REPEAT_WINDOW` seconds, so an unreachable broker is one line every few seconds,
not twenty a second.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime

import orjson
from rich.console import Console
from rich.logging import RichHandler

#: The logger librdkafka's lines go to (``logger`` of every client's settings).
KAFKA_LOG = logging.getLogger("starload.librdkafka")
#: Seconds during which a line's repeats are counted, not shown.
REPEAT_WINDOW = 10.0
_NUMBERS = re.compile(r"\d+")


class FoldRepeats(logging.Filter):
    """Shows a line once per :data:`REPEAT_WINDOW` seconds; the next one shown says how many were folded.

    Lines are the same when their logger, level and message are, numbers aside.
    """

    def __init__(self, window: float = REPEAT_WINDOW) -> None:
        super().__init__()
        self.window = window
        self._lock = threading.Lock()
        #: Per line: when it was last shown, and its repeats since.
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, _NUMBERS.sub("#", record.getMessage()))
        now = time.monotonic()
        with self._lock:
            shown, folded = self._seen.get(key, (-self.window, 0))
            if now - shown < self.window:
                self._seen[key] = (shown, folded + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # a stream of lines that never repeat: start over
                self._seen = {key: (now, 0)}
        if folded:
            record.msg, record.args = f"{record.getMessage()} (and {folded} more like it in the last {now - shown:.0f} s)", None
        return True


class _RetriedFailures(logging.Filter):
    """librdkafka's FAIL lines (connections it retries by itself) are warnings, not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.args and record.args[0] == "FAIL":
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(*, verbose: bool, json: bool, console: Console) -> None:
    """Log to stderr: JSON lines, or text through ``console`` when it is a terminal (so the live progress line and the logs do not garble each other), else plain text lines."""
    handler: logging.Handler
    if json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
    elif console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(FoldRepeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


KAFKA_LOG.addFilter(_RetriedFailures())
