"""Prometheus metrics of a loader, and the HTTP server for them and its health check.

Every :class:`~starload.engine.StarLoader` keeps a :class:`LoaderMetrics` (its own
registry, so several loaders in one process do not mix). :class:`MetricsServer` serves
it at ``/metrics`` (Prometheus text format) and the loader's health at ``/healthz``
(``starload load --metrics-port P``). docs/metrics.md lists every metric.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from starload.sinks.base import StagedBatch, WriteResult

log = logging.getLogger(__name__)

#: Reject reasons the mapper gives for a whole message, by the class they are counted under.
_MESSAGE_REASONS = {
    "empty message": "empty",
    "not UTF-8 text": "not_utf8",
    "not valid JSON": "invalid_json",
    "not a JSON object": "not_an_object",
}


#: Every class a reject is counted under (see :func:`reason_class`): each is exported from the start, at 0.
REASON_CLASSES = (*_MESSAGE_REASONS.values(), "missing_field", "out_of_range", "conflict", "invalid_value")


def reason_class(reason: str) -> str:
    """The label a reject is counted under: the class of its first reason.

    ``empty``, ``not_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field``,
    ``out_of_range`` (a measure), ``conflict``, or ``invalid_value`` (a field of the
    wrong type, or failing a check).
    """
    first = reason.split("; ", 1)[0]
    if first in _MESSAGE_REASONS:
        return _MESSAGE_REASONS[first]
    if first.startswith("conflict:"):
        return "conflict"
    if first.endswith(": missing"):
        return "missing_field"
    if ": out of range for " in first:
        return "out_of_range"
    return "invalid_value"


#: Seconds: from a few milliseconds (an embedded DuckDB batch) to minutes (a warehouse under load).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ROWS = (1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 125_000, 250_000, 500_000)


class _WithoutCreated:
    """A collector of ``registry``'s metrics without their ``*_created`` samples.

    They are on by default in prometheus_client and only switched off process-wide
    (``disable_created_metrics``); a loader leaves the process's own metrics alone.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class LoaderMetrics:
    """The metrics one loader updates (thread-safe: the writer and the main thread both do).

    ``registry`` is what to serve: every series a dashboard may alert on exists from the
    start (each topic of ``topics``, and each reject class of it, at 0; Prometheus's
    instrumentation guidance, "Avoid missing metrics"), and none of the ``*_created``
    series. The per-partition lag appears once a partition's lag is known.
    """

    def __init__(self, topics: Iterable[str]) -> None:
        r = CollectorRegistry()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_WithoutCreated(r))
        self.consumed = Counter("starload_messages_consumed_total", "Messages in committed batches", ["topic"], registry=r)
        self.facts = Counter("starload_facts_loaded_total", "Fact rows inserted", registry=r)
        self.facts_updated = Counter("starload_facts_updated_total", "Fact rows updated by a later event (facts with changes: latest)", registry=r)
        self.duplicates = Counter("starload_duplicates_total", "Messages whose grain value was loaded already", registry=r)
        self.records = Counter("starload_records_total", "Valid messages of dimension topics (records of members)", ["topic"], registry=r)
        self.tombstones = Counter("starload_tombstones_total", "Tombstones of change-event topics, acknowledged", ["topic"], registry=r)
        self.rejects = Counter(
            "starload_rejects_total", "Rejected messages, by the class of their first reason", ["topic", "reason"], registry=r
        )
        for topic in topics:
            for counter in (self.consumed, self.records, self.tombstones):
                counter.labels(topic)
            for reason in REASON_CLASSES:
                self.rejects.labels(topic, reason)
        self.conflicts = Counter("starload_conflicts_total", "Rejects repeating a loaded grain value with other content", registry=r)
        self.lag = Gauge("starload_consumer_lag", "Messages behind the partition's end (as last fetched)", ["topic", "partition"], registry=r)
        self.lock_wait_seconds = Histogram(
            "starload_lock_wait_seconds", "Seconds one batch's write waited for the star's lock", buckets=_SECONDS, registry=r
        )
        self.lock_held_seconds = Histogram(
            "starload_lock_held_seconds", "Seconds one batch's write held the star's lock, to the end of COMMIT", buckets=_SECONDS, registry=r
        )
        self.write_seconds = Histogram("starload_batch_write_seconds", "Seconds to write and commit one batch", buckets=_SECONDS, registry=r)
        self.map_seconds = Histogram("starload_batch_map_seconds", "Seconds to decode and type one batch", buckets=_SECONDS, registry=r)
        self.batch_rows = Histogram("starload_batch_rows", "Messages per batch", buckets=_ROWS, registry=r)
        self.retries = Counter("starload_sink_retries_total", "Batch writes retried after a transient sink error", registry=r)
        self.last_commit = Gauge("starload_last_commit_timestamp_seconds", "Unix time of the last batch committed to the sink", registry=r)
        self.assigned = Gauge("starload_assigned_partitions", "Partitions assigned to this loader", registry=r)

    def committed(self, batch: StagedBatch, result: WriteResult) -> None:
        """Count one committed batch (``result``: what the sink wrote of it)."""
        for topic, consumed in batch.consumed.items():
            self.consumed.labels(topic).inc(consumed)
        for topic, records in batch.records_by_topic.items():
            self.records.labels(topic).inc(records)
        for topic, tombstones in batch.tombstones_by_topic.items():
            self.tombstones.labels(topic).inc(tombstones)
        self.facts.inc(result.facts_inserted)
        self.facts_updated.inc(result.facts_updated)
        self.duplicates.inc(result.duplicates)
        self.conflicts.inc(result.conflicts)
        self.lock_wait_seconds.observe(result.lock_waited)
        self.lock_held_seconds.observe(result.lock_held)
        rejects = batch.rejects
        for topic, reason in zip(rejects.column("KAFKA_TOPIC").to_pylist(), rejects.column("REASON").to_pylist(), strict=True):
            self.rejects.labels(topic, reason_class(reason)).inc()
        self.last_commit.set_to_current_time()

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Set the lag of the assigned (topic, partition)s; forget the others."""
        self.lag.clear()
        for (topic, partition), behind in lag.items():
            self.lag.labels(topic, str(partition)).set(behind)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics server: " + format, *args)


class MetricsServer:
    """Serves ``/metrics`` from ``registry`` and ``/healthz`` from ``health()`` on ``host:port``, in a daemon thread.

    ``health()`` returns (healthy, a dict describing the state): ``/healthz`` answers
    200 or 503 with that dict as JSON. Port 0 picks a free port (see :attr:`port`).
    """

    def __init__(self, registry: CollectorRegistry, health: Callable[[], tuple[bool, dict[str, Any]]], host: str, port: int) -> None:
        self._metrics = make_wsgi_app(registry)
        self._health = health
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="starload-metrics", daemon=True)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            healthy, state = self._health()
            body = json.dumps(state).encode()
            start_response("200 OK" if healthy else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

