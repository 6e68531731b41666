"""A shop of three topics: customers as Debezium change events, and orders and payments that share the customer.

:data:`SHOP_SCHEMA` is the twin of ``examples/shop.yaml``: one star read from the topics
``shop.customers`` (change events of the operational table ``public.customers``),
``shop.orders`` and ``shop.payments``; both facts point at one ``DIM_CUSTOMER``
(conformed), whose region keeps history.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as DecimalNumber

import attrs

from starload.generators.base import Event, Generator
from starload.hookspecs import hookimpl
from starload.spec import (
    Carried,
    Check,
    DateDimension,
    Decimal,
    Dimension,
    Envelope,
    Fact,
    Field,
    Integer,
    Measure,
    StarSchema,
    String,
    Timestamp,
)

CUSTOMERS_TOPIC, ORDERS_TOPIC, PAYMENTS_TOPIC = "shop.customers", "shop.orders", "shop.payments"

SHOP_SCHEMA = StarSchema(
    name="shop",
    dimensions=[
        Dimension(
            name="customer",
            table="DIM_CUSTOMER",
            key="CUSTOMER_KEY",
            topic=CUSTOMERS_TOPIC,
            envelope=Envelope.DEBEZIUM,
            natural_key=[Field("CUSTOMER_ID", "id", Integer())],
            attributes=[
                Field("FIRST_NAME", "first_name"),
                Field("LAST_NAME", "last_name"),
                Field("EMAIL", "email"),
                Field("REGION", "region", history=True),
            ],
        ),
        Dimension(
            name="product",
            table="DIM_PRODUCT",
            key="PRODUCT_KEY",
            natural_key=[Field("PRODUCT_ID", "product_id", String(64))],
            attributes=[Field("PRODUCT_NAME", "product_name"), Field("CATEGORY", "category")],
        ),
    ],
    date_dimension=DateDimension("DIM_DATE", "DATE_KEY"),
    facts=[
        Fact(
            table="FACT_ORDERS",
            topic=ORDERS_TOPIC,
            grain=[Field("ORDER_ID", "order_id", String(64), required=True)],
            event_time=Field("ORDER_TIMESTAMP", "order_timestamp", Timestamp(), required=True),
            dimensions=["customer", "product"],
            carries=[Carried("customer", "CUSTOMER_ID", "customer_id")],
            columns=[
                Field("QUANTITY", "quantity", Integer(), required=True, check=Check.POSITIVE),
                Field("UNIT_PRICE", "unit_price", Decimal(18, 2), required=True, check=Check.NON_NEGATIVE),
            ],
            measures=[Measure("TOTAL_AMOUNT", ["UNIT_PRICE", "QUANTITY"], Decimal(18, 2))],
        ),
        Fact(
            table="FACT_PAYMENTS",
            topic=PAYMENTS_TOPIC,
            grain=[Field("PAYMENT_ID", "payment_id", String(64), required=True)],
            event_time=Field("PAID_AT", "paid_at", Timestamp(), required=True),
            dimensions=["customer"],
            carries=[Carried("customer", "CUSTOMER_ID", "payer.customer_id")],
            columns=[
                Field("ORDER_ID", "order_id", String(64), required=True),
                Field("AMOUNT", "amount", Decimal(18, 2), required=True, check=Check.NON_NEGATIVE),
                Field("METHOD", "method"),
            ],
        ),
    ],
)

#: The shop star with a customer of type 1 (no history): set against the type-1 orders star.
SHOP_TYPE1_SCHEMA = attrs.evolve(
    SHOP_SCHEMA,
    name="shop_type1",
    dimensions=[
        attrs.evolve(SHOP_SCHEMA.dimensions[0], attributes=[attrs.evolve(f, history=False) for f in SHOP_SCHEMA.dimensions[0].attributes]),
        *SHOP_SCHEMA.dimensions[1:],
    ],
)

REGIONS = ("EU", "US", "APAC", "LATAM")
_PRODUCTS = (("P1", "Wireless Mouse", "Accessories"), ("P2", "Mechanical Keyboard", "Accessories"), ("P3", "27in Monitor", "Electronics"))
_NAMES = (("Anne", "Kretchmar"), ("Sally", "Thomas"), ("George", "Bailey"), ("Edward", "Walker"), ("Aisha", "Khan"))


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate_shop(rng: random.Random, *, customers: int = 20, now: datetime | str | None = None, prefix: str = "") -> Iterator[Event]:
    """Endless shop events on the topics of :data:`SHOP_SCHEMA` (each named ``prefix`` + its own).

    First a snapshot of the customers table (``op: r``), missing a quarter of them:
    their first orders come before their record (``op: c``), so facts point at inferred
    members until it arrives. Then orders (about 70 %), payments of earlier orders (20 %),
    customers moving region (``op: u``, 5 %), a customer deleted now and then (``op: d``
    and its tombstone) and inserted again later, invalid orders (a quantity of 0, a reject) and redeliveries
    of an earlier order. Time runs forward from 30 days before ``now`` (default: the
    current time, or a fixed day for a seeded stream), a few seconds an event; everything
    else comes from ``rng``, so a seed reproduces the stream.
    """
    end = datetime.fromisoformat(now) if isinstance(now, str) else now or datetime.now(UTC)
    clock = int((end - timedelta(days=30)).timestamp() * 1000)
    topics = {name: prefix + name for name in (CUSTOMERS_TOPIC, ORDERS_TOPIC, PAYMENTS_TOPIC)}
    rows = {
        i: {"id": i, "first_name": _NAMES[i % len(_NAMES)][0], "last_name": _NAMES[i % len(_NAMES)][1],
            "email": f"customer{i}@example.com", "region": REGIONS[i % len(REGIONS)]}
        for i in range(1, customers + 1)
    }  # fmt: skip
    late = {i for i in rows if rng.random() < 0.25}
    known: set[int] = set()
    gone: set[int] = set()
    orders: list[dict[str, object]] = []
    placed = dict.fromkeys(late, 0)

    def change(op: str, row: dict[str, object] | None, before: dict[str, object] | None = None) -> Event:
        payload = {"before": before, "after": row, "op": op, "ts_ms": clock,
                   "source": {"connector": "postgresql", "name": "shop", "schema": "public", "table": "customers", "ts_ms": clock, "snapshot": op == "r"}}  # fmt: skip
        key = str((row or before or {})["id"]).encode()
        return Event(key, payload, topics[CUSTOMERS_TOPIC])

    for i, row in rows.items():
        if i not in late:
            known.add(i)
            yield change("r", row)
    while True:
        clock += rng.randrange(1_000, 120_000)
        draw = rng.random()
        alive = sorted(known | {i for i in late if placed.get(i, 0) < 3})
        if draw < 0.05 and known:
            who = rng.choice(sorted(known))
            before = dict(rows[who])
            rows[who] = {**rows[who], "region": rng.choice(REGIONS)}
            yield change("u", rows[who], before)
        elif draw < 0.055 and len(known) > 2:
            who = rng.choice(sorted(known))
            known.discard(who)
            gone.add(who)
            yield change("d", None, {"id": who})
            yield Event(str(who).encode(), None, topics[CUSTOMERS_TOPIC])  # the tombstone
        elif draw < 0.06 and gone:
            who = rng.choice(sorted(gone))  # the same id inserted again
            gone.discard(who)
            known.add(who)
            yield change("c", rows[who])
        elif draw < 0.26 and orders:
            paid = rng.choice(orders)
            payment_id = f"Y{rng.getrandbits(64):016x}"
            value = {"payment_id": payment_id, "paid_at": _at(clock), "payer": {"customer_id": paid["customer_id"]},
                     "order_id": paid["order_id"], "amount": paid["amount"], "method": rng.choice(("card", "transfer", "wallet"))}  # fmt: skip
            yield Event(payment_id.encode(), value, topics[PAYMENTS_TOPIC])
        elif draw < 0.27 and orders:
            again = rng.choice(orders)
            yield Event(str(again["order_id"]).encode(), again["message"], topics[ORDERS_TOPIC])  # type: ignore[arg-type]
        elif alive:
            who = rng.choice(alive)
            product_id, name, category = rng.choice(_PRODUCTS)
            quantity = 0 if rng.random() < 0.02 else rng.randint(1, 5)
            price = f"{rng.randrange(500, 20_000) / 100:.2f}"
            order_id = f"O{rng.getrandbits(64):016x}"
            value = {"order_id": order_id, "order_timestamp": _at(clock), "customer_id": who, "product_id": product_id,
                     "product_name": name, "category": category, "quantity": quantity, "unit_price": price}  # fmt: skip
            yield Event(order_id.encode(), value, topics[ORDERS_TOPIC])
            if quantity:
                amount = str(DecimalNumber(price) * quantity)
                orders.append({"order_id": order_id, "customer_id": who, "amount": amount, "message": value})
            if who in placed:
                placed[who] += 1
                if placed[who] == 3:  # its record arrives, after its first orders
                    del placed[who]
                    known.add(who)
                    yield change("c", rows[who])


SHOP_GENERATOR = Generator(
    name="shop",
    description="a shop on three topics: customers as Debezium change events (snapshot, late records, moves, deletes), orders, payments",
    schema=SHOP_SCHEMA,
    events=generate_shop,
)


@hookimpl
def register_generators(register: Callable[[Generator], None]) -> None:
    """Built-in plugin: the shop generator."""
    register(SHOP_GENERATOR)
