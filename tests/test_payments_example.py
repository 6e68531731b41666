"""The README walk-through, over the real local broker: produce a JSON Lines file, load it with a spec file
(YAML into DuckDB, TOML into the local Snowflake endpoint), and find every column of the right type."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
from confluent_kafka import Consumer, TopicPartition
from conftest import snowflake_reader
from test_integration import run_cli

from starload.kafka import consumer_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LINES = (EXAMPLES / "payments.jsonl").read_text().splitlines()
#: What the sample file holds: 7 payments load, 5 lines are rejects (one reason each, naming its path).
REASONS = {
    6: "is_refund: expected true or false",
    7: "merchant: expected an object; merchant.id: missing",
    8: "amount: must be >= 0",
    9: "settled_on: expected an ISO date string (YYYY-MM-DD)",
    11: "fx.rate: expected a finite JSON number, not a string",
}
TYPES = {
    "PAYMENT_ID": "VARCHAR",
    "PAID_AT": "TIMESTAMP WITH TIME ZONE",
    "AMOUNT": "DECIMAL(12,2)",
    "CURRENCY": "VARCHAR",
    "IS_REFUND": "BOOLEAN",
    "FX_RATE": "DOUBLE",
    "SETTLED_ON": "DATE",
    "MERCHANT_KEY": "BIGINT",
    "DATE_KEY": "INTEGER",
}
FACTS_SQL = """SELECT f."PAYMENT_ID", m."MERCHANT_ID", m."MERCHANT_NAME", m."COUNTRY", f."PAID_AT", f."AMOUNT",
                      f."CURRENCY", f."IS_REFUND", f."FX_RATE", f."SETTLED_ON", f."DATE_KEY"
               FROM "FACT_PAYMENTS" f JOIN "DIM_MERCHANT" m ON m."MERCHANT_KEY" = f."MERCHANT_KEY" ORDER BY 1"""


def expected_facts() -> list[tuple]:
    rows = []
    for offset, line in enumerate(LINES):
        if offset in REASONS:
            continue
        p = json.loads(line)
        paid = datetime.fromisoformat(p["paid_at"]).astimezone(UTC)
        settled = date.fromisoformat(p["settled_on"]) if "settled_on" in p else None
        rows.append((
            p["payment_id"], p["merchant"]["id"], Decimal(str(p["amount"])), p["currency"], p["is_refund"],
            p.get("fx", {}).get("rate"), settled, paid, int(paid.strftime("%Y%m%d")),
        ))
    return rows


def normalised(rows: list[tuple]) -> list[tuple]:
    return [
        (pid, mid, Decimal(str(amount)), cur, refund, rate, settled, paid.astimezone(UTC), key)
        for pid, mid, _name, _country, paid, amount, cur, refund, rate, settled, key in rows
    ]


def produce_sample(bootstrap: str, topic: str) -> None:
    done = run_cli("produce", "--bootstrap-servers", bootstrap, "--topic", topic, "--file", str(EXAMPLES / "payments.jsonl"),
                   "--key-field", "merchant.id", "--partitions", "1")
    assert done.returncode == 0, done.stderr
    assert f"produced {len(LINES)} messages from" in done.stdout


def test_produce_file_sends_each_line_as_written_keyed_by_a_nested_field(local_broker):
    produce_sample(local_broker.bootstrap_servers, "payments-raw")
    consumer = Consumer(consumer_config(local_broker.bootstrap_servers, "raw-reader"))
    consumer.assign([TopicPartition("payments-raw", 0, 0)])
    got = []
    while len(got) < len(LINES):
        got += [m for m in consumer.consume(50, timeout=5) if m.error() is None]
    consumer.close()
    assert [m.value().decode() for m in got] == LINES
    assert [m.key() for m in got][:3] == [b"M-1", b"M-2", b"M-1"]
    assert got[7].key() is None  # "merchant" is a string there: no merchant.id


def test_the_payments_walkthrough_loads_into_duckdb_with_every_type(local_broker, tmp_path):
    produce_sample(local_broker.bootstrap_servers, "payments")
    db = tmp_path / "payments.duckdb"
    loaded = run_cli(
        "load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "payments", "--group", "walk",
        "--spec", str(EXAMPLES / "payments.yaml"), "--duckdb-path", str(db), "--until-idle", "2",
    )
    assert loaded.returncode == 0, loaded.stderr
    summary = dict(line.split(": ", 1) for line in loaded.stdout.strip().splitlines())
    assert (summary["facts loaded"], summary["rejected"]) == ("7", "5")
    with duckdb.connect(str(db), read_only=True) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'FACT_PAYMENTS'").fetchall())
        assert {c: types[c] for c in TYPES} == TYPES
        dim = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'DIM_MERCHANT'").fetchall())
        assert (dim["MERCHANT_ID"], dim["COUNTRY"]) == ("VARCHAR", "VARCHAR")
        rows = con.execute(FACTS_SQL).fetchall()
        assert normalised(rows) == expected_facts()
        assert dict(con.execute('SELECT "KAFKA_OFFSET", "REASON" FROM "STARLOAD_REJECTS"').fetchall()) == REASONS
        merchants = con.execute('SELECT "MERCHANT_ID", "MERCHANT_NAME", "COUNTRY" FROM "DIM_MERCHANT" ORDER BY 1').fetchall()
    assert merchants == [("M-1", "Corner Books", "GB"), ("M-2", "Kaffeehaus Wien", "AT"), ("M-3", "Diner 66", "US"), ("M-4", "Ramen Ya", "JP")]
    shown = run_cli("offsets", "show", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "payments", "--group", "walk",
                    "--spec", str(EXAMPLES / "payments.yaml"), "--duckdb-path", str(db))
    assert shown.returncode == 0, shown.stderr
    assert f"│ 0         │ {len(LINES)}" in shown.stdout and "ok" in shown.stdout


def test_the_toml_twin_loads_into_the_local_snowflake_endpoint_with_every_type(local_broker, snowflake_environment, snowflake_settings):
    produce_sample(local_broker.bootstrap_servers, "payments-sf")
    loaded = run_cli(
        "load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "payments-sf", "--group", "walk-sf",
        "--spec", str(EXAMPLES / "payments.toml"), "--sink", "snowflake", "--until-idle", "2",
        env={**os.environ, **snowflake_environment},
    )
    assert loaded.returncode == 0, loaded.stderr
    reader = snowflake_reader(snowflake_settings)
    try:
        cursor = reader.cursor()
        rows = cursor.execute(FACTS_SQL).fetchall()
        assert normalised(rows) == expected_facts()
        assert [d[0] for d in cursor.description] == ["PAYMENT_ID", "MERCHANT_ID", "MERCHANT_NAME", "COUNTRY", "PAID_AT", "AMOUNT",
                                                     "CURRENCY", "IS_REFUND", "FX_RATE", "SETTLED_ON", "DATE_KEY"]
        # The connector's own type codes (snowflake.connector.constants.FIELD_TYPES): what the columns are, not what Python made of them.
        from snowflake.connector.constants import FIELD_ID_TO_NAME

        kinds = {d[0]: FIELD_ID_TO_NAME[d[1]] for d in cursor.description}
        assert (kinds["AMOUNT"], kinds["IS_REFUND"], kinds["FX_RATE"], kinds["SETTLED_ON"]) == ("FIXED", "BOOLEAN", "REAL", "DATE")
        assert kinds["PAID_AT"].startswith("TIMESTAMP")
        assert dict(cursor.execute('SELECT "KAFKA_OFFSET", "REASON" FROM "STARLOAD_REJECTS"').fetchall()) == REASONS
    finally:
        reader.close()
