"""Ports for the servers tests start.

Each test process hands out ports from a block of its own, one after another, below the kernel's ephemeral
range (32768 and up here): a port taken from there, or from port 0, can be taken again at any moment by an
outbound connection or by a server another process starts, as a dev server's gRPC port once was.
"""

from __future__ import annotations

import os

from airagent.devserver import free_ports

BLOCK = 1400
# gw0 to gw15 fit between 10000 and the ephemeral range.
FIRST = 10000 + BLOCK * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next = FIRST


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive free ports that no earlier call in this process handed out."""
    global _next
    if _next + count > FIRST + BLOCK:
        _next = FIRST  # a long run starts its block again: the first servers have stopped by then
    start = free_ports(count, first=_next)
    _next = start + count
    return start
