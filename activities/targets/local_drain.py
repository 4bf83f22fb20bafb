"""What a local Airflow's stop waits for: the task instances still running, as the environment's API says.

A restart drains them first (up to the drain timeout); then the scheduler, the one component
that finishes work before it exits, is given the drain timeout only while tasks run, and a
short grace once none do: one that stays after that is stuck, and waiting longer waits for
nothing (seen: a scheduler that logged it was waiting for tasks with none running, for minutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from activities.airflow_api import AirflowApi

# A component with nothing left to finish exits within seconds of SIGTERM; one that has not by then is stuck.
QUIET_GRACE = 15.0
# How the environment's API is reached: a client per use (a context manager), with an optional timeout.
Api = Callable[..., AirflowApi]


def running_tasks(api: Api, limit: float) -> str:
    """Wait for running task instances to finish, up to `limit` seconds; say what was waited for."""
    started = time.monotonic()
    first: list[str] = []
    try:
        with api() as client:
            while running := client.running():
                first = first or running
                if time.monotonic() - started >= limit:
                    return (
                        f"drain gave up after {limit:.0f}s with {len(running)} still running "
                        f"({', '.join(running[:5])}); the scheduler finishes them before it exits"
                    )
                time.sleep(1)
    except (httpx.HTTPError, PermissionError) as err:
        return f"drain skipped: the API did not answer ({type(err).__name__}); the scheduler finishes its tasks"
    if not first:
        return "drain: no task was running"
    return (
        f"drained {len(first)} running task instance{'s' if len(first) > 1 else ''} "
        f"({', '.join(first[:5])}) in {time.monotonic() - started:.0f}s"
    )


class SchedulerTasks:
    """The task instances a stopping scheduler still finishes: asked when it is told to stop and again while it
    stops, so the wait ends QUIET_GRACE after the last of them, not at the drain timeout. While the API cannot
    say, some may run, so the drain timeout holds."""

    def __init__(self, api: Api, drain_timeout: float, say: Callable[[str], None]):
        self.api, self.drain_timeout, self.say = api, drain_timeout, say
        self.idle_since: float | None = None

    def grace(self) -> tuple[float, str, Callable[[], bool] | None]:
        """How long the scheduler may take to exit, why, and what tells the wait to end sooner."""
        try:
            running = self._ask()
        except (httpx.HTTPError, OSError, ValueError) as err:  # no answer, no login, a garbled answer
            why = f"tasks may be running: the API did not answer ({type(err).__name__})"
        else:
            if not running:
                return QUIET_GRACE, "no task instance running", None
            listed = ", ".join(running[:5]) + (" …" if len(running) > 5 else "")
            why = f"{len(running)} task instance{'s' if len(running) > 1 else ''} running: {listed}"
        drain = max(self.drain_timeout, QUIET_GRACE)
        return drain, f"{why}, so until {QUIET_GRACE:.0f}s after none runs", self.keep_waiting

    def keep_waiting(self) -> bool:
        busy = self.idle_since is None
        try:
            self._ask()
        except (httpx.HTTPError, OSError, ValueError):
            return True
        if self.idle_since is None:
            return True
        if busy:
            self.say(f"no task instance running any more: up to {QUIET_GRACE:.0f}s more")
        return time.monotonic() - self.idle_since < QUIET_GRACE

    def _ask(self) -> list[str]:
        with self.api(timeout=5) as client:
            running = client.running()
        self.idle_since = None if running else self.idle_since or time.monotonic()
        return running
