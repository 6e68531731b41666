"""Whether a loader is alive and making progress: what ``/healthz`` says (:meth:`StarLoader.health <starload.engine.StarLoader.health>`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import attrs

from starload.stats import LoadStats
from starload.waiting import Wait

#: Seconds without progress after which a loader is reported unhealthy.
DEFAULT_HEALTH_TIMEOUT = 120.0


@attrs.define
class Health:
    """The marks a loader's health is judged by; its consume loop and pipeline set them.

    Unhealthy when the loader is not running, when its consume loop has not turned for
    ``timeout`` seconds, when it has had no partition assignment for that long (an empty
    assignment counts: the group answered, the loader is a standby), or when batches have
    waited that long for the sink without a commit.
    """

    timeout: float = DEFAULT_HEALTH_TIMEOUT
    #: When the consume loop last turned (None: not running).
    loop_at: float | None = None
    #: Since when batches have waited for the sink without a commit (None: none waits).
    work_since: float | None = None

    def judge(self, stats: LoadStats, *, group: str, in_flight: int, waiting: Wait | None) -> tuple[bool, dict[str, Any]]:
        """Whether the loader is healthy, and its state: what it waits for and since when (``waiting``: the sink's current wait)."""
        now, bound = time.monotonic(), self.timeout
        problem = None
        if self.loop_at is None:
            problem = "not running"
        elif now - self.loop_at > bound:
            problem = f"the consume loop has not turned for {now - self.loop_at:.0f} s"
        elif (since := stats.unassigned_since) is not None and now - since > bound:
            problem = f"no partition assignment from group {group!r} for {now - since:.0f} s"
        elif self.work_since is not None and now - self.work_since > bound:
            problem = f"{in_flight} batches have waited {now - self.work_since:.0f} s for the sink without a commit"
        if problem is not None and waiting is not None:
            problem += f"; waiting for {waiting.describe()}"
        last = stats.last_commit
        state = {
            "status": "unhealthy" if problem else "ok",
            "problem": problem,
            "assigned_partitions": stats.partitions,
            "batches_in_flight": in_flight,
            "seconds_since_last_commit": None if last is None else round(now - last, 3),
            "waiting_for": None if waiting is None else waiting.what,
            "waiting_since": None if waiting is None else datetime.fromtimestamp(waiting.since, UTC).isoformat(),
        }
        return problem is None, state
