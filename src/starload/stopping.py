"""SIGTERM and SIGINT for the ``starload`` program, from its first instant: a stop asked early is kept, not lost.

The program installs :func:`catch` before it imports anything heavy (the engine,
confluent-kafka, pyarrow, DuckDB take about half a second). A signal that arrives
before there is a loader to stop is remembered; :func:`stop_with` hands it to the
loader once it exists (``starload load`` then stops cleanly, exit 0, having loaded
nothing), and :func:`default` gives other commands the default behaviour back (a
signal already received then acts at once). Only the main thread can install handlers.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []
_stop: Callable[[], None] | None = None


def _handle(signum: int, _frame: object) -> None:
    _received.append(signum)
    if _stop is not None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        _stop()


def catch() -> None:
    """Remember SIGTERM and SIGINT from now on (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handle)


def stop_with(stop: Callable[[], None]) -> bool:
    """Call ``stop`` on SIGTERM or SIGINT from now on; True if one came already (``stop`` is then called at once)."""
    global _stop
    if threading.current_thread() is not threading.main_thread():
        return False
    _stop = stop
    catch()
    if _received:
        log.info("received %s before the load began: stopping, nothing loaded", signal.Signals(_received[0]).name)
        stop()
    return bool(_received)


def default() -> None:
    """Give SIGTERM and SIGINT their default behaviour back; one received meanwhile acts now."""
    global _stop
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not _handle:
        return
    _stop = None
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in _received:
        signal.raise_signal(signum)
    _received.clear()
