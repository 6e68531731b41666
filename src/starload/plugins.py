"""The plugin manager: entry-point plugins and built-ins, registered through the same hooks.

Entry points of the ``starload`` group are loaded one at a time, so that a plugin that
cannot be imported, or whose hook raises, is set aside with a message naming it (see
:func:`problems`) instead of taking every other sink and generator down with it.
``STARLOAD_LOAD_PLUGINS`` (a comma list of entry-point or distribution names) limits
which entry-point plugins load; an empty value loads none. The built-in plugins
(:data:`BUILTIN_PLUGINS`) always load.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import traceback
from collections.abc import Callable
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any

import attrs
import pluggy

from starload import hookspecs
from starload.exceptions import PluginError
from starload.generators.base import Generator
from starload.sinks.base import SinkType

ENTRY_POINT_GROUP = "starload"
#: Environment variable: comma list of entry-point plugins to load (unset: all; empty: none).
LOAD_PLUGINS_ENV = "STARLOAD_LOAD_PLUGINS"
#: Built-in plugins: modules with hook implementations, registered like any third party.
BUILTIN_PLUGINS = ("starload.sinks.duckdb", "starload.sinks.snowflake", "starload.generators.orders", "starload.generators.shop", "starload.generators.bookshop")

log = logging.getLogger(__name__)

#: What each hook registers: hook name → (kind, the class ``register`` takes).
_KINDS: dict[str, tuple[str, type]] = {
    "register_sinks": ("sink", SinkType),
    "register_generators": ("generator", Generator),
}


@attrs.frozen
class Registered:
    """One thing a plugin registered, and where it came from.

    :func:`registrations` also lists each :class:`Problem` as a ``Registered`` of kind
    ``"error"`` whose description is the problem, so that ``starload plugins`` shows it.
    """

    kind: str
    name: str
    plugin: str
    distribution: str
    version: str
    description: str


@attrs.frozen
class Problem:
    """A plugin that could not be loaded, or whose hook failed, and why (a readable sentence)."""

    plugin: str
    distribution: str
    version: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({_label(self.distribution, self.version)}): {self.message}"


class PluginManager(pluggy.PluginManager):
    """A pluggy plugin manager that remembers where each plugin came from and what went wrong."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        #: plugin name → (distribution, version)
        self.origins: dict[str, tuple[str, str]] = {}
        #: Problems found while loading plugins (hook failures are found per call).
        self.problems: list[Problem] = []

    def register_plugin(self, plugin: object, name: str, distribution: str, dist_version: str) -> bool:
        """Register ``plugin``; on a validation error record a :class:`Problem` and return False."""
        try:
            self.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self.add_problem(Problem(name, distribution, dist_version, f"not registered: {exc}"))
            return False
        self.origins[name] = (distribution, dist_version)
        for caller in self.get_hookcallers(plugin) or []:
            if caller.spec is None:
                known = ", ".join(sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "starload_spec")))
                self.add_problem(
                    Problem(
                        name,
                        distribution,
                        dist_version,
                        f"implements unknown hook {caller.name!r} (never called; hooks: {known})",
                    )
                )
        return True

    def add_problem(self, problem: Problem) -> None:
        """Record (and log) a problem with a plugin."""
        log.warning("%s", problem)
        self.problems.append(problem)


def create_plugin_manager(*, entry_point_plugins: bool = True) -> PluginManager:
    """A new plugin manager with the built-ins and (unless told not to) the entry-point plugins."""
    pm = PluginManager()
    own = _own_version()
    for module in BUILTIN_PLUGINS:
        pm.register_plugin(importlib.import_module(module), module, "starload", own)
    if entry_point_plugins:
        _load_entry_points(pm)
    return pm


@functools.cache
def plugin_manager() -> PluginManager:
    """The process-wide plugin manager (entry points loaded once; ``plugin_manager.cache_clear()`` reloads)."""
    return create_plugin_manager()


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _load_entry_points(pm: PluginManager) -> None:
    wanted = os.environ.get(LOAD_PLUGINS_ENV)
    allowed = None if wanted is None else {_normalise(n.strip()) for n in wanted.split(",") if n.strip()}
    seen: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist, dist_version = (ep.dist.name, ep.dist.version) if ep.dist else ("unknown distribution", "")
        names = {_normalise(ep.name), _normalise(dist)}
        seen |= names
        if allowed is not None and not names & allowed:
            log.debug("plugin %r (%s) not loaded: not in %s", ep.name, dist, LOAD_PLUGINS_ENV)
            continue
        if pm.has_plugin(ep.name):
            other = _label(*pm.origins.get(ep.name, ("unknown distribution", "")))
            msg = f"not loaded: {other} already has a plugin called {ep.name!r} (entry-point names must be unique)"
            pm.add_problem(Problem(ep.name, dist, dist_version, msg))
            continue
        plugin = _import(pm, ep, dist, dist_version)
        if plugin is not None:
            pm.register_plugin(plugin, ep.name, dist, dist_version)
    for name in sorted((allowed or set()) - seen):
        pm.add_problem(
            Problem(name, "not installed", "", f"named in {LOAD_PLUGINS_ENV} but no installed plugin has that name")
        )


def _import(pm: PluginManager, ep: EntryPoint, dist: str, dist_version: str) -> object | None:
    try:
        return ep.load()
    except Exception as exc:
        log.debug("plugin %r failed to import", ep.name, exc_info=True)
        pm.add_problem(Problem(ep.name, dist, dist_version, f"could not be imported ({ep.value}): {_describe(exc)}"))
        return None


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line)``: the error and the innermost frame of real code that raised it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _origin(pm: pluggy.PluginManager, plugin_name: str, plugin: object) -> tuple[str, str]:
    origins = getattr(pm, "origins", {})
    if plugin_name in origins:
        return origins[plugin_name]
    for registered, dist in pm.list_plugin_distinfo():
        if registered is plugin:
            return dist.project_name, dist.version
    if plugin_name in BUILTIN_PLUGINS:
        return "starload", _own_version()
    return "not installed", ""


def _collect(
    hook_name: str, pm: pluggy.PluginManager | None = None
) -> tuple[dict[str, tuple[Any, Registered]], list[Problem]]:
    """Call one ``register_*`` hook on every plugin: what each registered, and which plugins failed.

    A plugin whose hook raises (or registers something of the wrong type) is skipped as a
    whole and reported; two plugins registering the same name is a :class:`PluginError`.
    """
    pm = pm or plugin_manager()
    kind, expected = _KINDS[hook_name]
    found: dict[str, tuple[Any, Registered]] = {}
    failed: list[Problem] = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        distribution, dist_version = _origin(pm, impl.plugin_name, impl.plugin)
        mine: list[Any] = []

        def register(item: Any, _mine: list[Any] = mine) -> None:
            if not isinstance(item, expected):
                msg = f"register() takes a {expected.__name__}, got {type(item).__name__}"
                raise TypeError(msg)
            _mine.append(item)

        arguments: dict[str, Callable[[Any], None]] = {"register": register}
        try:
            impl.function(**{arg: arguments[arg] for arg in impl.argnames})
        except Exception as exc:
            log.debug("hook %s of plugin %r failed", hook_name, impl.plugin_name, exc_info=True)
            problem = Problem(impl.plugin_name, distribution, dist_version, f"{hook_name}() failed: {_describe(exc)}")
            log.warning("%s", problem)
            failed.append(problem)
            continue
        for item in mine:
            if item.name in found:
                first = found[item.name][1]
                msg = (
                    f"{kind} {item.name!r} is registered twice: by plugin {first.plugin!r} "
                    f"({_label(first.distribution, first.version)}) and by plugin {impl.plugin_name!r} "
                    f"({_label(distribution, dist_version)}); uninstall one, or choose plugins with {LOAD_PLUGINS_ENV}"
                )
                raise PluginError(msg)
            found[item.name] = (
                item,
                Registered(kind, item.name, impl.plugin_name, distribution, dist_version, item.description),
            )
    return found, failed


def _label(distribution: str, dist_version: str) -> str:
    return f"{distribution} {dist_version}".strip()


def sinks(pm: pluggy.PluginManager | None = None) -> dict[str, SinkType]:
    """Every registered sink type by name (plugins whose hook failed are left out; see :func:`problems`)."""
    return {name: item for name, (item, _) in _collect("register_sinks", pm)[0].items()}


def generators(pm: pluggy.PluginManager | None = None) -> dict[str, Generator]:
    """Every registered generator by name (plugins whose hook failed are left out; see :func:`problems`)."""
    return {name: item for name, (item, _) in _collect("register_generators", pm)[0].items()}


def problems(pm: pluggy.PluginManager | None = None) -> list[Problem]:
    """Every plugin that could not be loaded, whose hook failed, or that implements an unknown hook."""
    pm = pm or plugin_manager()
    found = list(getattr(pm, "problems", []))
    for hook_name in _KINDS:
        found += _collect(hook_name, pm)[1]
    return found


def registrations(pm: pluggy.PluginManager | None = None) -> list[Registered]:
    """What every plugin registered, then every problem (kind ``"error"``), for ``starload plugins``."""
    pm = pm or plugin_manager()
    found: list[Registered] = []
    failed = list(getattr(pm, "problems", []))
    for hook_name in _KINDS:
        registered, hook_problems = _collect(hook_name, pm)
        found += [r for _, r in registered.values()]
        failed += hook_problems
    return found + [Registered("error", "", p.plugin, p.distribution, p.version, p.message) for p in failed]


def get_sink_type(name: str, pm: pluggy.PluginManager | None = None) -> SinkType:
    """The sink type called ``name``, or a :class:`PluginError` listing the known ones (and broken plugins)."""
    return _get(_collect("register_sinks", pm), name, "sink", pm)


def get_generator(name: str, pm: pluggy.PluginManager | None = None) -> Generator:
    """The generator called ``name``, or a :class:`PluginError` listing the known ones (and broken plugins)."""
    return _get(_collect("register_generators", pm), name, "generator", pm)


def _get(collected: tuple[dict[str, tuple[Any, Registered]], list[Problem]], name: str, kind: str, pm: Any) -> Any:
    items, hook_problems = collected
    try:
        return items[name][0]
    except KeyError:
        msg = f"unknown {kind} {name!r}; registered: {', '.join(sorted(items)) or 'none'}"
        broken = [*getattr(pm or plugin_manager(), "problems", []), *hook_problems]
        if broken:
            msg += "\nplugins with problems (it may come from one of them):\n" + "\n".join(f"  - {p}" for p in broken)
        raise PluginError(msg) from None


def _own_version() -> str:
    try:
        return version("starload")
    except PackageNotFoundError:
        return "unknown"
