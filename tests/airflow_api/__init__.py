"""Answers recorded from a real Airflow 3 api-server, and a server that plays them back over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).parent


def recorded(name: str) -> Any:
    return json.loads((RECORDED / f"{name}.json").read_text())


class Replaying(BaseHTTPRequestHandler):
    """A handler that answers in JSON (or the bytes given) and keeps quiet."""

    def send_json(self, body: Any, code: int = 200) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(handler: type[Replaying]) -> Iterator[ThreadingHTTPServer]:
    """`handler` on a free loopback port, from a thread, for the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=5)
