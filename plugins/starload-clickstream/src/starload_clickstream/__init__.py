"""starload-clickstream: an example third-party generator of website page views.

A generator plugin provides a :class:`~starload.Generator`: a name, the
:class:`~starload.StarSchema` its events load into, and a function that yields events
forever from a seeded ``random.Random``. This one models sessions: a user arrives
(from a search engine, a link or directly), views a few pages, and leaves.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starload import (
    Check,
    DateDimension,
    Dimension,
    Event,
    Fact,
    Field,
    Generator,
    Integer,
    StarSchema,
    String,
    Timestamp,
    hookimpl,
)

__version__ = "0.1.0"

CLICKSTREAM_SCHEMA = StarSchema(
    name="clickstream",
    dimensions=[
        Dimension(
            name="user",
            table="DIM_USER",
            key="USER_KEY",
            natural_key=[Field("USER_ID", "user_id", String(64))],
            attributes=[Field("COUNTRY", "country"), Field("SIGNUP_CHANNEL", "signup_channel")],
        ),
        Dimension(
            name="page",
            table="DIM_PAGE",
            key="PAGE_KEY",
            natural_key=[Field("PAGE_PATH", "path", String(512))],
            attributes=[Field("PAGE_TITLE", "title"), Field("SECTION", "section")],
        ),
    ],
    date_dimension=DateDimension("DIM_DATE", "DATE_KEY"),
    fact=Fact(
        table="FACT_PAGE_VIEWS",
        grain=[Field("VIEW_ID", "view_id", String(64), required=True)],
        event_time=Field("VIEWED_AT", "viewed_at", Timestamp(), required=True),
        dimensions=["user", "page"],
        columns=[
            Field("SESSION_ID", "session_id", String(64), required=True),
            Field("DEVICE", "device"),
            Field("REFERRER", "referrer"),
            Field("DURATION_MS", "duration_ms", Integer(), required=True, check=Check.NON_NEGATIVE),
            Field("SCROLL_PERCENT", "scroll_percent", Integer(), check=Check.NON_NEGATIVE),
        ],
    ),
)

PAGES = (
    ("/", "Home", "home"),
    ("/pricing", "Pricing", "marketing"),
    ("/features", "Features", "marketing"),
    ("/blog", "Blog", "content"),
    ("/blog/star-schemas-explained", "Star schemas, explained", "content"),
    ("/blog/exactly-once", "Exactly once, for real", "content"),
    ("/docs", "Documentation", "docs"),
    ("/docs/quickstart", "Quickstart", "docs"),
    ("/signup", "Sign up", "conversion"),
    ("/checkout", "Checkout", "conversion"),
)
COUNTRIES = ("PK", "DE", "US", "BR", "IN", "NG", "JP")
CHANNELS = ("organic", "ads", "referral", "newsletter")
DEVICES = ("desktop", "mobile", "tablet")
REFERRERS = (None, "https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/")
SITE = "https://shop.example"


def generate_page_views(
    rng: random.Random,
    *,
    users: int = 100,
    max_views: int = 8,
    now: datetime | str | None = None,
) -> Iterator[Event]:
    """Endless sessions of 1…``max_views`` page views by one of ``users`` users, keyed by session.

    Everything random comes from ``rng``; with a fixed ``now`` (default: the current
    time) a seed reproduces the stream exactly.
    """
    people = [
        {
            "user_id": f"U{i + 1}",
            "country": COUNTRIES[i % len(COUNTRIES)],
            "signup_channel": CHANNELS[i // 7 % len(CHANNELS)],
        }
        for i in range(users)
    ]
    end = datetime.fromisoformat(now) if isinstance(now, str) else now or datetime.now(UTC)
    span = int(timedelta(days=7).total_seconds())
    while True:
        session = f"S{rng.getrandbits(64):016x}"
        user = rng.choice(people)
        device = rng.choice(DEVICES)
        referrer = rng.choice(REFERRERS)
        at = end - timedelta(seconds=rng.randrange(span))
        for n in range(rng.randint(1, max_views)):
            path, title, section = PAGES[0] if n == 0 and referrer is None else rng.choice(PAGES)
            duration = int(rng.expovariate(1 / 20_000))
            view: dict[str, Any] = {
                "view_id": f"{session}-{n + 1}",
                "session_id": session,
                "viewed_at": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                **user,
                "path": path,
                "title": title,
                "section": section,
                "device": device,
                "referrer": referrer,
                "duration_ms": duration,
                "scroll_percent": rng.randint(0, 100),
            }
            yield Event(key=session.encode(), value=view)
            referrer = SITE + path
            at += timedelta(milliseconds=duration + rng.randint(200, 3_000))


CLICKSTREAM_GENERATOR = Generator(
    name="clickstream",
    description="website page views in sessions (example plugin: starload-clickstream)",
    schema=CLICKSTREAM_SCHEMA,
    events=generate_page_views,
)


@hookimpl
def register_generators(register: Callable[[Generator], None]) -> None:
    """Make the generator known to starload as ``clickstream`` (``starload produce --generator clickstream``)."""
    register(CLICKSTREAM_GENERATOR)
