"""Every error starload raises on purpose derives from :class:`StarloadError`."""

from __future__ import annotations

from typing import Any


class StarloadError(Exception):
    """Base class of starload's own errors."""


class SpecError(StarloadError, ValueError):
    """A star schema spec is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        msg = "invalid star schema spec:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class SpecFileError(SpecError):
    """A spec file (or the data of :meth:`StarSchema.from_dict`) is invalid: one line per problem, each with its line and path.

    With a single problem the whole message is one line.
    """

    def __init__(self, file: str | None, problems: list[str]) -> None:
        self.file = file
        self.problems = list(problems)
        what = f"{file or 'the spec'} is not a valid star spec"
        if len(self.problems) == 1:  # one problem, one line
            msg = f"{what}: {self.problems[0]}"
        else:
            msg = f"{what} ({len(self.problems)} problems):\n" + "\n".join(f"  {p}" for p in self.problems)
        StarloadError.__init__(self, msg)


class PluginError(StarloadError):
    """A plugin is broken or two plugins claim the same name."""


class BrokerNotFoundError(StarloadError):
    """No Tansu broker binary could be found for the local broker."""


class SinkError(StarloadError):
    """A sink failed; nothing of the batch in hand was committed."""


class TransientSinkError(SinkError):
    """A failure worth retrying (network, throttling, lock timeout): the batch is retried whole."""


class TerminalSinkError(SinkError):
    """A failure retrying cannot fix (authentication, missing objects, bad SQL): the loader stops."""


class OffsetsMovedError(SinkError):
    """The offsets stored in the warehouse are not where this loader left them: another loader wrote them.

    Raised by a fenced :meth:`~starload.sinks.base.Sink.write` (nothing of the batch was
    committed). The engine drops the batches in flight and resumes every partition from
    the stored offsets; it is neither retried as it is nor fatal.
    """


#: What to do when some difference cannot be migrated.
REFUSED_ADVICE = (
    "change the spec back; or give the star a new name and new table names; or rebuild it from its topics: "
    "`starload rebuild` with the same --spec (or --schema) and sink options shows what it drops, and does it with --execute"
)
#: What to do when every difference is additive.
MIGRATE_ADVICE = (
    "every difference is additive: `starload migrate` with the same --spec (or --schema) and sink options "
    "shows the DDL that applies them, and runs it with --execute"
)


class SpecDriftError(TerminalSinkError):
    """The warehouse holds the star otherwise than the spec says; nothing was consumed or written.

    ``differences``: one :class:`~starload.drift.Difference` each (see :mod:`starload.drift`).
    """

    def __init__(self, star: str, sink: str, differences: list[Any]) -> None:
        self.star, self.differences = star, list(differences)
        refused = [d for d in self.differences if d.change is None]
        count = len(self.differences)
        lines = [
            f"{sink} holds star {star!r} otherwise than the spec says ({count} difference{'s' * (count != 1)}); nothing was consumed or written:",
            *(f"  {d}{'' if d.change else ' (cannot be migrated)'}" for d in self.differences),
            f"{len(refused)} cannot be migrated: {REFUSED_ADVICE}" if refused else MIGRATE_ADVICE,
        ]
        super().__init__("\n".join(lines))


class RejectGuardError(StarloadError):
    """A batch was (nearly) all rejects: a misconfigured loader, not bad data. Nothing of it was written."""


class StartupError(StarloadError):
    """The broker or the topic was not there within the start-up timeout."""


class ConsumerGroupError(StartupError):
    """The consumer group gave the loader no assignment, not even an empty one, for too long (see ``StarLoader.run``)."""


class StoredOffsetsError(StarloadError):
    """The offsets stored in the warehouse do not belong to the topic as it is now: resuming would skip messages.

    The topic was re-created (another topic ID), or the broker says a stored offset is
    out of range. Nothing was loaded from those partitions; see :mod:`starload.offsets`.
    """
