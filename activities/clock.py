"""The server's clock, read into history: what a workflow decides by time must not rest on `workflow.now()`.

A worker that answers a query after an outage can run workflow code with the previous
task's time, so a decision taken on `workflow.now()` near a boundary may differ on replay.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import activity


@activity.defn(name="read_clock")
async def read_clock() -> datetime:
    """When the server scheduled this activity: its time (virtual on a time-skipping test server)."""
    return activity.info().current_attempt_scheduled_time
