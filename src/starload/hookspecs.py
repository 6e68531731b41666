"""The hooks a starload plugin can implement: the plugin author's reference.

A plugin is a module or object with functions marked ``@hookimpl`` (import it as
``from starload import hookimpl``), made known to starload through the ``starload``
entry-point group in its ``pyproject.toml``::

    [project.entry-points.starload]
    my_sink = "my_package.plugin"

Hooks are called with keyword arguments; an implementation may accept fewer
arguments than the specification, so new arguments never break old plugins.

The plugin author guide, ``docs/plugins.md``, documents every hook here with its exact
signature (a test checks it): change a hook, change the guide.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from starload.generators.base import Generator
from starload.sinks.base import SinkType

hookspec = pluggy.HookspecMarker("starload")
hookimpl = pluggy.HookimplMarker("starload")


@hookspec
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Register sinks: call ``register(SinkType(name, factory, description, options))`` once per sink.

    ``factory(**options)`` must return a :class:`starload.sinks.base.Sink`. Names are
    unique across all plugins; a second registration of a name is an error.
    """


@hookspec
def register_generators(register: Callable[[Generator], None]) -> None:
    """Register event generators: call ``register(Generator(name, description, schema, events))`` once each.

    A generator's ``schema`` is the star its events load into (``starload load --schema NAME``).
    """
