"""The Schema Registry the framed formats read writer schemas from: fetched by id once, kept for the process.

The registry is any with Confluent's REST API (Confluent's, Karapace, Redpanda's,
Apicurio's compatible mode), reached by confluent-kafka's ``SchemaRegistryClient`` with
its own configuration names (``url``, ``basic.auth.user.info``,
``bearer.auth.credentials.source``, ``ssl.*``…). A schema id is immutable in a registry,
so a schema once fetched is never asked for again; an id first met mid-stream (a new
schema version) is fetched then, without a restart.

A registry that does not answer, or answers 5xx, is waited for (on the loader's live line,
at ``/healthz`` and in the log: :mod:`starload.waiting`) until it answers: nothing is
rejected for it. An id the registry does not hold (404) is the message's problem, not the
registry's: its messages are rejects.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import random
import threading
import urllib.parse
from collections.abc import Mapping

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from starload.exceptions import StarloadError
from starload.waiting import Waits

log = logging.getLogger(__name__)

#: The environment variable giving the registry's URL (the loader's ``--schema-registry``).
URL_ENV = "STARLOAD_SCHEMA_REGISTRY_URL"
#: The environment variable giving ``basic.auth.user.info`` (``USER:PASSWORD``), kept out of the command line.
USER_INFO_ENV = "STARLOAD_SCHEMA_REGISTRY_USER_INFO"
#: Seconds between two attempts at most while the registry does not answer.
MAX_BACKOFF = 10.0
#: Configuration keys whose values are secrets: never shown.
SECRET_KEYS = ("basic.auth.user.info", "bearer.auth.token", "bearer.auth.client.secret", "ssl.key.password")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The errors of the client's HTTP library that mean "no answer" (confluent-kafka uses httpx, or its fork httpx2)."""
    found: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(name).TransportError)
    return tuple(found)


#: What a request that got no answer raises.
NO_ANSWER = _transport_errors()


class RegistryUnreachable(Exception):
    """The registry did not answer, or answered with a server error (a passing state: the caller waits)."""


def registry_settings(url: str | None, options: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The client settings of the registry at ``url`` (else :data:`URL_ENV`), with ``options`` (confluent-kafka's names) and the
    user and password of :data:`USER_INFO_ENV` when set; None when no URL is given either way."""
    environ = os.environ if environ is None else environ
    url = url or environ.get(URL_ENV)
    if not url:
        return None
    settings = {"url": url}
    if environ.get(USER_INFO_ENV):
        settings["basic.auth.user.info"] = environ[USER_INFO_ENV]
    return settings | dict(options or {})


def without_url_secrets(config: Mapping[str, str]) -> dict[str, str]:
    """``config`` with a user and password in its URL moved to ``basic.auth.user.info`` (where the HTTP library's log lines never show them)."""
    parts = urllib.parse.urlsplit(str(config["url"]))
    if parts.password is None:
        return dict(config)
    user_info = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password)}"
    return {"basic.auth.user.info": user_info, **config, "url": shown_url(str(config["url"]))}


def shown_url(url: str) -> str:
    """``url`` without the user and password it may carry (``http://user:pw@host`` shows as ``http://host``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class SchemaRegistry:
    """Writer schemas by id, from the registry ``config`` (confluent-kafka's ``SchemaRegistryClient`` settings, ``url`` required).

    Thread-safe: the loader's mappers share one. ``waits``: where a wait for the registry
    is shown (the sink's, so the loader's live line and ``/healthz`` show it).
    """

    def __init__(self, config: Mapping[str, str], *, waits: Waits | None = None) -> None:
        if not config.get("url"):
            msg = "a Schema Registry needs a url"
            raise ValueError(msg)
        # The client's own retries are silent; this class waits visibly instead.
        self._client = SchemaRegistryClient({**without_url_secrets(config), "max.retries": 0})
        self.url = shown_url(str(config["url"]).split(",")[0])
        self.waits = waits or Waits()
        self._schemas: dict[tuple[int, bool], Schema | None] = {}
        self._guard = threading.Lock()

    def check(self) -> None:
        """Ask the registry once for its subjects; :class:`RegistryUnreachable` when it does not answer (the loader's start-up)."""
        try:
            self._client.get_subjects()
        except NO_ANSWER as exc:
            raise RegistryUnreachable(f"the Schema Registry at {self.url} did not answer: {_reason(exc)}") from None
        except SchemaRegistryError as exc:
            raise RegistryUnreachable(
                f"the Schema Registry at {self.url} answered {exc.http_status_code}: {exc.error_message}"
            ) from None

    def schema(self, schema_id: int, *, serialized: bool = False) -> Schema | None:
        """The writer schema of ``schema_id`` (None: the registry holds no such id); waits while the registry does not answer.

        ``serialized``: a Protobuf schema as its base64 ``FileDescriptorProto`` (the registry's ``format=serialized``).
        """
        key = (schema_id, serialized)
        with self._guard:
            if key in self._schemas:
                return self._schemas[key]
        found = self._fetch(schema_id, "serialized" if serialized else None)
        with self._guard:
            self._schemas[key] = found
        return found

    def _fetch(self, schema_id: int, fmt: str | None) -> Schema | None:
        with self.waits.on("") as wait:
            for attempt in itertools.count(1):
                try:
                    return self._client.get_schema(schema_id, fmt=fmt)
                except SchemaRegistryError as exc:
                    if exc.http_status_code == 404:
                        return None
                    if exc.http_status_code < 500:  # refused (401, 403…): waiting would not help
                        msg = f"the Schema Registry at {self.url} refused schema id {schema_id}: {exc.http_status_code} {exc.error_message}; check its credentials (--registry-option, {USER_INFO_ENV})"
                        raise StarloadError(msg) from None
                    reason = f"answered {exc.http_status_code}: {exc.error_message}"
                except NO_ANSWER as exc:
                    reason = f"did not answer: {_reason(exc)}"
                wait.what = f"the Schema Registry at {self.url} for schema id {schema_id} ({attempt} failed attempts; last: {reason})"
                log.debug("Schema Registry: %s", wait.what)
                self.waits.remind()
                if self.waits.stopping.wait(min(MAX_BACKOFF, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)):
                    raise self.waits.stopped(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
