"""The clickstream generator loads into its own star: produce to the local broker, load, check."""

from __future__ import annotations

from itertools import islice

from starload_clickstream import CLICKSTREAM_GENERATOR, CLICKSTREAM_SCHEMA

from starload import produce
from starload.testing import load_until_idle

NOW = "2024-06-01T12:00:00+00:00"


def test_a_seed_reproduces_the_stream():
    def views(seed):
        return [e.value for e in islice(CLICKSTREAM_GENERATOR.stream(seed, now=NOW), 200)]

    assert views(1) == views(1) != views(2)


def test_page_views_load_into_the_star(local_broker, topic, memory_sink):
    views = [e.value for e in islice(CLICKSTREAM_GENERATOR.stream(3, now=NOW), 500)]
    produce(local_broker.bootstrap_servers, topic, CLICKSTREAM_GENERATOR, 500, seed=3, options={"now": NOW})
    stats = load_until_idle(CLICKSTREAM_SCHEMA, memory_sink, local_broker, topic)
    assert (stats.facts_loaded, stats.duplicates, stats.rejected) == (500, 0, 0)
    con = memory_sink.connection
    rows = con.execute(
        """SELECT f.VIEW_ID, u.USER_ID, p.PAGE_PATH, f.DURATION_MS FROM FACT_PAGE_VIEWS f
           JOIN DIM_USER u USING (USER_KEY) JOIN DIM_PAGE p USING (PAGE_KEY)"""
    ).fetchall()
    assert sorted(rows) == sorted((v["view_id"], v["user_id"], v["path"], v["duration_ms"]) for v in views)
