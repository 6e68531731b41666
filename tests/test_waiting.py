"""What a loader waits for is shown once it lasts, and logged at most every 30 s."""

from __future__ import annotations

import logging

from starload.waiting import FIRST_LOG, LOG_EVERY, Waits


def test_a_wait_shows_once_it_lasts_and_is_logged_at_most_every_30_s(caplog):
    waits = Waits()
    with caplog.at_level(logging.INFO, logger="starload.waiting"):
        with waits.on("the star's lock") as wait:
            waits.remind()
            assert waits.current() is None and waits.current(at_least=0) is wait  # routine waits are not shown
            assert not caplog.records
            wait.since -= FIRST_LOG
            wait.what = "the star's lock, held by loader db1:42"
            waits.remind()
            waits.remind()
            assert waits.current() is wait
            assert [r.getMessage() for r in caplog.records] == [f"waiting for {wait.describe()}"]
            assert "held by loader db1:42 (since " in caplog.records[0].getMessage()
            assert wait.logged is not None
            wait.logged -= LOG_EVERY
            waits.remind()
            assert len(caplog.records) == 2
        assert waits.current(at_least=0) is None
    assert caplog.records[-1].getMessage().startswith("no longer waiting for the star's lock, held by loader db1:42, after ")


def test_of_nested_waits_the_one_that_began_first_is_shown():
    waits = Waits()
    with waits.on("the warehouse to take a batch") as outer:
        outer.since -= FIRST_LOG
        with waits.on("a reader of the file to close it") as inner:
            inner.since -= FIRST_LOG
            assert waits.current() is outer
        assert waits.current() is outer
