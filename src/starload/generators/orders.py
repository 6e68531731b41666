"""The seed's e-commerce orders: their star schema and a seeded order generator.

The messages carry exactly the seed's field names::

    {"order_id": "O…", "order_timestamp": "2023-10-01T12:34:56Z", "customer_id": "C1",
     "customer_name": "Ali Raza", "customer_region": "Punjab", "shipping_region": "Sindh",
     "product_id": "P1", "product_name": "Wireless Mouse", "category": "Accessories",
     "price": 2500, "quantity": 3}
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import attrs

from starload.generators.base import Event, Generator
from starload.hookspecs import hookimpl
from starload.spec import (
    Check,
    DateDimension,
    Decimal,
    Dimension,
    Fact,
    Field,
    Integer,
    Measure,
    StarSchema,
    String,
    Timestamp,
)

ORDERS_SCHEMA = StarSchema(
    name="orders",
    dimensions=[
        Dimension(
            name="customer",
            table="DIM_CUSTOMER",
            key="CUSTOMER_KEY",
            natural_key=[Field("CUSTOMER_ID", "customer_id", String(64))],
            attributes=[
                Field("CUSTOMER_NAME", "customer_name"),
                Field("CUSTOMER_REGION", "customer_region"),
            ],
        ),
        Dimension(
            name="product",
            table="DIM_PRODUCT",
            key="PRODUCT_KEY",
            natural_key=[Field("PRODUCT_ID", "product_id", String(64))],
            attributes=[
                Field("PRODUCT_NAME", "product_name"),
                Field("CATEGORY", "category"),
                Field("PRICE", "price", Decimal(18, 2), required=True, check=Check.NON_NEGATIVE),
            ],
        ),
    ],
    date_dimension=DateDimension("DIM_DATE", "DATE_KEY"),
    fact=Fact(
        table="FACT_ORDERS",
        grain=[Field("ORDER_ID", "order_id", String(64), required=True)],
        event_time=Field("ORDER_TIMESTAMP", "order_timestamp", Timestamp(), required=True),
        dimensions=["customer", "product"],
        columns=[
            Field("QUANTITY", "quantity", Integer(), required=True, check=Check.POSITIVE),
            Field("UNIT_PRICE", "price", Decimal(18, 2), required=True, check=Check.NON_NEGATIVE),
            Field("SHIPPING_REGION", "shipping_region"),
        ],
        measures=[Measure("TOTAL_AMOUNT", ["UNIT_PRICE", "QUANTITY"], Decimal(18, 2))],
    ),
)

#: The orders star keeping the history of each customer's region (SCD type 2; the name stays
#: type 1): the twin of ``examples/orders_history.yaml``. Facts point at the customer's
#: version in force at the order's time.
ORDERS_HISTORY_SCHEMA = attrs.evolve(
    ORDERS_SCHEMA,
    name="orders_history",
    dimensions=[
        attrs.evolve(
            ORDERS_SCHEMA.dimensions[0],
            attributes=[
                Field("CUSTOMER_NAME", "customer_name"),
                Field("CUSTOMER_REGION", "customer_region", history=True),
            ],
        ),
        ORDERS_SCHEMA.dimensions[1],
    ],
)

REGIONS = ("Punjab", "Sindh", "Khyber Pakhtunkhwa", "Balochistan", "Islamabad")
_PRODUCTS = (
    ("Wireless Mouse", "Accessories", 2500),
    ("Mechanical Keyboard", "Accessories", 8500),
    ("27in Monitor", "Electronics", 65000),
    ("USB-C Hub", "Accessories", 4200),
    ("Noise Cancelling Headphones", "Electronics", 32000),
)
_FIRST_NAMES = ("Ali", "Ayesha", "Bilal", "Fatima", "Hamza", "Sana", "Usman", "Zainab")
_LAST_NAMES = ("Raza", "Khan", "Ahmed", "Malik", "Siddiqui", "Butt")


def _products(count: int) -> list[dict[str, object]]:
    products = []
    for i in range(count):
        name, category, price = _PRODUCTS[i % len(_PRODUCTS)]
        series = i // len(_PRODUCTS)
        products.append(
            {
                "product_id": f"P{i + 1}",
                "product_name": name if series == 0 else f"{name} Mk{series + 1}",
                "category": category,
                "price": price + 500 * series,
            }
        )
    return products


def _customers(count: int) -> list[dict[str, object]]:
    return [
        {
            "customer_id": f"C{i + 1}",
            "customer_name": f"{_FIRST_NAMES[i % len(_FIRST_NAMES)]} {_LAST_NAMES[(i // len(_FIRST_NAMES)) % len(_LAST_NAMES)]}",
            "customer_region": REGIONS[i % len(REGIONS)],
        }
        for i in range(count)
    ]


def generate_orders(
    rng: random.Random,
    *,
    products: int = 5,
    customers: int = 5,
    now: datetime | str | None = None,
    moves: int = 0,
) -> Iterator[Event]:
    """Endless orders: random product and customer, quantity 1–5, time in the 30 days before ``now``.

    ``moves``: each customer moves to the next region this many times over the 30 days
    (at the same instants for everyone), so that the order's time says where they lived:
    history for :data:`ORDERS_HISTORY_SCHEMA`. Orders come in random time order, so a
    customer's moves arrive shuffled.

    Everything comes from ``rng`` and ``now`` (default: the current time, or a fixed
    day for a seeded stream, see :meth:`Generator.stream`; an ISO-8601 string is
    accepted, e.g. ``--option now=2024-06-01T00:00:00Z``), so a seed reproduces the
    stream exactly and a second run with the same seed produces orders that load once.
    """
    catalogue = _products(products)
    people = _customers(customers)
    end = datetime.fromisoformat(now) if isinstance(now, str) else now or datetime.now(UTC)
    span = int(timedelta(days=30).total_seconds())
    while True:
        order_id = f"O{rng.getrandbits(64):016x}"
        ago = rng.randrange(span)
        when = end - timedelta(seconds=ago)
        person = rng.choice(people)
        if moves:
            home = REGIONS.index(str(person["customer_region"]))
            person = {**person, "customer_region": REGIONS[(home + (span - 1 - ago) * (moves + 1) // span) % len(REGIONS)]}
        order = {
            "order_id": order_id,
            "order_timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **person,
            "shipping_region": rng.choice(REGIONS),
            **rng.choice(catalogue),
            "quantity": rng.randint(1, 5),
        }
        # Keep the seed's field order exactly.
        yield Event(key=order_id.encode(), value={k: order[k] for k in ORDER_FIELDS})


ORDER_FIELDS = (
    "order_id",
    "order_timestamp",
    "customer_id",
    "customer_name",
    "customer_region",
    "shipping_region",
    "product_id",
    "product_name",
    "category",
    "price",
    "quantity",
)

ORDERS_GENERATOR = Generator(
    name="orders",
    description="the seed's mock e-commerce orders (5 products, 5 customers by default)",
    schema=ORDERS_SCHEMA,
    events=generate_orders,
)


@hookimpl
def register_generators(register: Callable[[Generator], None]) -> None:
    """Built-in plugin: the orders generator."""
    register(ORDERS_GENERATOR)
