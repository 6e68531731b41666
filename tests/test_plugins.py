"""The plugin system: entry points, loading control, broken plugins, the example plugins, the guide."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from itertools import islice
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Producer

from starload import ORDERS_GENERATOR, ORDERS_SCHEMA, SinkType, hookimpl, hookspecs, plugins, produce
from starload.exceptions import PluginError, TransientSinkError
from starload.kafka import producer_config
from starload.sinks.duckdb import DuckDBSink
from starload.testing import NOW, Stager, as_instant, load_until_idle, sample_orders

ROOT = Path(__file__).resolve().parents[1]
#: The example third-party plugins in plugins/, by the module each one provides.
EXAMPLE_PLUGINS = {
    "starload_sqlite": ROOT / "plugins" / "starload-sqlite",
    "starload_clickstream": ROOT / "plugins" / "starload-clickstream",
}


@pytest.fixture(scope="session")
def example_plugins():
    """The example plugins, installed (editable, like starload itself) into this interpreter if missing."""
    missing = [path for module, path in EXAMPLE_PLUGINS.items() if importlib.util.find_spec(module) is None]
    if missing:
        editable = [arg for path in missing for arg in ("-e", str(path))]
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *editable], check=True)
        # An editable install works through a .pth file, which Python reads at start-up:
        # this process adds the source directories itself (subprocesses read the .pth).
        for path in missing:
            if str(path / "src") not in sys.path:
                sys.path.append(str(path / "src"))
        importlib.invalidate_caches()
    plugins.plugin_manager.cache_clear()
    yield
    plugins.plugin_manager.cache_clear()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "starload.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


# ---- plugins registered on a fresh plugin manager -----------------------------------------


class SinkPlugin:
    """A plugin object registering sinks by name."""

    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def register_sinks(self, register):
        for name in self.names:
            register(SinkType(name, DuckDBSink, f"{name} sink"))


class RaisingPlugin:
    @hookimpl
    def register_sinks(self, register):
        register(SinkType("half", DuckDBSink))
        raise RuntimeError("bug in the plugin")


class WrongTypePlugin:
    @hookimpl
    def register_generators(self, register):
        register("orders-2")


class TypoPlugin:
    @hookimpl
    def register_sink(self, register):  # not a starload hook
        register(SinkType("typo", DuckDBSink))


@pytest.fixture
def pm():
    """A plugin manager with the built-ins only."""
    return plugins.create_plugin_manager(entry_point_plugins=False)


#: The sinks starload itself ships.
BUILTIN_SINKS = set(plugins.sinks(plugins.create_plugin_manager(entry_point_plugins=False)))


def test_builtins_register_through_the_same_hooks(pm):
    assert {"duckdb", "snowflake"} <= BUILTIN_SINKS
    assert set(plugins.generators(pm)) == {"orders", "shop", "bookshop", "bookshop-progress"}
    rows = plugins.registrations(pm)
    assert {r.plugin for r in rows} == set(plugins.BUILTIN_PLUGINS)
    assert {r.distribution for r in rows} == {"starload"} and all(r.version for r in rows)
    duckdb_sink = next(r for r in rows if r.name == "duckdb")
    assert (duckdb_sink.kind, duckdb_sink.plugin) == ("sink", "starload.sinks.duckdb")
    assert plugins.problems(pm) == []


def test_a_registered_plugin_adds_its_sinks(pm):
    plugin = SinkPlugin("extra")
    pm.register(plugin, name="extra-plugin")
    try:
        assert set(plugins.sinks(pm)) == BUILTIN_SINKS | {"extra"}
        assert plugins.get_sink_type("extra", pm).description == "extra sink"
    finally:
        pm.unregister(plugin)
    assert set(plugins.sinks(pm)) == BUILTIN_SINKS


def test_two_plugins_registering_one_name_is_an_error_naming_both(pm):
    first, second = SinkPlugin("dup"), SinkPlugin("dup")
    pm.register(first, name="first-plugin")
    pm.register(second, name="second-plugin")
    try:
        with pytest.raises(
            PluginError,
            match=r"sink 'dup' is registered twice: by plugin 'first-plugin' .* and by plugin 'second-plugin'",
        ):
            plugins.sinks(pm)
    finally:
        pm.unregister(first)
        pm.unregister(second)


def test_a_plugin_reusing_a_builtin_name_is_an_error_naming_both(pm):
    plugin = SinkPlugin("duckdb")
    pm.register(plugin, name="my-duckdb")
    try:
        with pytest.raises(PluginError) as err:
            plugins.get_sink_type("duckdb", pm)
        assert "'starload.sinks.duckdb' (starload" in str(err.value) and "'my-duckdb'" in str(err.value)
    finally:
        pm.unregister(plugin)


def test_a_hook_that_raises_is_reported_and_the_other_sinks_still_work(pm):
    good, bad = SinkPlugin("good"), RaisingPlugin()
    pm.register(good, name="good-plugin")
    pm.register(bad, name="bad-plugin")
    try:
        assert set(plugins.sinks(pm)) == BUILTIN_SINKS | {"good"}  # nothing of the broken plugin, not even "half"
        [problem] = plugins.problems(pm)
        assert problem.plugin == "bad-plugin"
        assert "register_sinks() failed: RuntimeError: bug in the plugin (at " in problem.message
        assert str(problem).startswith("plugin 'bad-plugin' (not installed): ")
        errors = [r for r in plugins.registrations(pm) if r.kind == "error"]
        assert [(r.plugin, r.description) for r in errors] == [("bad-plugin", problem.message)]
        with pytest.raises(
            PluginError, match=r"(?s)unknown sink 'half'; registered: duckdb, good, .*\n.*bad-plugin.*bug in the plugin"
        ):
            plugins.get_sink_type("half", pm)
    finally:
        pm.unregister(good)
        pm.unregister(bad)


def test_registering_the_wrong_type_is_reported(pm):
    plugin = WrongTypePlugin()
    pm.register(plugin, name="wrong")
    try:
        assert set(plugins.generators(pm)) == {"orders", "shop", "bookshop", "bookshop-progress"}
        [problem] = plugins.problems(pm)
        assert "register() takes a Generator, got str" in problem.message
    finally:
        pm.unregister(plugin)


def test_an_unknown_hook_is_reported(pm):
    plugin = TypoPlugin()
    assert pm.register_plugin(plugin, "typo", "starload-typo", "1.0")
    try:
        [problem] = plugins.problems(pm)
        assert (problem.plugin, problem.distribution) == ("typo", "starload-typo")
        assert "unknown hook 'register_sink'" in problem.message and "register_sinks" in problem.message
    finally:
        pm.unregister(plugin)


# ---- entry-point plugins: installed distributions, some of them broken -----------------------

FAKE_PLUGINS = {
    # distribution: (entry point name, module name, module source)
    "starload-good": (
        "good",
        "sl_test_good",
        """
        from starload import SinkType, hookimpl
        from starload.sinks.duckdb import DuckDBSink

        @hookimpl
        def register_sinks(register):
            register(SinkType("good", DuckDBSink, "a working third-party sink"))
        """,
    ),
    "starload-broken": ("broken", "sl_test_broken", "import sl_no_such_module\n"),
    "starload-raising": (
        "raising",
        "sl_test_raising",
        """
        from starload import hookimpl

        @hookimpl
        def register_sinks(register):
            raise ValueError("cannot register today")
        """,
    ),
}


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Three installed plugin distributions (dist-info + module) on sys.path: one good, two broken."""
    for dist, (ep_name, module, source) in FAKE_PLUGINS.items():
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[starload]\n{ep_name} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV, raising=False)
    plugins.plugin_manager.cache_clear()
    yield tmp_path
    for _, module, _ in FAKE_PLUGINS.values():
        sys.modules.pop(module, None)
    plugins.plugin_manager.cache_clear()


def test_entry_point_plugins_load_and_broken_ones_do_not_take_the_others_down(fake_plugins):
    pm = plugins.create_plugin_manager()
    assert BUILTIN_SINKS | {"good"} <= set(plugins.sinks(pm))
    good = next(r for r in plugins.registrations(pm) if r.name == "good")
    assert (good.kind, good.plugin, good.distribution, good.version) == ("sink", "good", "starload-good", "1.2.3")
    problems = {p.plugin: p for p in plugins.problems(pm)}
    assert problems["broken"].distribution == "starload-broken"
    assert problems["broken"].message.startswith(
        "could not be imported (sl_test_broken): ModuleNotFoundError: No module named 'sl_no_such_module'"
    )
    assert "register_sinks() failed: ValueError: cannot register today" in problems["raising"].message


@pytest.mark.parametrize(
    ("wanted", "sinks"),
    [("good", {"good"}), ("Starload_Good, nothing-else", {"good"}), ("", set()), ("raising", set())],
)
def test_starload_load_plugins_limits_the_entry_point_plugins(fake_plugins, monkeypatch, wanted, sinks):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, wanted)
    pm = plugins.create_plugin_manager()
    assert set(plugins.sinks(pm)) == BUILTIN_SINKS | sinks  # the built-ins always load
    problems = {p.plugin for p in plugins.problems(pm)}
    assert "broken" not in problems  # not asked for, so never imported
    assert "sl_test_broken" not in sys.modules
    assert ("nothing-else" in problems) == ("nothing-else" in wanted)


def test_the_cli_names_broken_plugins_and_keeps_working(fake_plugins):
    env = {"PYTHONPATH": os.pathsep.join([str(fake_plugins), os.environ.get("PYTHONPATH", "")])}
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr + listed.stdout
    assert re.search(r"sink\s+│\s+good\s+│\s+good\s+│\s+starload-good 1\.2\.3", listed.stdout)
    assert re.search(r"error\s+│\s+│\s+broken\s+│\s+starload-broken 1\.2\.3\s+│\s+could not be imported", listed.stdout)
    assert (
        "plugin 'raising' (starload-raising 1.2.3): register_sinks() failed: ValueError: cannot register today"
        in listed.stderr
    )

    ddl = run_cli("ddl", "--sink", "good", env=env)
    assert ddl.returncode == 0, ddl.stderr
    assert 'CREATE TABLE IF NOT EXISTS "FACT_ORDERS"' in ddl.stdout

    unknown = run_cli("ddl", "--sink", "raising", env=env)
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
    assert "unknown sink 'raising'" in unknown.stderr and "plugins with problems" in unknown.stderr
    assert "plugin 'broken' (starload-broken 1.2.3): could not be imported" in unknown.stderr


# ---- the example plugins in plugins/ ------------------------------------------------------


def test_the_example_plugins_are_found_through_their_entry_points(example_plugins):
    found = {(r.kind, r.name): r for r in plugins.registrations()}
    sqlite, clickstream = found["sink", "sqlite"], found["generator", "clickstream"]
    assert (sqlite.plugin, sqlite.distribution, sqlite.version) == ("sqlite", "starload-sqlite", "0.1.0")
    assert (clickstream.plugin, clickstream.distribution, clickstream.version) == (
        "clickstream",
        "starload-clickstream",
        "0.1.0",
    )
    listed = run_cli("plugins")
    assert "starload-sqlite 0.1.0" in listed.stdout and "starload-clickstream 0.1.0" in listed.stdout


def orders_star(rows_of) -> dict[str, list[tuple]]:
    """The orders star by natural keys, values normalised, from any sink's query function."""
    facts = rows_of(
        """SELECT f."ORDER_ID", f."ORDER_TIMESTAMP", c."CUSTOMER_ID", c."CUSTOMER_NAME", p."PRODUCT_ID", p."PRICE",
                  f."DATE_KEY", f."QUANTITY", f."UNIT_PRICE", f."TOTAL_AMOUNT", f."KAFKA_PARTITION", f."KAFKA_OFFSET"
           FROM "FACT_ORDERS" f JOIN "DIM_CUSTOMER" c ON c."CUSTOMER_KEY" = f."CUSTOMER_KEY"
           JOIN "DIM_PRODUCT" p ON p."PRODUCT_KEY" = f."PRODUCT_KEY" ORDER BY 1"""
    )
    money = (5, 8, 9)
    return {
        "facts": [
            tuple(as_instant(v) if i == 1 else Decimal(str(v)) if i in money else v for i, v in enumerate(row))
            for row in facts
        ],
        "dates": [
            (k, str(d)[:10], n)
            for k, d, n in rows_of('SELECT "DATE_KEY", "FULL_DATE", "DAY_NAME" FROM "DIM_DATE" ORDER BY 1')
        ],
        "rejects": [
            (p, o, bytes(v), r)
            for p, o, v, r in rows_of(
                'SELECT "KAFKA_PARTITION", "KAFKA_OFFSET", "MESSAGE_VALUE", "REASON" '
                'FROM "STARLOAD_REJECTS" ORDER BY 1, 2'
            )
        ],
        "offsets": rows_of('SELECT "KAFKA_PARTITION", "NEXT_OFFSET" FROM "STARLOAD_OFFSETS" ORDER BY 1'),
    }


def test_sqlite_loaders_sharing_one_file_stay_exact(example_plugins, tmp_path):
    """Two loaders (own connections, own partitions) upserting the same dimensions at once."""
    sink_type = plugins.get_sink_type("sqlite")
    path = str(tmp_path / "shared.sqlite")

    def load(partition: int) -> int:
        orders = sample_orders(300, seed=partition + 1, customers=25, products=10)
        sink, stager = sink_type.create(path=path), Stager()
        try:
            sink.prepare(ORDERS_SCHEMA)
            return sum(
                sink.write(stager.batch(orders[i : i + 20], start=i, partition=partition)).facts_inserted
                for i in range(0, len(orders), 20)
            )
        finally:
            stager.close()
            sink.close()

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(load, [0, 1])) == [300, 300]
    con = sqlite3.connect(path)
    try:
        assert con.execute('SELECT count(*), count(DISTINCT "ORDER_ID") FROM "FACT_ORDERS"').fetchall() == [(600, 600)]
        assert con.execute('SELECT count(*), count(DISTINCT "CUSTOMER_ID") FROM "DIM_CUSTOMER"').fetchall() == [
            (25, 25)
        ]
        assert con.execute('SELECT count(*), count(DISTINCT "PRODUCT_ID") FROM "DIM_PRODUCT"').fetchall() == [(10, 10)]
        offsets = 'SELECT "KAFKA_PARTITION", "NEXT_OFFSET" FROM "STARLOAD_OFFSETS" ORDER BY 1'
        assert con.execute(offsets).fetchall() == [(0, 300), (1, 300)]
    finally:
        con.close()


def test_a_locked_sqlite_file_is_a_transient_error(example_plugins, tmp_path):
    sink = plugins.get_sink_type("sqlite").create(path=str(tmp_path / "locked.sqlite"), timeout="0.1")
    stager = Stager()
    other = sqlite3.connect(tmp_path / "locked.sqlite", isolation_level=None)
    try:
        sink.prepare(ORDERS_SCHEMA)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(TransientSinkError, match="database is locked"):
            sink.write(stager.batch(sample_orders(3)))
        other.execute("ROLLBACK")
        assert sink.write(stager.batch(sample_orders(3))).facts_inserted == 3  # what the engine's retry does
    finally:
        other.close()
        stager.close()
        sink.close()


def test_the_cli_loads_the_same_star_into_sqlite_as_into_duckdb(example_plugins, local_broker, tmp_path):
    bootstrap, topic = local_broker.bootstrap_servers, "plugins-same-star"
    produce(bootstrap, topic, ORDERS_GENERATOR, 1_500, seed=21, partitions=3, options={"now": NOW, "customers": 40})
    producer = Producer(producer_config(bootstrap))
    for value in (b"not json", b'{"order_id": "X"}'):
        producer.produce(topic, value, partition=1)
    producer.flush()
    stars = {}
    for sink, option in (("duckdb", "--duckdb-path"), ("sqlite", "--sink-option")):
        path = tmp_path / f"star.{sink}"
        value = str(path) if sink == "duckdb" else f"path={path}"
        loaded = run_cli(
            "load",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--schema",
            "orders",
            "--group",
            sink,
            "--sink",
            sink,
            option,
            value,
            "--until-idle",
            "1.5",
            "--batch-rows",
            "400",
        )
        assert loaded.returncode == 0, loaded.stderr
        summary = dict(line.split(": ", 1) for line in loaded.stdout.strip().splitlines())
        assert (summary["consumed"], summary["facts loaded"], summary["rejected"]) == ("1502", "1500", "2")
        if sink == "duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                stars[sink] = orders_star(lambda sql, con=con: con.execute(sql).fetchall())
        else:
            with sqlite3.connect(path) as con:
                stars[sink] = orders_star(lambda sql, con=con: con.execute(sql).fetchall())
            con.close()
    assert len(stars["duckdb"]["facts"]) == 1_500 and len(stars["duckdb"]["rejects"]) == 2
    assert stars["sqlite"] == stars["duckdb"]


def test_the_clickstream_generator_loads_its_own_star(example_plugins, local_broker, topic):
    from starload_clickstream import CLICKSTREAM_SCHEMA

    generator = plugins.get_generator("clickstream")
    assert generator.schema is CLICKSTREAM_SCHEMA
    views = [e.value for e in islice(generator.stream(5, now=NOW, users=30), 2_000)]
    produce(local_broker.bootstrap_servers, topic, generator, 2_000, seed=5, options={"now": NOW, "users": 30})
    with DuckDBSink(":memory:") as sink:
        stats = load_until_idle(CLICKSTREAM_SCHEMA, sink, local_broker, topic, batch_rows=700)
        assert (stats.consumed, stats.facts_loaded, stats.duplicates, stats.rejected) == (2_000, 2_000, 0, 0)
        con = sink.connection
        facts = con.execute(
            """SELECT f.VIEW_ID, f.SESSION_ID, u.USER_ID, p.PAGE_PATH, f.VIEWED_AT, f.DURATION_MS, f.REFERRER,
                      d.FULL_DATE
               FROM FACT_PAGE_VIEWS f JOIN DIM_USER u USING (USER_KEY) JOIN DIM_PAGE p USING (PAGE_KEY)
               JOIN DIM_DATE d USING (DATE_KEY)"""
        ).fetchall()
        assert sorted((*r[:4], as_instant(r[4]), *r[5:7], r[7].isoformat()) for r in facts) == sorted(
            (
                v["view_id"],
                v["session_id"],
                v["user_id"],
                v["path"],
                as_instant(v["viewed_at"]),
                v["duration_ms"],
                v["referrer"],
                as_instant(v["viewed_at"]).date().isoformat(),
            )
            for v in views
        )
        users = con.execute("SELECT USER_ID, COUNTRY, SIGNUP_CHANNEL FROM DIM_USER").fetchall()
        assert sorted(users) == sorted({(v["user_id"], v["country"], v["signup_channel"]) for v in views})
        pages = con.execute("SELECT PAGE_PATH, PAGE_TITLE, SECTION FROM DIM_PAGE").fetchall()
        assert sorted(pages) == sorted({(v["path"], v["title"], v["section"]) for v in views})
        sessions = con.execute("SELECT count(DISTINCT SESSION_ID), sum(DURATION_MS) FROM FACT_PAGE_VIEWS").fetchall()
        assert sessions == [(len({v["session_id"] for v in views}), sum(v["duration_ms"] for v in views))]


def test_the_cli_produces_clickstream_and_loads_it_into_sqlite(example_plugins, local_broker, tmp_path):
    bootstrap, db = local_broker.bootstrap_servers, tmp_path / "views.sqlite"
    produced = run_cli(
        "produce",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        "plugins-views",
        "--count",
        "600",
        "--generator",
        "clickstream",
        "--option",
        "users=20",
        "--seed",
        "2",
    )
    assert produced.returncode == 0, produced.stderr
    loaded = run_cli(
        "load",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        "plugins-views",
        "--schema",
        "clickstream",
        "--sink",
        "sqlite",
        "--sink-option",
        f"path={db}",
        "--until-idle",
        "1.5",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "facts loaded: 600" in loaded.stdout
    assert f"rejects went to: table STARLOAD_REJECTS of SQLite file {str(db)!r} and topic 'plugins-views.dlq'" in loaded.stdout  # asked of the sink
    with sqlite3.connect(db) as con:
        assert con.execute('SELECT count(*), count(DISTINCT "USER_KEY") <= 20 FROM "FACT_PAGE_VIEWS"').fetchall() == [
            (600, 1)
        ]
    con.close()


# ---- the plugin author guide -------------------------------------------------------------

GUIDE = ROOT / "docs" / "plugins.md"


def hook_signature(name: str, function) -> str:
    """``def name(arg: Type) -> Return`` exactly as hookspecs.py declares it."""

    def show(annotation) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    signature = inspect.signature(function)
    params = ", ".join(
        p.name if p.annotation is p.empty else f"{p.name}: {show(p.annotation)}" for p in signature.parameters.values()
    )
    return f"def {name}({params}) -> {show(signature.return_annotation)}"


def hookspec_functions() -> dict[str, object]:
    return {name: f for name, f in vars(hookspecs).items() if callable(f) and hasattr(f, "starload_spec")}


def test_there_are_hooks_to_document():
    assert {"register_sinks", "register_generators"} <= set(hookspec_functions())


@pytest.mark.parametrize("name", sorted(hookspec_functions()))
def test_every_hook_is_documented_with_its_exact_signature(name):
    guide = GUIDE.read_text()
    hooks = guide.split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    sections = dict(re.findall(r"\n### `(\w+)`\n(.*?)(?=\n### |\Z)", hooks, re.DOTALL))
    assert name in sections, f"docs/plugins.md has no '### `{name}`' section under '## Hooks'"
    assert hook_signature(name, hookspec_functions()[name]) in sections[name]


def test_the_guide_documents_no_hook_that_does_not_exist():
    hooks = GUIDE.read_text().split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"\n### `(\w+)`\n", hooks)) == set(hookspec_functions())
