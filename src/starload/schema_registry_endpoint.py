"""The local Schema Registry of the tests: Confluent's REST API and its compatibility rule for Avro, in memory.

``python -m starload.schema_registry_endpoint --port P`` serves, on 127.0.0.1, the calls
``confluent_kafka.schema_registry.SchemaRegistryClient`` and its serializers make, as the
Schema Registry API reference documents them
(https://docs.confluent.io/platform/current/schema-registry/develop/api.html):

* ``POST /subjects/{subject}/versions`` registers a schema (``schema``, ``schemaType``:
  ``AVRO`` by default, ``JSON`` or ``PROTOBUF``; ``references`` are refused here). The
  same schema gets the same id in every subject, and registering a subject's schema
  again returns its id and version unchanged. A new version must be compatible with
  the subject's configured level (``GET /config/{subject}``, else ``GET /config``,
  ``BACKWARD`` by default), or the answer is 409 with error code 409; a schema that does
  not parse is 422 with error code 42201.
* ``GET /schemas/ids/{id}`` (40403 when unknown), ``GET /schemas/ids/{id}/versions``,
  ``GET /subjects``, ``GET /subjects/{subject}/versions`` (40401),
  ``GET /subjects/{subject}/versions/{version}`` and ``…/latest`` (40402),
  ``POST /subjects/{subject}`` (look a schema up: 40403 when not registered there),
  ``GET``/``PUT /config`` and ``/config/{subject}``,
  ``POST /compatibility/subjects/{subject}/versions/{version}`` (``{"is_compatible": …}``).

**Compatibility** is checked for Avro by the Avro specification's schema resolution
(https://avro.apache.org/docs/1.11.1/specification/#schema-resolution), the rule the
reference names: ``BACKWARD`` means the new schema (the reader) can read data written
with the latest one; ``FORWARD`` the reverse; ``FULL`` both; ``*_TRANSITIVE`` against
every version; ``NONE`` nothing. A reader's record field must be in the writer's record
or have a default; types must match, or be one of the promotions (int to long, float or
double; long to float or double; float to double; string and bytes either way); a
writer's union must resolve each branch, a reader's union some branch; a reader's enum
must hold the writer's symbols unless it has a default; fixed sizes and named types'
names must match. JSON Schema and Protobuf schemas are stored and served, not checked
(a real registry checks them; the loader does not rely on it).

For tests of outages: ``POST /starload/faults`` with ``{"status": 500, "times": N}``
makes the next N API calls answer that status (error code 50001, as the registry's
backend store failing does); ``POST /starload/reset`` forgets faults and counts;
``POST /starload/stats`` returns ``{"requests": N}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import attrs

#: The compatibility levels the registry documents, and the default.
LEVELS = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE")
DEFAULT_LEVEL = "BACKWARD"
SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
#: Writer types each Avro reader type may read (the specification's promotions), besides its own.
PROMOTIONS = {"long": {"int"}, "float": {"int", "long"}, "double": {"int", "long", "float"}, "string": {"bytes"}, "bytes": {"string"}}


class RegistryError(Exception):
    """An API error: its HTTP status, the registry's error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@attrs.define
class Registry:
    """The registry's state: schemas by id, each subject's versions (schema ids), compatibility levels."""

    schemas: list[tuple[str, str]] = attrs.field(factory=list)  # (schema type, canonical text); id = index + 1
    subjects: dict[str, list[int]] = attrs.field(factory=dict)
    levels: dict[str, str] = attrs.field(factory=dict)
    level: str = DEFAULT_LEVEL

    def register(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        kind, text = self._parsed(body)
        versions = self.subjects.get(subject, [])
        found = self._id_of(kind, text)
        if found is not None and found in versions:
            return self._version(subject, versions.index(found) + 1)
        level = self.levels.get(subject, self.level)
        earlier = versions if level.endswith("_TRANSITIVE") else versions[-1:]
        for schema_id in earlier:
            if not self._compatible(level, self.schemas[schema_id - 1], (kind, text)):
                msg = f"Schema being registered is incompatible with an earlier schema for subject {subject!r} ({level})"
                raise RegistryError(409, 409, msg)
        if found is None:
            self.schemas.append((kind, text))
            found = len(self.schemas)
        self.subjects.setdefault(subject, []).append(found)
        return self._version(subject, len(self.subjects[subject]))

    def schema(self, schema_id: int) -> dict[str, Any]:
        if not 0 < schema_id <= len(self.schemas):
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        kind, text = self.schemas[schema_id - 1]
        return _typed({"schema": text}, kind)

    def version(self, subject: str, version: str) -> dict[str, Any]:
        versions = self._versions(subject)
        number = len(versions) if version in ("latest", "-1") else int(version) if version.isdigit() else 0
        if not 0 < number <= len(versions):
            raise RegistryError(404, 40402, f"Version {version} not found.")
        return self._version(subject, number)

    def lookup(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        kind, text = self._parsed(body)
        versions = self._versions(subject)
        found = self._id_of(kind, text)
        if found is None or found not in versions:
            raise RegistryError(404, 40403, "Schema not found")
        return self._version(subject, versions.index(found) + 1)

    def compatible(self, subject: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        earlier = self.version(subject, version)["id"]
        return {"is_compatible": self._compatible(self.levels.get(subject, self.level), self.schemas[earlier - 1], self._parsed(body))}

    def set_level(self, subject: str | None, body: dict[str, Any]) -> dict[str, Any]:
        level = str(body.get("compatibility", "")).upper()
        if level not in LEVELS:
            raise RegistryError(422, 42203, f"Invalid compatibility level {level!r}; valid: {', '.join(LEVELS)}")
        if subject is None:
            self.level = level
        else:
            self.levels[subject] = level
        return {"compatibility": level}

    def get_level(self, subject: str | None) -> dict[str, Any]:
        if subject is not None and subject not in self.levels:
            raise RegistryError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured")
        return {"compatibilityLevel": self.levels[subject] if subject is not None else self.level}

    def _versions(self, subject: str) -> list[int]:
        if subject not in self.subjects:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def _version(self, subject: str, number: int) -> dict[str, Any]:
        schema_id = self.subjects[subject][number - 1]
        kind, text = self.schemas[schema_id - 1]
        return _typed({"subject": subject, "version": number, "id": schema_id, "schema": text}, kind)

    def _id_of(self, kind: str, text: str) -> int | None:
        return next((n + 1 for n, s in enumerate(self.schemas) if s == (kind, text)), None)

    @staticmethod
    def _parsed(body: dict[str, Any]) -> tuple[str, str]:
        """(schema type, canonical text) of a request's schema; 42201 when it is not one."""
        kind = str(body.get("schemaType") or "AVRO").upper()
        if kind not in SCHEMA_TYPES:
            raise RegistryError(422, 42201, f"Invalid schema type {kind!r}")
        if body.get("references"):
            raise RegistryError(422, 42201, "schema references are not supported by this local registry")
        text = body.get("schema")
        if not isinstance(text, str):
            raise RegistryError(422, 42201, "Invalid schema: 'schema' must be a string")
        if kind == "PROTOBUF":
            return kind, text
        import fastavro.schema

        try:
            parsed = json.loads(text)
            if kind == "AVRO":
                fastavro.schema.parse_schema(parsed)
        except (ValueError, TypeError, KeyError, AttributeError, fastavro.schema.SchemaParseException, fastavro.schema.UnknownType) as exc:
            raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None
        return kind, json.dumps(parsed, separators=(",", ":"), sort_keys=True)

    @staticmethod
    def _compatible(level: str, old: tuple[str, str], new: tuple[str, str]) -> bool:
        if level == "NONE" or new[0] != "AVRO" or old[0] != "AVRO":
            return level == "NONE" or new[0] == old[0]
        reader, writer = json.loads(new[1]), json.loads(old[1])
        backward = level.startswith(("BACKWARD", "FULL"))
        forward = level.startswith(("FORWARD", "FULL"))
        return (not backward or reads(reader, writer, {}, {})) and (not forward or reads(writer, reader, {}, {}))


def _typed(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    """``payload`` with its ``schemaType`` (the registry leaves it out for Avro)."""
    return payload if kind == "AVRO" else payload | {"schemaType": kind}


def _names(schema: Any, namespace: str, named: dict[str, Any]) -> Any:
    """``schema`` with every reference to a named type replaced by its definition, collecting them in ``named`` by full name."""
    if isinstance(schema, str):
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        return named.get(full, named.get(schema, schema))
    if isinstance(schema, list):
        return [_names(s, namespace, named) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        space = schema.get("namespace", namespace)
        name = schema["name"] if "." in schema["name"] or not space else f"{space}.{schema['name']}"
        resolved = dict(schema, name=name)
        named[name] = resolved
        if kind in ("record", "error"):
            resolved["fields"] = [dict(f, type=_names(f["type"], space, named)) for f in schema.get("fields", [])]
        return resolved
    if kind == "array":
        return dict(schema, items=_names(schema["items"], namespace, named))
    if kind == "map":
        return dict(schema, values=_names(schema["values"], namespace, named))
    return _names(kind, namespace, named) if isinstance(kind, (str, list)) and kind not in PRIMITIVES else schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) else _kind(kind)
    return str(schema)


def reads(reader: Any, writer: Any, reader_named: dict[str, Any], writer_named: dict[str, Any], seen: frozenset = frozenset()) -> bool:
    """Whether data written with the Avro schema ``writer`` can be read with ``reader`` (the specification's schema resolution)."""
    reader, writer = _names(reader, "", reader_named), _names(writer, "", writer_named)
    r, w = _kind(reader), _kind(writer)
    if w == "union":
        return all(reads(reader, branch, reader_named, writer_named, seen) for branch in writer)
    if r == "union":
        return any(reads(branch, writer, reader_named, writer_named, seen) for branch in reader)
    if r in PRIMITIVES or w in PRIMITIVES:
        return r == w or w in PROMOTIONS.get(r, set())
    if r != w:
        return False
    if r in ("record", "error"):
        names = (reader["name"], writer["name"])
        if names in seen:  # a recursive type: assume what is being proven
            return True
        if reader["name"].split(".")[-1] != writer["name"].split(".")[-1] and writer["name"] not in reader.get("aliases", []):
            return False
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            source = next((written[n] for n in [field["name"], *field.get("aliases", [])] if n in written), None)
            if source is None:
                if "default" not in field:
                    return False
            elif not reads(field["type"], source["type"], reader_named, writer_named, seen | {names}):
                return False
        return True
    if r == "enum":
        return reader["name"].split(".")[-1] == writer["name"].split(".")[-1] and (
            set(writer["symbols"]) <= set(reader["symbols"]) or "default" in reader
        )
    if r == "fixed":
        return reader["name"].split(".")[-1] == writer["name"].split(".")[-1] and reader["size"] == writer["size"]
    if r == "array":
        return reads(reader["items"], writer["items"], reader_named, writer_named, seen)
    if r == "map":
        return reads(reader["values"], writer["values"], reader_named, writer_named, seen)
    return False


def app(registry: Registry | None = None) -> Any:
    """The ASGI application (Starlette) serving ``registry`` (a new, empty one by default)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state = registry or Registry()
    faults: list[int] = []  # statuses of the next calls to fail
    counts = {"requests": 0}
    media = "application/vnd.schemaregistry.v1+json"

    def api(handler: Any) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            counts["requests"] += 1
            if faults:
                status = faults.pop(0)
                return JSONResponse({"error_code": 50001, "message": "injected failure of the backend store"}, status_code=status, media_type=media)
            try:
                body = await request.json() if request.method in ("POST", "PUT") else {}
                return JSONResponse(handler(request.path_params, body if isinstance(body, dict) else {}), media_type=media)
            except RegistryError as exc:
                return JSONResponse({"error_code": exc.code, "message": exc.message}, status_code=exc.status, media_type=media)
            except ValueError:
                return JSONResponse({"error_code": 400, "message": "Unrecognized field or malformed JSON"}, status_code=400, media_type=media)

        return endpoint

    def schema_versions(p: dict[str, Any], _: dict[str, Any]) -> list[dict[str, Any]]:
        state.schema(int(p["id"]))
        return [{"subject": s, "version": n + 1} for s, ids in sorted(state.subjects.items()) for n, i in enumerate(ids) if i == int(p["id"])]

    async def control(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action == "faults":
            body = await request.json()
            faults.extend([int(body.get("status", 500))] * int(body.get("times", 1)))
        elif action == "reset":
            faults.clear()
            counts["requests"] = 0
        return JSONResponse(dict(counts))

    routes = [
        Route("/subjects", api(lambda p, b: sorted(state.subjects)), methods=["GET"]),
        Route("/subjects/{subject}/versions", api(lambda p, b: state.register(p["subject"], b)), methods=["POST"]),
        Route("/subjects/{subject}/versions", api(lambda p, b: list(range(1, len(state._versions(p["subject"])) + 1))), methods=["GET"]),
        Route("/subjects/{subject}/versions/{version}", api(lambda p, b: state.version(p["subject"], p["version"])), methods=["GET"]),
        Route("/subjects/{subject}", api(lambda p, b: state.lookup(p["subject"], b)), methods=["POST"]),
        Route("/schemas/ids/{id:int}", api(lambda p, b: state.schema(p["id"])), methods=["GET"]),
        Route("/schemas/ids/{id:int}/versions", api(schema_versions), methods=["GET"]),
        Route("/config", api(lambda p, b: state.get_level(None)), methods=["GET"]),
        Route("/config", api(lambda p, b: state.set_level(None, b)), methods=["PUT"]),
        Route("/config/{subject}", api(lambda p, b: state.get_level(p["subject"])), methods=["GET"]),
        Route("/config/{subject}", api(lambda p, b: state.set_level(p["subject"], b)), methods=["PUT"]),
        Route("/compatibility/subjects/{subject}/versions/{version}", api(lambda p, b: state.compatible(p["subject"], p["version"], b)), methods=["POST"]),
        Route("/starload/{action}", control, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    """Serve an empty registry on 127.0.0.1 until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
