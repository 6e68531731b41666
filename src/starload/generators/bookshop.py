"""A bookshop's events: one message per order, its lines in an array; and the orders' status events.

:data:`BOOKSHOP_SCHEMA` is the twin of ``examples/bookshop.yaml``: one topic,
``bookshop.orders``, feeds two facts: ``FACT_ORDERS`` (a row per order) and
``FACT_ORDER_LINES`` (a row per element of ``lines``, its position ``LINE_NO``), and
``DIM_BOOK`` takes its members from the elements (one per ISBN across every line).

:data:`BOOKSHOP_PROGRESS_SCHEMA` is the twin of ``examples/bookshop_progress.yaml``: an
accumulating snapshot, ``FACT_ORDER_PROGRESS``, a row per order made by
``bookshop.orders`` and filled by ``bookshop.order_status`` (the current status and the
time each milestone was first reached).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

from starload.generators.base import Event, Generator
from starload.hookspecs import hookimpl
from starload.spec import (
    Changes,
    Check,
    DateDimension,
    Decimal,
    Dimension,
    Fact,
    Field,
    Integer,
    Measure,
    Milestone,
    StarSchema,
    String,
    Timestamp,
    Updates,
)

ORDERS_TOPIC = "bookshop.orders"
STATUS_TOPIC = "bookshop.order_status"
#: An order's statuses in the order they are reached (an order is cancelled instead of shipped, or not at all).
STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled")

BOOKSHOP_SCHEMA = StarSchema(
    name="bookshop",
    dimensions=[
        Dimension(
            name="customer",
            table="DIM_CUSTOMER",
            key="CUSTOMER_KEY",
            natural_key=[Field("CUSTOMER_ID", "customer.id", Integer())],
            attributes=[Field("CUSTOMER_CITY", "customer.city")],
        ),
        Dimension(
            name="book",
            table="DIM_BOOK",
            key="BOOK_KEY",
            natural_key=[Field("ISBN", "lines[].isbn", String(17))],
            attributes=[Field("TITLE", "lines[].title")],
        ),
    ],
    date_dimension=DateDimension("DIM_DATE", "DATE_KEY"),
    facts=[
        Fact(
            table="FACT_ORDERS",
            topic=ORDERS_TOPIC,
            grain=[Field("ORDER_ID", "order_id", String(32), required=True)],
            event_time=Field("PLACED_AT", "placed_at", Timestamp(), required=True),
            dimensions=["customer"],
            columns=[Field("SHIP_COUNTRY", "shipping.country", String(2)), Field("COUPON", "coupon")],
        ),
        Fact(
            table="FACT_ORDER_LINES",
            topic=ORDERS_TOPIC,
            grain=[Field("ORDER_ID", "order_id", String(32), required=True), Field("LINE_NO", "lines[#]", Integer())],
            event_time=Field("PLACED_AT", "placed_at", Timestamp(), required=True),
            dimensions=["customer", "book"],
            columns=[
                Field("QTY", "lines[].qty", Integer(), required=True, check=Check.POSITIVE),
                Field("UNIT_PRICE", "lines[].unit_price", Decimal(10, 2), required=True, check=Check.NON_NEGATIVE),
            ],
            measures=[Measure("LINE_AMOUNT", ["UNIT_PRICE", "QTY"], Decimal(12, 2))],
        ),
    ],
)

BOOKSHOP_PROGRESS_SCHEMA = StarSchema(
    name="bookshop_progress",
    dimensions=[BOOKSHOP_SCHEMA.dimensions[0]],
    date_dimension=DateDimension("DIM_DATE", "DATE_KEY"),
    fact=Fact(
        table="FACT_ORDER_PROGRESS",
        topic=ORDERS_TOPIC,
        grain=[Field("ORDER_ID", "order_id", String(32), required=True)],
        event_time=Field("PLACED_AT", "placed_at", Timestamp(), required=True),
        dimensions=["customer"],
        columns=[Field("SHIP_COUNTRY", "shipping.country", String(2)), Field("ORDER_TOTAL", "total", Decimal(12, 2))],
        changes=Changes.LATEST,
        updates=[
            Updates(
                topic=STATUS_TOPIC,
                grain=["order_id"],
                event_time=Field("STATUS_AT", "at", Timestamp(), required=True),
                columns=[Field("STATUS", "status", String(16))],
                milestones=[Milestone(f"{s.upper()}_AT", "status", s) for s in STATUSES[1:]],
            )
        ],
    ),
)

BOOKS = (
    ("978-0-441-17271-9", "Dune"),
    ("978-0-14-143951-8", "Emma"),
    ("978-0-452-28423-4", "Nineteen Eighty-Four"),
    ("978-0-14-044913-6", "Crime and Punishment"),
    ("978-0-06-112008-4", "To Kill a Mockingbird"),
    ("978-0-7432-7356-5", "The Great Gatsby"),
    ("978-0-316-76948-0", "The Catcher in the Rye"),
    ("978-0-553-29335-7", "Foundation"),
)
CITIES = (("Lahore", "PK"), ("Oslo", "NO"), ("Lyon", "FR"), ("Osaka", "JP"), ("Recife", "BR"))
#: Bad elements the stream mixes in (about 2 % of orders): each rejects its whole order.
BAD_LINES = ({"qty": 0}, {"isbn": None}, {"unit_price": "-1.00"}, "not an object")


def _at(clock: datetime, offset_hours: int) -> str:
    """ISO-8601 with milliseconds and an offset (``2026-11-02T10:11:12.345+01:00``), as the bookshop writes its times."""
    return clock.astimezone(timezone(timedelta(hours=offset_hours))).isoformat(timespec="milliseconds")


def generate_bookshop(rng: random.Random, *, customers: int = 50, now: datetime | str | None = None, prefix: str = "") -> Iterator[Event]:
    """Endless order events for :data:`BOOKSHOP_SCHEMA`, keyed by order id, on its topic named ``prefix`` + ``bookshop.orders``.

    An order has 0 to 5 lines (a few have none), books from :data:`BOOKS`, times with the
    customer's UTC offset. About 3 % of events redeliver an earlier order unchanged (a
    duplicate) and 2 % hold a bad line (:data:`BAD_LINES`, a reject naming the element). Time
    runs forward from 30 days before ``now`` (default: the current time, or a fixed day for
    a seeded stream); everything else comes from ``rng``, so a seed reproduces the stream.
    """
    end = datetime.fromisoformat(now) if isinstance(now, str) else now or datetime.now(UTC)
    clock = end - timedelta(days=30)
    topic = prefix + ORDERS_TOPIC
    placed: list[dict[str, object]] = []
    number = 1000
    while True:
        clock += timedelta(milliseconds=rng.randrange(1_000, 120_000))
        if placed and rng.random() < 0.03:
            again = rng.choice(placed)
            yield Event(str(again["order_id"]).encode(), again, topic)
            continue
        number += 1
        who = rng.randrange(1, customers + 1)
        city, country = CITIES[who % len(CITIES)]
        lines: list[object] = []
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4, 5))):
            isbn, title = rng.choice(BOOKS)
            lines.append({"isbn": isbn, "title": title, "qty": rng.randint(1, 3), "unit_price": f"{rng.randrange(499, 4_999) / 100:.2f}"})
        total = sum(int(line["qty"]) * float(line["unit_price"]) for line in lines if isinstance(line, dict))  # type: ignore[arg-type]
        bad = bool(lines) and rng.random() < 0.02
        if bad:
            where, broken = rng.randrange(len(lines)), rng.choice(BAD_LINES)
            lines[where] = broken if isinstance(broken, str) else {**lines[where], **broken}  # type: ignore[dict-item]
        order = {
            "order_id": f"B-{number}",
            "placed_at": _at(clock, who % 3),
            "customer": {"id": who, "city": city},
            "shipping": {"country": country, "method": rng.choice(("courier", "post"))},
            "coupon": rng.choice((None, None, None, "WELCOME10")),
            "lines": lines,
            "total": f"{total:.2f}",
        }
        if not bad:
            placed.append(order)
        yield Event(str(order["order_id"]).encode(), order, topic)


def generate_bookshop_progress(
    rng: random.Random, *, customers: int = 50, now: datetime | str | None = None, prefix: str = ""
) -> Iterator[Event]:
    """Endless events for :data:`BOOKSHOP_PROGRESS_SCHEMA`: the bookshop's orders (:func:`generate_bookshop`) and their status events, as a real stream has them.

    Each new order reaches ``placed``, then (most) ``paid``, ``shipped`` and ``delivered``
    minutes to days apart, or is ``cancelled`` (about 1 in 12). A status event is sent
    when its time comes, up to a few orders late, so events of one order arrive out of
    order; about 4 % are sent twice, and about 5 % of orders are sent after their first
    status event. Keyed by order id, on ``prefix`` + ``bookshop.order_status``.
    """
    topic = prefix + STATUS_TOPIC
    pending: list[tuple[int, Event]] = []  # (orders still to go before it is sent, event)
    held: Event | None = None
    seen: set[object] = set()
    for event in generate_bookshop(rng, customers=customers, now=now, prefix=prefix):
        order = event.value
        if held is not None:
            yield held
            held = None
        due = [e for n, e in pending if n <= 0]
        pending = [(n - 1, e) for n, e in pending if n > 0]
        rng.shuffle(due)
        yield from due
        if order["order_id"] in seen:  # a redelivered order
            yield event
            continue
        seen.add(order["order_id"])
        at = datetime.fromisoformat(str(order["placed_at"]))
        reached = ["placed", *(("cancelled",) if rng.random() < 0.08 else ("paid", "shipped", "delivered")[: rng.randint(0, 3)])]
        for n, status in enumerate(reached):
            at += timedelta(minutes=rng.randrange(1, 60)) if n else timedelta(0)
            at += timedelta(hours=rng.randrange(1, 72)) if status in ("shipped", "delivered") else timedelta(0)
            status_event = Event(event.key, {"order_id": order["order_id"], "status": status, "at": at.isoformat(timespec="milliseconds")}, topic)
            pending += [(n + rng.randrange(0, 4), status_event)] * (2 if rng.random() < 0.04 else 1)
        if rng.random() < 0.05:  # its first status event goes first
            first = next(e for n, e in pending if e.key == event.key)
            pending.remove(next(p for p in pending if p[1] is first))
            yield first
            held = event
        else:
            yield event


BOOKSHOP_GENERATOR = Generator(
    name="bookshop",
    description="a bookshop's orders with their lines in an array (0 to 5; a few bad lines, redeliveries), on one topic feeding two facts",
    schema=BOOKSHOP_SCHEMA,
    events=generate_bookshop,
)


BOOKSHOP_PROGRESS_GENERATOR = Generator(
    name="bookshop-progress",
    description="the bookshop's orders and their status events (placed, paid, shipped, delivered, cancelled; late, repeated, a few before their order), on two topics feeding one accumulating snapshot",
    schema=BOOKSHOP_PROGRESS_SCHEMA,
    events=generate_bookshop_progress,
)


@hookimpl
def register_generators(register: Callable[[Generator], None]) -> None:
    """Built-in plugin: the bookshop generators."""
    register(BOOKSHOP_GENERATOR)
    register(BOOKSHOP_PROGRESS_GENERATOR)
