"""The warehouse remembers its star: a drifted spec or table stops a loader before it consumes anything,
additive changes migrate (`starload migrate`), everything else is refused; over the real local broker,
on DuckDB and on the local Snowflake endpoint."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import snowflake_reader
from test_integration import run_cli
from test_payments_example import EXAMPLES, produce_sample

from starload.drift import fingerprint
from starload.kafka import ensure_topic
from starload.spec import StarSchema, position_column

PAYMENTS_YAML = (EXAMPLES / "payments.yaml").read_text()
#: Additive changes: a new nullable fact column, a new attribute, a new optional dimension, a wider string and decimal.
ADDITIVE = {
    "      - {column: COUNTRY, source: merchant.country, type: string(2)}\n":
        "      - {column: COUNTRY, source: merchant.country, type: string(3)}\n"
        "      - {column: CITY, source: merchant.city}\n"
        "  - name: customer\n    table: DIM_PAYER\n    key: PAYER_KEY\n"
        "    natural_key: [{column: PAYER_ID, source: payer.id}]\n    attributes: [{column: PAYER_NAME, source: payer.name}]\n",
    "  dimensions: [merchant]\n": "  dimensions: [merchant, customer]\n  optional_dimensions: [customer]\n",
    'type: "decimal(12,2)"': 'type: "decimal(14,2)"',
    "    - {column: SETTLED_ON, source: settled_on, type: date}\n":
        "    - {column: SETTLED_ON, source: settled_on, type: date}\n    - {column: CHANNEL, source: channel}\n",
}


def variant(tmp_path: Path, name: str, changes: dict[str, str]) -> Path:
    text = PAYMENTS_YAML
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


class Warehouse:
    """One sink's CLI arguments and a way to read what it holds."""

    def __init__(self, kind: str, tmp_path: Path, env: dict[str, str], settings: dict[str, Any] | None) -> None:
        self.kind, self.env, self.settings = kind, env, settings
        self.db = tmp_path / "payments.duckdb"
        self.args = ["--sink", "snowflake"] if kind == "snowflake" else ["--duckdb-path", str(self.db)]

    def rows(self, sql: str) -> list[tuple]:
        if self.kind == "snowflake":
            reader = snowflake_reader(self.settings or {})
            try:
                return [tuple(r) for r in reader.cursor().execute(sql).fetchall()]
            finally:
                reader.close()
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()

    def run(self, sql: str) -> None:
        if self.kind == "snowflake":
            reader = snowflake_reader(self.settings or {})
            try:
                reader.cursor().execute(sql)
            finally:
                reader.close()
        else:
            with duckdb.connect(str(self.db)) as con:
                con.execute(sql)


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    if request.param == "snowflake":
        env = {**os.environ, **request.getfixturevalue("snowflake_environment")}
        return Warehouse("snowflake", tmp_path, env, request.getfixturevalue("snowflake_settings"))
    return Warehouse("duckdb", tmp_path, dict(os.environ), None)


def load(bootstrap: str, topic: str, spec: Path, warehouse: Warehouse, *extra: str):
    return run_cli(
        "load", "--bootstrap-servers", bootstrap, "--topic", topic, "--group", "drift", "--spec", str(spec),
        *warehouse.args, "--until-idle", "2", *extra, env=warehouse.env,
    )


def stored(warehouse: Warehouse) -> list[tuple]:
    return warehouse.rows('SELECT "KAFKA_PARTITION", "NEXT_OFFSET" FROM "STARLOAD_OFFSETS" ORDER BY 1')


def test_a_changed_spec_stops_the_loader_before_it_consumes_anything(local_broker, tmp_path, warehouse):
    bootstrap, topic = local_broker.bootstrap_servers, f"drift-{warehouse.kind}"
    produce_sample(bootstrap, topic)
    first = load(bootstrap, topic, EXAMPLES / "payments.yaml", warehouse)
    assert first.returncode == 0, first.stderr
    assert not Path(f"{warehouse.db}.loader").exists(), "the lock file outlives a clean exit"
    [(star, digest, spec)] = warehouse.rows('SELECT "STAR", "FINGERPRINT", "SPEC" FROM "STARLOAD_STARS"')
    recorded = StarSchema.from_dict(json.loads(spec))
    assert (star, digest, recorded) == ("payments", fingerprint(recorded), StarSchema.from_file(EXAMPLES / "payments.yaml"))
    before = stored(warehouse)
    produce_sample(bootstrap, topic)  # more to consume: a loader that consumed would move the offsets
    drifted = variant(tmp_path, "drifted", {
        "{column: IS_REFUND, source: is_refund, type: boolean}": "{column: IS_REFUND, source: is_refund, type: integer}",
        "{column: COUNTRY, source: merchant.country": "{column: COUNTRY_CODE, source: merchant.country",
        "source: currency": "source: money.currency",
    })
    done = load(bootstrap, topic, drifted, warehouse)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("starload: error: ")):]  # after the connector's log lines
    assert "holds star 'payments' otherwise than the spec says (4 differences); nothing was consumed" in lines[0]
    integer = "NUMBER(38, 0)" if warehouse.kind == "snowflake" else "BIGINT"
    text = "VARCHAR(2)" if warehouse.kind == "snowflake" else "VARCHAR"
    assert sorted(lines[1:5]) == sorted([
        f"  FACT_PAYMENTS.IS_REFUND: BOOLEAN in the warehouse, {integer} in the spec (cannot be migrated)",
        f"  DIM_MERCHANT.COUNTRY_CODE: not in the warehouse, {text} nullable in the spec (renamed from COUNTRY?)",
        f"  DIM_MERCHANT.COUNTRY: {text} in the warehouse, not in the spec (a column removed or renamed) (cannot be migrated)",
        "  FACT_PAYMENTS.CURRENCY: source 'currency' in the recorded spec, 'money.currency' in this one (cannot be migrated)",
    ])
    assert lines[5].startswith("3 cannot be migrated: change the spec back; or give the star a new name")
    assert stored(warehouse) == before
    # Checked before the broker is even asked: a loader with an unreachable broker says the same.
    offline = load("127.0.0.1:1", topic, drifted, warehouse, "--startup-timeout", "1")
    assert offline.returncode == 2 and "otherwise than the spec says" in offline.stderr, offline.stderr


def test_a_table_changed_by_hand_stops_the_loader(local_broker, tmp_path, warehouse):
    bootstrap, topic = local_broker.bootstrap_servers, f"altered-{warehouse.kind}"
    produce_sample(bootstrap, topic)
    assert load(bootstrap, topic, EXAMPLES / "payments.yaml", warehouse).returncode == 0
    warehouse.run('ALTER TABLE "FACT_PAYMENTS" DROP COLUMN "FX_RATE"')
    warehouse.run('ALTER TABLE "FACT_PAYMENTS" ADD COLUMN "FX_RATE" VARCHAR')
    done = load(bootstrap, topic, EXAMPLES / "payments.yaml", warehouse)
    assert done.returncode == 2
    double = "FLOAT" if warehouse.kind == "snowflake" else "DOUBLE"
    assert f"\n  FACT_PAYMENTS.FX_RATE: VARCHAR in the warehouse, {double} in the spec (cannot be migrated)\n" in done.stderr


def migrate(spec: Path, warehouse: Warehouse, *extra: str):
    return run_cli("migrate", "--spec", str(spec), *warehouse.args, *extra, env=warehouse.env)


def test_additive_changes_migrate_and_rows_loaded_before_get_null_or_the_unknown_member(local_broker, tmp_path, warehouse):
    bootstrap, topic = local_broker.bootstrap_servers, f"migrate-{warehouse.kind}"
    produce_sample(bootstrap, topic)
    assert load(bootstrap, topic, EXAMPLES / "payments.yaml", warehouse).returncode == 0
    grown = variant(tmp_path, "grown", ADDITIVE)
    refused = load(bootstrap, topic, grown, warehouse)
    assert refused.returncode == 2 and "every difference is additive: `starload migrate`" in refused.stderr, refused.stderr
    dry = migrate(grown, warehouse)
    assert dry.returncode == 0, dry.stderr
    assert 'ALTER TABLE "FACT_PAYMENTS" ADD COLUMN IF NOT EXISTS "CHANNEL" VARCHAR' in dry.stdout
    assert 'ALTER TABLE "DIM_MERCHANT" ADD COLUMN IF NOT EXISTS "CITY" VARCHAR' in dry.stdout
    assert 'CREATE TABLE IF NOT EXISTS "DIM_PAYER"' in dry.stdout
    assert 'ADD COLUMN IF NOT EXISTS "PAYER_KEY"' in dry.stdout and "DEFAULT -1" in dry.stdout
    assert 'ALTER COLUMN "AMOUNT" SET DATA TYPE' in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert [c for (c,) in warehouse.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'FACT_PAYMENTS'"
    )].count("CHANNEL") == 0
    done = migrate(grown, warehouse, "--execute")
    assert done.returncode == 0, done.stderr
    assert "migrated star 'payments'" in done.stdout and fingerprint(StarSchema.from_file(grown)) in done.stdout
    assert migrate(grown, warehouse).stdout.startswith("nothing to migrate: ")
    # New events carry the new fields; the old ones were loaded before.
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({
        "payment_id": "P-9001", "paid_at": "2026-03-05T10:00:00Z", "merchant": {"id": "M-1", "city": "London"},
        "payer": {"id": "C-7", "name": "Ada"}, "amount": "123456789012.34", "channel": "web",
    }) + "\n")
    sent = run_cli("produce", "--bootstrap-servers", bootstrap, "--topic", topic, "--file", str(new))
    assert sent.returncode == 0, sent.stderr
    again = load(bootstrap, topic, grown, warehouse)
    assert again.returncode == 0, again.stderr
    assert "facts loaded: 1" in again.stdout
    rows = warehouse.rows(
        'SELECT f."PAYMENT_ID", f."CHANNEL", f."PAYER_KEY", p."PAYER_NAME", f."AMOUNT" FROM "FACT_PAYMENTS" f '
        'JOIN "DIM_PAYER" p ON p."PAYER_KEY" = f."PAYER_KEY" ORDER BY 1'
    )
    assert len(rows) == 8
    assert [r[1:4] for r in rows[:7]] == [(None, -1, None)] * 7  # loaded before: NULL, and the unknown member
    assert rows[7][0] == "P-9001" and rows[7][1] == "web" and rows[7][2] > 0 and rows[7][3] == "Ada"
    assert Decimal(str(rows[7][4])) == Decimal("123456789012.34")  # 14 digits: the widened decimal
    assert ("M-1", "London") in warehouse.rows('SELECT "MERCHANT_ID", "CITY" FROM "DIM_MERCHANT"')


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"type: string(2)}": "type: string(1)}"}, "DIM_MERCHANT.COUNTRY: "),
        ({"{column: IS_REFUND, source: is_refund, type: boolean}": "{column: IS_REFUND, source: is_refund, type: string}"}, "FACT_PAYMENTS.IS_REFUND: "),
        ({"    - {column: SETTLED_ON, source: settled_on, type: date}\n": ""}, "FACT_PAYMENTS.SETTLED_ON: "),
        ({"{column: CURRENCY, source: currency, type: string(3)}": "{column: CURRENCY, source: currency, type: string(3), required: true}"}, "FACT_PAYMENTS.CURRENCY: "),
    ],
    ids=["narrowed", "type-changed", "column-removed", "made-required"],
)
def test_other_changes_are_refused_with_what_to_do(local_broker, tmp_path, change, line):
    bootstrap, topic = local_broker.bootstrap_servers, f"refuse-{tmp_path.name[-12:]}"
    ensure_topic(bootstrap, topic, partitions=1)
    produce_sample(bootstrap, topic)
    duck = Warehouse("duckdb", tmp_path, dict(os.environ), None)
    assert load(bootstrap, topic, EXAMPLES / "payments.yaml", duck).returncode == 0
    done = migrate(variant(tmp_path, "changed", change), duck, "--execute")
    assert done.returncode == 2, done.stdout
    assert f"\n  {line}" in done.stderr and "(cannot be migrated)" in done.stderr
    assert "give the star a new name" in done.stderr and "`starload rebuild` with the same --spec" in done.stderr
    [(digest,)] = duck.rows('SELECT "FINGERPRINT" FROM "STARLOAD_STARS"')
    assert digest == fingerprint(StarSchema.from_file(EXAMPLES / "payments.yaml"))


def test_a_star_whose_tables_were_all_dropped_is_rebuilt_from_the_topic(local_broker, tmp_path):
    bootstrap, topic = local_broker.bootstrap_servers, "rebuild"
    produce_sample(bootstrap, topic)
    duck = Warehouse("duckdb", tmp_path, dict(os.environ), None)
    assert load(bootstrap, topic, EXAMPLES / "payments.yaml", duck).returncode == 0
    for table in ("FACT_PAYMENTS", "DIM_MERCHANT", "DIM_DATE"):
        duck.run(f'DROP TABLE "{table}"')
    changed = variant(tmp_path, "changed", {"source: currency": "source: currency_code"})  # not migratable
    reset = run_cli("offsets", "reset", "--bootstrap-servers", bootstrap, "--topic", topic, "--group", "drift",
                    "--spec", str(changed), *duck.args, "--to", "earliest", "--execute")
    assert reset.returncode == 0, reset.stderr
    again = load(bootstrap, topic, changed, duck)
    assert again.returncode == 0, again.stderr
    assert "facts loaded: 7" in again.stdout
    [(digest,)] = duck.rows('SELECT "FINGERPRINT" FROM "STARLOAD_STARS"')
    assert digest == fingerprint(StarSchema.from_file(changed))


def test_a_star_made_before_positions_were_kept_is_refused_then_migrated(local_broker, tmp_path, warehouse):
    """A star of an earlier starload has no position columns: the loader names them, `migrate` adds them (values loaded before count as oldest)."""
    bootstrap, topic = local_broker.bootstrap_servers, f"positions-{warehouse.kind}"
    produce_sample(bootstrap, topic)
    spec = EXAMPLES / "payments.yaml"
    assert load(bootstrap, topic, spec, warehouse).returncode == 0
    for column in ("MERCHANT_NAME", "COUNTRY"):
        warehouse.run(f'ALTER TABLE "DIM_MERCHANT" DROP COLUMN "{position_column(column)}"')
    refused = load(bootstrap, topic, spec, warehouse)
    assert refused.returncode == 2, refused.stderr
    for column in ("MERCHANT_NAME", "COUNTRY"):
        assert (
            f"\n  DIM_MERCHANT.{position_column(column)}: not in the warehouse, VARCHAR nullable kept by starload "
            "(a star made by an earlier version has none)\n"
        ) in refused.stderr
    assert "every difference is additive: `starload migrate`" in refused.stderr
    done = migrate(spec, warehouse, "--execute")
    assert done.returncode == 0, done.stderr
    late = tmp_path / "late.jsonl"  # older than every event loaded: still wins over a value without a position
    late.write_text(json.dumps({"payment_id": "P-late", "paid_at": "2001-01-01T00:00:00Z", "merchant": {"id": "M-1", "country": "FR"}, "amount": "1.00"}) + "\n")
    assert run_cli("produce", "--bootstrap-servers", bootstrap, "--topic", topic, "--file", str(late)).returncode == 0
    again = load(bootstrap, topic, spec, warehouse)
    assert again.returncode == 0, again.stderr
    assert warehouse.rows('SELECT "MERCHANT_NAME", "COUNTRY" FROM "DIM_MERCHANT" WHERE "MERCHANT_ID" = \'M-1\'') == [("Corner Books", "FR")]
