"""A warm DAG parser per runtime, so a validation does not pay for starting Airflow.

The first validation in a runtime starts `parser.pyz --serve` (see `parser_app`) with that
runtime's interpreter; it imports Airflow once and forks a child per request, which parses
as a cold run would (its own workers, timeouts, lookups). Requests go over a Unix socket in
a private directory under home(), named by the runtime, the parser's sources and the folder
the server may read, so a new runtime or parser gets a new server. A server that died is
started again by the next request; one that idles, or whose starter ended, ends by itself.

The server runs in the sandbox (see `activities.sandbox`): it sees its runtime, the
parser, its own directory and one folder of bundles (a pipeline's releases, or the one
tree asked for), with no network and none of the deployer's environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from activities import sandbox
from activities.heartbeat import keep_alive
from activities.validation import parser_app
from activities.validation.cache import digest
from airagent.config import home

IDLE_SECONDS = 600.0
START_SECONDS = 120.0
ASKS = 4
_started: dict[Path, subprocess.Popen] = {}  # servers this process started, by directory
_to_start: queue.SimpleQueue[Server] = queue.SimpleQueue()
_starter: threading.Thread | None = None
_starter_lock = threading.Lock()


class ParserFailed(RuntimeError):
    """The parser itself broke (not a DAG file): it could not start, or a request got no answer."""


class Server:
    """Where a warm parser listens: for one runtime, reading one folder of bundles, sandboxed or not."""

    def __init__(self, runtime: Path, root: Path, sandboxed: bool = True):
        self.runtime, self.root, self.sandboxed = runtime, root.resolve(), sandboxed
        try:
            description = (runtime / "runtime.json").read_text()
        except OSError:
            description = ""
        key = [str(runtime.resolve()), description, parser_app.digest(), str(self.root), sandboxed]
        self.path = home() / "parsers" / digest(json.dumps(key).encode())[:16]
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)  # requests name folders to parse: only this user may send them

    def log_tail(self) -> str:
        try:
            return (self.path / "log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def parse(server: Server, request: dict, timeout: float) -> Iterator[dict]:
    """Send one request (see parser.serve._answer) to the warm parser; each file's report as soon as it is parsed.

    Asked ASKS times at most, for the files not answered yet: a server that dies while a
    connection waits for it drops that connection (a sandboxed one dies a moment after its
    bubblewrap), and parsing again is harmless.
    """
    unanswered = set(request["files"])
    for attempt in range(ASKS):
        try:
            for report in _ask(server, {**request, "files": sorted(unanswered)}, timeout):
                unanswered.discard(report["path"])
                yield report
            if not unanswered:
                return
        except (ConnectionError, ValueError):
            pass
        if attempt == ASKS - 1:
            raise ParserFailed(f"the DAG parser ended without an answer; its log: {server.log_tail()}")
        time.sleep(0.5 * (attempt + 1))


def _ask(server: Server, request: dict, timeout: float) -> Iterator[dict]:
    """The reports of one request, line by line, until the parser closes the connection."""
    with connect(server) as connection, keep_alive("DAG parser"):
        connection.sendall(json.dumps(request).encode())
        connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        buffer = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([connection], [], [], left)[0]:
                raise TimeoutError(f"the DAG parser did not answer within {timeout:.0f}s")
            chunk = connection.recv(1 << 20)
            if not chunk:
                if buffer:
                    raise ValueError("the DAG parser's answer ends in the middle of a line")
                return
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                answer = json.loads(line)
                if "path" not in answer:  # the request itself failed
                    raise ParserFailed(answer["error"])
                yield answer


def connect(server: Server) -> socket.socket:
    """A connection to the warm parser, started first when none answers."""
    if connection := listening(server.path):
        return connection
    with _locked(server.path):  # one start per directory, across threads and processes
        if connection := listening(server.path):
            return connection
        _start(server)
        if connection := listening(server.path):
            return connection
    raise ParserFailed(f"the DAG parser started but does not accept requests; its log: {server.log_tail()}")


def start_soon(server: Server) -> None:
    """Start the warm parser in the background, when none of ours runs, while the caller gets its request ready.

    So a first validation overlaps the parser's start (seconds: Airflow's import) with
    what comes before its request (staging the tree, the cache keys); the request waits
    for the start under the same lock. One thread starts them all and lives as long as
    this process: a sandbox dies with the thread that started it (`--die-with-parent`).
    A parser that cannot start is left for the request to start again and to say why."""
    process = _started.get(server.path)
    if process is not None and process.poll() is None:
        return
    global _starter
    with _starter_lock:
        if _starter is None:
            _starter = threading.Thread(target=_start_each, name="parser-starter", daemon=True)
            _starter.start()
    _to_start.put(server)


def _start_each() -> None:
    while True:
        server = _to_start.get()
        try:
            connect(server).close()  # a parser takes a connection without a request as nothing to do
        except Exception:  # the request starts it again, and says why it cannot
            continue


def stop() -> None:
    """End the servers this process started, with any request they are answering (tests, the bench)."""
    while _started:
        _, process = _started.popitem()
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        process.wait()


def listening(folder: Path) -> socket.socket | None:
    """A connection to the parser listening in `folder`, or None.

    Reached through the folder's descriptor: a socket's address holds 107 bytes at most,
    and a state directory can be deeper than that."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        handle = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        connection.close()
        return None
    try:
        connection.connect(f"/proc/self/fd/{handle}/socket")
    except OSError:
        connection.close()
        return None
    finally:
        os.close(handle)
    return connection


@contextmanager
def _locked(server: Path):
    with open(server / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _start(server: Server) -> None:
    previous = _started.pop(server.path, None)
    if previous is not None:
        previous.kill()  # alive but not answering: its socket is gone; its requests' children go on
        previous.wait()
    home_dir = server.path
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home_dir),
        "AIRFLOW_HOME": str(home_dir / "airflow"),
        # Each request points these at its own bundle.
        "AIRFLOW__CORE__DAGS_FOLDER": str(home_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
    }
    python = server.runtime / "bin" / "python"
    parser = parser_app.path()
    argv: list[str] = [str(python), str(parser), "--serve", str(home_dir), "--idle", str(IDLE_SECONDS)]
    if server.sandboxed:
        sandbox.require()
        seen = [server.runtime.resolve(), sandbox.interpreter_prefix(python), parser, server.root]
        argv = sandbox.command(argv, read_only=seen, writable=[home_dir], env=env, cwd=home_dir)
    with open(home_dir / "log", "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=home_dir,
            start_new_session=True,
        )  # its own process group, so stop() ends its children too
    assert process.stdout is not None  # stdout=PIPE
    with process.stdout:
        ready = select.select([process.stdout], [], [], START_SECONDS)[0] and process.stdout.readline()
    if ready != b"ready\n":
        process.kill()
        process.wait()
        raise ParserFailed(f"the DAG parser of {server.runtime} did not start: {server.log_tail()}")
    _started[server.path] = process
