"""Heartbeats from a side thread while a blocking step runs, so a dead worker is noticed in seconds."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import activity

EVERY = 5.0


@contextmanager
def keep_alive(what: str) -> Iterator[None]:
    if not activity.in_activity():
        yield
        return
    done = threading.Event()
    context = contextvars.copy_context()  # the activity's context lives in contextvars

    def beat() -> None:
        seconds = 0.0
        while not done.wait(EVERY):
            seconds += EVERY
            context.run(activity.heartbeat, f"{what}: {seconds:.0f}s")

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
