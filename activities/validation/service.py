"""A warm DAG parser per runtime, so a validation does not pay for starting Airflow.

The first validation in a runtime starts `parser.py --serve` with that runtime's
interpreter; it imports Airflow once and forks a child per request, which parses as a
cold run would (its own workers, timeouts, lookups). Requests go over a Unix socket in a
private directory under home(), named by the runtime and the parser script, so a new
runtime or parser gets a new server. A server that died is started again by the next
request; one that idles, or whose starter ended, ends by itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from activities.heartbeat import keep_alive
from activities.validation.cache import PARSER, digest
from airagent.config import home

IDLE_SECONDS = 600.0
START_SECONDS = 120.0
_started: dict[Path, subprocess.Popen] = {}  # servers this process started, by directory


class ParserFailed(RuntimeError):
    """The parser itself broke (not a DAG file): it could not start, or a request got no answer."""


def server_dir(runtime: Path) -> Path:
    try:
        description = (runtime / "runtime.json").read_text()
    except OSError:
        description = ""
    key = digest(json.dumps([str(runtime.resolve()), description, digest(PARSER.read_bytes())]).encode())
    path = home() / "parsers" / key[:16]
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # requests name folders to parse: only this user may send them
    return path


def parse(runtime: Path, request: dict, timeout: float) -> list[dict]:
    """Send one request (see parse_dags._answer) to the runtime's warm parser; its file reports.

    Asked twice at most: a server that dies while a connection waits for it drops that
    connection unanswered, and parsing again is harmless.
    """
    try:
        answer = _ask(runtime, request, timeout)
    except (ConnectionError, ValueError):
        try:
            answer = _ask(runtime, request, timeout)
        except (ConnectionError, ValueError):
            raise ParserFailed(f"the DAG parser ended without an answer; its log: {_log_tail(runtime)}") from None
    if "error" in answer:
        raise ParserFailed(answer["error"])
    return answer["files"]


def _ask(runtime: Path, request: dict, timeout: float) -> dict:
    with connect(runtime) as connection, keep_alive("DAG parser"):
        connection.sendall(json.dumps(request).encode())
        connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([connection], [], [], left)[0]:
                raise TimeoutError(f"the DAG parser did not answer within {timeout:.0f}s")
            chunk = connection.recv(1 << 20)
            if not chunk:
                return json.loads(b"".join(chunks))
            chunks.append(chunk)


def connect(runtime: Path) -> socket.socket:
    """A connection to the runtime's warm parser, started first when none answers."""
    server = server_dir(runtime)
    if connection := _connection(server):
        return connection
    with _locked(server):  # one start per directory, across threads and processes
        if connection := _connection(server):
            return connection
        _start(runtime, server)
        if connection := _connection(server):
            return connection
    raise ParserFailed(f"the DAG parser started but does not accept requests; its log: {_log_tail(runtime)}")


def stop() -> None:
    """End the servers this process started, with any request they are answering (tests, the bench)."""
    while _started:
        _, process = _started.popitem()
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        process.wait()


def _connection(server: Path) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(server / "socket"))
    except OSError:
        connection.close()
        return None
    return connection


@contextmanager
def _locked(server: Path):
    with open(server / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _start(runtime: Path, server: Path) -> None:
    previous = _started.pop(server, None)
    if previous is not None:
        previous.kill()  # alive but not answering: its socket is gone; its requests' children go on
        previous.wait()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(server),
        "AIRFLOW_HOME": str(server / "airflow"),
        # Each request points these at its own bundle.
        "AIRFLOW__CORE__DAGS_FOLDER": str(server / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(server / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
    }
    with open(server / "log", "wb") as log:
        process = subprocess.Popen(
            [str(runtime / "bin" / "python"), str(PARSER), "--serve", str(server), "--idle", str(IDLE_SECONDS)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=server,
            start_new_session=True,
        )  # its own process group, so stop() ends its children too
    assert process.stdout is not None  # stdout=PIPE
    with process.stdout:
        ready = select.select([process.stdout], [], [], START_SECONDS)[0] and process.stdout.readline()
    if ready != b"ready\n":
        process.kill()
        process.wait()
        raise ParserFailed(f"the DAG parser of {runtime} did not start: {_log_tail(runtime)}")
    _started[server] = process


def _log_tail(runtime: Path) -> str:
    try:
        return (server_dir(runtime) / "log").read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"
