"""The plugin manager: entry-point plugins and built-ins, registered through the same hooks."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import pluggy

from starload import hookspecs
from starload.exceptions import PluginError
from starload.generators.base import Generator
from starload.sinks.base import SinkType

ENTRY_POINT_GROUP = "starload"
#: Built-in plugins: modules with hook implementations, registered like any third party.
BUILTIN_PLUGINS = ("starload.sinks.duckdb", "starload.sinks.snowflake", "starload.generators.orders")

T = TypeVar("T", SinkType, Generator)


@attrs.frozen
class Registered:
    """One thing a plugin registered, and where it came from."""

    kind: str
    name: str
    plugin: str
    distribution: str
    version: str
    description: str


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (entry points loaded once)."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for module in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    return pm


def _collect(hook_name: str, kind: str, pm: pluggy.PluginManager | None = None) -> dict[str, tuple[T, Registered]]:
    pm = pm or plugin_manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    found: dict[str, tuple[T, Registered]] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        dist = dists.get(id(impl.plugin))
        origin = (dist.project_name, dist.version) if dist else ("starload", _own_version())

        def register(item: T, _impl: Any = impl, _origin: tuple[str, str] = origin) -> None:
            if item.name in found:
                first = found[item.name][1]
                msg = (
                    f"{kind} {item.name!r} is registered twice: by plugin {first.plugin!r} "
                    f"({first.distribution}) and by plugin {_impl.plugin_name!r} ({_origin[0]})"
                )
                raise PluginError(msg)
            found[item.name] = (item, Registered(kind, item.name, _impl.plugin_name, *_origin, item.description))

        kwargs: dict[str, Callable[[T], None]] = {"register": register}
        impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
    return found


def sinks(pm: pluggy.PluginManager | None = None) -> dict[str, SinkType]:
    """Every registered sink type by name."""
    return {name: item for name, (item, _) in _collect("register_sinks", "sink", pm).items()}


def generators(pm: pluggy.PluginManager | None = None) -> dict[str, Generator]:
    """Every registered generator by name."""
    return {name: item for name, (item, _) in _collect("register_generators", "generator", pm).items()}


def registrations(pm: pluggy.PluginManager | None = None) -> list[Registered]:
    """What every plugin registered, for ``starload plugins``."""
    found = [r for _, r in _collect("register_sinks", "sink", pm).values()]
    return found + [r for _, r in _collect("register_generators", "generator", pm).values()]


def get_sink_type(name: str) -> SinkType:
    """The sink type called ``name``, or a :class:`PluginError` listing the known ones."""
    return _get(sinks(), name, "sink")


def get_generator(name: str) -> Generator:
    """The generator called ``name``, or a :class:`PluginError` listing the known ones."""
    return _get(generators(), name, "generator")


def _get(items: dict[str, T], name: str, kind: str) -> T:
    try:
        return items[name]
    except KeyError:
        msg = f"unknown {kind} {name!r}; registered: {', '.join(sorted(items)) or 'none'}"
        raise PluginError(msg) from None


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("starload")
    except PackageNotFoundError:
        return "unknown"
