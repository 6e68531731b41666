"""The reject guard: a loader whose messages are (nearly) all rejects is misconfigured, not fed bad data, and stops.

Each topic is judged on its own (a topic of rejects is not hidden by a busy healthy
one), over its last GUARD_WINDOW messages or more. The guard also tells, once per
topic, when most of a topic's messages were conflicts: its facts likely change.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import NoReturn

import pyarrow.compute as pc

from starload.exceptions import RejectGuardError
from starload.sinks.base import StagedBatch
from starload.spec import StarSchema

#: More than this share of rejects among the last
#: GUARD_WINDOW messages or more stops the loader.
DEFAULT_MAX_REJECT_RATIO = 0.9
#: Messages the reject guard judges at least (fewer only when the topic holds fewer). At
#: 100, a loader with the wrong spec or topic (every message rejected) is told from bad
#: data with a wide margin: with one bad message in ten, 91 or more rejects among 100
#: happen with a probability below 1e-80; and a new star waits for no more than 100
#: messages before its first write.
GUARD_WINDOW = 100


class RejectGuard:
    """Judges each batch before it is written or dead-lettered (:meth:`check`), from the batches written before it (:meth:`remember`)."""

    def __init__(self, max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO) -> None:
        self.max_reject_ratio = max_reject_ratio
        #: Per topic, (consumed, rejects) of the last batches written, just enough to cover GUARD_WINDOW of its messages.
        self._recent: dict[str, deque[tuple[int, int]]] = {}
        #: Topics :meth:`advice_on_conflicts` advised on.
        self._advised: set[str] = set()

    def check(self, batch: StagedBatch, *, alone: bool, created: bool) -> None:
        """Raise :class:`RejectGuardError` when the last GUARD_WINDOW messages of a topic are nearly all rejects.

        A topic's window is its messages in ``batch`` and in as many batches written
        before it as it takes to cover GUARD_WINDOW of them; ``alone`` (a new star's first
        batch): its messages in this batch only, judged whatever their number.
        ``created``: whether the star's tables were made already (the error says so).
        """
        if self.max_reject_ratio >= 1 or not batch.rejects.num_rows:
            return  # a batch without rejects is never refused, whatever came before it
        for topic, rejects in batch.rejects_by_topic().items():
            if not rejects:
                continue
            consumed, batches = batch.consumed[topic], 1
            for earlier in reversed(self._recent.get(topic, ()) if not alone else ()):
                if consumed >= GUARD_WINDOW:
                    break
                consumed, rejects, batches = consumed + earlier[0], rejects + earlier[1], batches + 1
            if (consumed >= GUARD_WINDOW or alone) and rejects > self.max_reject_ratio * consumed:
                self._refuse(batch, topic, consumed, rejects, batches, created=created)

    def _refuse(self, batch: StagedBatch, topic: str, consumed: int, rejects: int, batches: int, *, created: bool) -> NoReturn:
        """Raise the guard's error: ``rejects`` of ``topic``'s last ``consumed`` messages, over ``batches`` batches."""
        reasons = batch.rejects.filter(pc.equal(batch.rejects.column("KAFKA_TOPIC"), topic)).column("REASON")
        reason, times = Counter(reasons.to_pylist()).most_common(1)[0]
        judged = "of a batch" if batches == 1 else f"of the last {batches} batches"
        nothing = "" if created else ", and nothing was created in the warehouse"
        msg = (
            f"{rejects:,} of the {consumed:,} messages {judged} from {topic!r} are rejects "
            f"({rejects / consumed:.0%}, over --max-reject-ratio {self.max_reject_ratio:g}); most common reason "
            f"({times:,}×): {reason!r}. A misconfigured loader (wrong --topic or --spec?) rather than "
            f"bad data: nothing of the last batch was written or dead-lettered, its offsets are unchanged{nothing}. "
            "Fix the configuration, or raise --max-reject-ratio (1 turns the guard off)"
        )
        raise RejectGuardError(msg)

    def remember(self, batch: StagedBatch) -> None:
        """Keep a written batch's counts per topic, and only as many batches as cover GUARD_WINDOW messages."""
        for topic, rejects in batch.rejects_by_topic().items():
            recent = self._recent.setdefault(topic, deque())
            recent.append((batch.consumed.get(topic, 0), rejects))
            while len(recent) > 1 and sum(c for c, _ in recent) - recent[0][0] >= GUARD_WINDOW:
                recent.popleft()

    def advice_on_conflicts(self, schema: StarSchema, topic: str, conflicts: int, consumed: int) -> str | None:
        """Once per topic, when most of its ``consumed`` messages so far (GUARD_WINDOW or more) were ``conflicts``: the advice.

        An advice, not a stop: each conflict is kept whole among the rejects (and the
        dead-letter topic), so nothing is lost, and a loader with healthy topics keeps
        loading them; the advice names the option that loads such events.
        """
        if topic in self._advised or consumed < GUARD_WINDOW or 2 * conflicts <= consumed:
            return None
        self._advised.add(topic)
        facts = ", ".join(f.table for f in schema.feed(topic).facts if not f.changing)
        return (
            f"{conflicts:,} of the {consumed:,} messages from {topic!r} so far were conflicts (a grain value loaded before, "
            f"with other content: rejected, the first version kept); if its events change their rows, declare "
            f"changes: latest on {facts} (docs/changing-facts.md)"
        )
