"""The warm parser: one warmed-up process per runtime that forks a child per request, so a validation of one
changed file does not pay for starting Airflow."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .pool import Worker
from .run import parse_folder, warm_up


def serve(directory: Path, idle: float) -> None:
    """Answer parse requests on DIRECTORY/socket, each in a child forked from this warmed-up process.

    So a validation skips starting the interpreter and importing Airflow. The server ends
    when its socket is removed or replaced (a newer server took over), when the process
    that started it ends, or after IDLE seconds without a request; clients that connected
    before that are still answered.
    """
    warm_up()
    launcher, path = os.getppid(), directory / "socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = directory / f"socket.{os.getpid()}"
    staging.unlink(missing_ok=True)
    os.chdir(directory)
    listener.bind(staging.name)  # by a relative name: an address holds 107 bytes at most, the folder's path may not
    listener.listen(64)
    os.replace(staging, path)  # clients see the old socket or this one, never none
    mine = path.stat().st_ino
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the launcher stops reading; each request keeps its own output
    os.close(devnull)
    children: set[int] = set()
    last = time.monotonic()
    while True:
        if select.select([listener], [], [], 1.0)[0]:
            children.add(_answer_in_child(listener))
        while children and (pid := os.waitpid(-1, os.WNOHANG)[0]):
            children.discard(pid)
        now = time.monotonic()
        if children:
            last = now
        try:
            replaced = path.stat().st_ino != mine
        except FileNotFoundError:
            replaced = True
        if replaced or os.getppid() != launcher or now - last > idle:
            break
    if not replaced:
        path.unlink(missing_ok=True)
    listener.setblocking(False)
    while True:
        try:
            _answer_in_child(listener)
        except BlockingIOError:
            break


def _answer_in_child(listener: socket.socket) -> int:
    connection, _ = listener.accept()
    pid = os.fork()
    if pid:
        connection.close()
        return pid
    listener.close()
    code = 0
    try:
        connection.setblocking(True)
        _answer(connection)
    except BaseException:
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)


def _answer(connection: socket.socket) -> None:
    """One request: JSON in until end-of-file ({folder, plugins_folder, cwd, files, placeholders, workers,
    timeout}); back, one JSON line per file as soon as it is parsed, or one {"error": ...} line.

    So the client stores each report while the others are parsed, not all after the last."""
    with connection, tempfile.TemporaryFile() as output:
        # The DAG files' prints and warnings, as a cold run's output file holds them.
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        chunks = []
        while chunk := connection.recv(1 << 16):
            chunks.append(chunk)
        if not chunks:
            return  # the client connected, then found nothing to parse
        Worker.held.add(connection.fileno())
        try:
            request = json.loads(b"".join(chunks))
            folder = Path(request["folder"]).resolve()
            _enter(request["cwd"], folder, request["plugins_folder"])
            for report in parse_folder(folder, request["workers"], request["timeout"], request):
                connection.sendall(json.dumps(report).encode() + b"\n")
        except Exception:
            sys.stderr.flush()
            output.seek(0)
            tail = output.read()[-3000:].decode(errors="replace")
            connection.sendall(json.dumps({"error": tail + traceback.format_exc()}).encode() + b"\n")


def _enter(cwd: str, folder: Path, plugins_folder: str) -> None:
    """What a cold run gets from its working directory and environment: this bundle's DAG and plugins folders."""
    from airflow import plugins_manager, settings

    os.chdir(cwd)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder)
    os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = plugins_folder
    sys.path[:] = [p for p in sys.path if p != settings.PLUGINS_FOLDER] + [plugins_folder]
    settings.DAGS_FOLDER, settings.PLUGINS_FOLDER = str(folder), plugins_folder
    plugins_manager._get_plugins.cache_clear()  # the warm-up loaded the launch folder's, once per process
