"""docker-compose.yml, the Dockerfile and .env.example, checked without Docker.

Docker does not run here, so the compose file is parsed and held to what ``docker
compose`` needs (profiles, healthchecks, ``depends_on`` conditions, defaults for every
variable), each app service's command is parsed by starload's own argument parser, and
the producer's and the DuckDB loader's commands are run as they are written against the
local broker (with the compose variables set the way a user would set them).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import yaml

from starload.cli import build_parser
from starload.kafka import ensure_topic

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

APP_SERVICES = ("producer", "loader", "loader-duckdb")
PROFILES = {
    "kafka": [],
    "kafka-setup": [],
    "producer": [],
    "loader": [],
    "loader-duckdb": ["duckdb"],
    "zookeeper": ["zookeeper"],
    "kafka-zk": ["zookeeper"],
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRETS = ("SNOWFLAKE_PASSWORD", "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE")

#: Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME-default}``.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value: object, env: Mapping[str, str] | None = None) -> str:
    """``value`` with every variable replaced as compose does, from ``env`` or the default."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"]
        if name in env and (env[name] or op == "-"):
            return env[name]
        assert op is not None, f"${{{name}}} has no default: `docker compose` would need it set"
        return default

    return VARIABLE.sub(replace, str(value))


def command(service: str, env: Mapping[str, str] | None = None) -> list[str]:
    """A service's command after interpolation (exec form: a list, no shell)."""
    cmd = SERVICES[service]["command"]
    assert isinstance(cmd, list), f"{service}: write the command as a list (exec form), not a shell string"
    return [interpolate(arg, env) for arg in cmd]


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def with_option(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced (or the flag appended)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def depends_on(service: str) -> dict[str, dict[str, Any]]:
    deps = SERVICES[service].get("depends_on", {})
    assert isinstance(deps, dict), f"{service}: depends_on must name a condition for each service (long form)"
    return deps


def run_cli(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "starload.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)


# --- the compose file -------------------------------------------------------------------


def test_services_and_profiles():
    assert {name: svc.get("profiles", []) for name, svc in SERVICES.items()} == PROFILES
    assert set(COMPOSE.get("volumes", {})) >= {"duckdb-data"}


def test_brokers_kraft_by_default_and_zookeeper_in_its_profile():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]

    zk_broker = SERVICES["kafka-zk"]
    assert zk_broker["environment"]["KAFKA_ZOOKEEPER_CONNECT"] == "zookeeper:2181"
    assert "KAFKA_PROCESS_ROLES" not in zk_broker["environment"]
    assert "PLAINTEXT://kafka-zk:9092" in zk_broker["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert depends_on("kafka-zk") == {"zookeeper": {"condition": "service_healthy"}}
    # Each broker advertises what the app services are told to use (by default, or with
    # BOOTSTRAP_SERVERS=kafka-zk:9092 in the zookeeper profile).
    for service in APP_SERVICES:
        assert option(command(service), "--bootstrap-servers") == "kafka:9092"
        zk_args = command(service, {"BOOTSTRAP_SERVERS": "kafka-zk:9092"})
        assert option(zk_args, "--bootstrap-servers") == "kafka-zk:9092"


def test_start_order_comes_from_healthchecks_and_conditions():
    for name, svc in SERVICES.items():
        for dep, spec in depends_on(name).items():
            assert dep in SERVICES, f"{name} depends on undefined service {dep}"
            assert spec.get("condition") in CONDITIONS, f"{name} -> {dep}: needs a condition"
            target = SERVICES[dep]
            if spec["condition"] == "service_healthy":
                test = target.get("healthcheck", {}).get("test")
                assert test and test[0] in ("CMD", "CMD-SHELL"), f"{dep} needs a healthcheck for {name}"
            if spec["condition"] == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dep} must be a one-shot service"
            # Compose refuses the whole project when a service that runs requires one its
            # profiles switched off ("depends on undefined service").
            if target.get("profiles") and spec.get("required", True):
                assert set(svc.get("profiles", [])) <= set(target["profiles"]), (
                    f"{name} requires {dep}, which only runs with --profile {target['profiles']}"
                )

    # Long-running services: healthy themselves, or started only once what they need is ready.
    for name, svc in SERVICES.items():
        if svc.get("restart", "no") != "no":
            has_conditions = any(s["condition"] != "service_started" for s in depends_on(name).values())
            assert "healthcheck" in svc or has_conditions, f"{name}: no healthcheck and no depends_on condition"
    for broker in ("kafka", "kafka-zk", "zookeeper"):
        assert {"test", "interval", "timeout", "retries"} <= set(SERVICES[broker]["healthcheck"])

    assert depends_on("kafka-setup")["kafka"] == {"condition": "service_healthy"}
    assert depends_on("kafka-setup")["kafka-zk"] == {"condition": "service_healthy", "required": False}
    for service in APP_SERVICES:
        assert depends_on(service) == {"kafka-setup": {"condition": "service_completed_successfully"}}


def test_no_sleep_or_wait_loops():
    for name, svc in SERVICES.items():
        parts = [svc.get("entrypoint", ""), svc.get("command", ""), svc.get("healthcheck", {}).get("test", "")]
        text = " ".join(" ".join(map(str, p)) if isinstance(p, list) else str(p) for p in parts)
        for word in ("sleep", "while", "until", "wait-for", "for i in"):
            assert not re.search(rf"\b{word}\b", text), f"{name}: `{word}` in {text!r}"


def test_kafka_setup_creates_the_orders_topic():
    setup = SERVICES["kafka-setup"]
    assert setup["image"] == SERVICES["kafka"]["image"]
    assert setup["entrypoint"] == ["/opt/kafka/bin/kafka-topics.sh"]
    args = command("kafka-setup")
    assert {"--create", "--if-not-exists"} <= set(args)
    assert option(args, "--bootstrap-server") == "kafka:9092"
    assert option(args, "--topic") == "orders"
    assert int(option(args, "--partitions")) == 4
    assert option(args, "--replication-factor") == "1"


def test_every_variable_has_a_default():
    found = VARIABLE.findall(COMPOSE_TEXT)
    assert {name for name, _, _ in found} == {"BOOTSTRAP_SERVERS", "ORDER_COUNT", "ORDER_RATE"}
    assert all(op == ":-" for _, op, _ in found)
    assert "$" not in VARIABLE.sub("", COMPOSE_TEXT), "a bare $ (compose would read it as a variable)"


def test_app_services_run_real_starload_commands():
    parser = build_parser()
    for service in APP_SERVICES:
        svc = SERVICES[service]
        assert svc["build"] == "." and svc["image"] == "starload:local"
        args = parser.parse_args(command(service))
        assert args.topic == "orders"
        assert args.X == []

    produce = parser.parse_args(command("producer"))
    assert (produce.command, produce.count, produce.rate, produce.generator) == ("produce", 100, 1.0, "orders")
    assert SERVICES["producer"].get("restart", "no") == "no"
    assert parser.parse_args(command("producer", {"ORDER_COUNT": "5", "ORDER_RATE": "0"})).count == 5

    # The Snowflake sink is not registered yet: its command can only be parsed.
    load = parser.parse_args(command("loader"))
    assert (load.command, load.sink, load.group, load.until_idle) == ("load", "snowflake", "snowflake_loader", None)

    duck = parser.parse_args(command("loader-duckdb"))
    assert (duck.command, duck.sink, duck.group, duck.until_idle) == ("load", "duckdb", "duckdb_loader", None)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in SERVICES["loader-duckdb"]["volumes"]}
    assert Path(duck.duckdb_path).parent.as_posix() in mounts
    assert mounts[Path(duck.duckdb_path).parent.as_posix()] in COMPOSE["volumes"]

    for service in ("loader", "loader-duckdb"):
        assert SERVICES[service]["restart"] == "unless-stopped"


def test_snowflake_credentials_come_from_an_env_file_never_the_repo():
    assert SERVICES["loader"]["env_file"] == [{"path": ".env", "required": False}]
    assert "SNOWFLAKE_" not in yaml.safe_dump(COMPOSE)  # comments aside, the file names no credential
    for name, svc in SERVICES.items():
        assert not any("SNOWFLAKE" in str(key).upper() for key in svc.get("environment", {})), name
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()

    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert example == {
        "SNOWFLAKE_ACCOUNT": "",
        "SNOWFLAKE_USER": "",
        "SNOWFLAKE_PASSWORD": "",
        "SNOWFLAKE_PRIVATE_KEY_FILE": "",
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "",
        "SNOWFLAKE_ROLE": "",
        "SNOWFLAKE_WAREHOUSE": "COMPUTE_WH",
        "SNOWFLAKE_DATABASE": "E_COMMERCE",
        "SNOWFLAKE_SCHEMA": "SALES",
    }
    assert all(example[secret] == "" for secret in SECRETS)


def test_dockerfile_builds_the_app_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = (line.strip() for line in dockerfile.splitlines())
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert 'RUN pip install ".[snowflake]"' in instructions
    assert 'ENTRYPOINT ["starload"]' in instructions
    assert any(line.startswith("USER ") and line != "USER root" for line in instructions)
    # What the image copies is in the build context (.dockerignore leaves it in).
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    for needed in ("pyproject.toml", "README.md", "src"):
        assert (ROOT / needed).exists() and needed not in ignored


# --- the same commands, run here ------------------------------------------------------


def test_compose_commands_run_against_the_local_broker(local_broker, tmp_path):
    env = {"BOOTSTRAP_SERVERS": local_broker.bootstrap_servers, "ORDER_COUNT": "200", "ORDER_RATE": "0"}
    topic = f"compose-{uuid.uuid4().hex[:12]}"

    # kafka-setup runs kafka-topics.sh (Java); here the same topic is made with its settings.
    setup = command("kafka-setup", env)
    partitions = int(option(setup, "--partitions"))
    assert ensure_topic(option(setup, "--bootstrap-server"), topic, partitions=partitions) is True

    produce = with_option(command("producer", env), "--topic", topic)
    assert option(produce, "--count") == "200"
    produced = run_cli(produce)
    assert produced.returncode == 0, produced.stderr
    assert f"produced 200 orders events to {topic!r}" in produced.stdout

    db = tmp_path / "orders.duckdb"
    load = with_option(with_option(command("loader-duckdb", env), "--topic", topic), "--duckdb-path", str(db))
    loaded = run_cli([*load, "--until-idle", "2"])
    assert loaded.returncode == 0, loaded.stderr
    summary = dict(line.split(": ", 1) for line in loaded.stdout.strip().splitlines())
    assert summary["consumed"] == "200"
    assert summary["facts loaded"] == "200"
    assert (summary["duplicates skipped"], summary["rejected"]) == ("0", "0")
    with duckdb.connect(str(db), read_only=True) as con:
        [(facts, spread)] = con.execute("SELECT count(*), count(DISTINCT KAFKA_PARTITION) FROM FACT_ORDERS").fetchall()
        [(stored,)] = con.execute(
            "SELECT sum(NEXT_OFFSET) FROM STARLOAD_OFFSETS WHERE GROUP_ID = ? AND TOPIC = ?",
            [option(load, "--group"), topic],
        ).fetchall()
    assert (facts, spread, stored) == (200, partitions, 200)


def test_the_loaders_healthcheck_passes_while_a_loader_runs(local_broker, tmp_path):
    """Each loader serves /healthz on the port its healthcheck asks; the check's own command passes."""
    topic = f"health-{uuid.uuid4().hex[:12]}"
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    for service in ("loader", "loader-duckdb"):
        check = SERVICES[service]["healthcheck"]["test"]
        assert check[:2] == ["CMD", "python"] and "/healthz" in check[-1]
        assert option(command(service), "--metrics-port") in check[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {"BOOTSTRAP_SERVERS": local_broker.bootstrap_servers}
    load = with_option(with_option(command("loader-duckdb", env), "--topic", topic), "--duckdb-path", str(tmp_path / "o.duckdb"))
    load = with_option(load, "--metrics-port", port)
    loader = subprocess.Popen([sys.executable, "-m", "starload.cli", *load], stderr=subprocess.PIPE, text=True)
    probe = [sys.executable, *SERVICES["loader-duckdb"]["healthcheck"]["test"][2:]]
    probe[-1] = probe[-1].replace(option(command("loader-duckdb"), "--metrics-port"), port)
    try:
        deadline, code = time.monotonic() + 60, None
        while time.monotonic() < deadline and code != 0:
            code = subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode
            time.sleep(0.5)
        assert code == 0
    finally:
        loader.terminate()
        _, err = loader.communicate(timeout=60)
    assert loader.returncode == 0, err[-2000:]
