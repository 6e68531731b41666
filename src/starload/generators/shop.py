"""A shop of three topics: customers as Debezium change events, and orders and payments that share the customer.

:data:`SHOP_SCHEMA` is the twin of ``examples/shop.yaml``: one star read from the topics
``shop.customers`` (change events of the operational table ``public.customers``),
``shop.orders`` and ``shop.payments``; both facts point at one ``DIM_CUSTOMER``
(conformed), whose region keeps history.
"""

from __future__ import annotations

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
