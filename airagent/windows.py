"""Deploy windows: whether a train may start at a given moment, and when that next changes.

Pure functions of the time they are given, so the conductor can call them with
`workflow.now()` and stay deterministic.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import BaseModel

from airagent.config import DeployWindow


class WindowState(BaseModel):
    open: bool
    reason: str
    until: datetime | None = None  # when the answer may change


def _label(w: DeployWindow) -> str:
    return w.name or f"{w.kind} '{w.cron}' for {w.duration} ({w.timezone})"


def _span(w: DeployWindow, now: datetime) -> tuple[bool, datetime]:
    """Whether `w` is open at `now`, and the next moment that changes."""
    local = now.astimezone(ZoneInfo(w.timezone))
    opened = croniter(w.cron, local + timedelta(microseconds=1)).get_prev(datetime)
    if opened <= local < opened + w.duration:
        return True, opened + w.duration
    return False, croniter(w.cron, local).get_next(datetime)


def state(windows: list[DeployWindow], now: datetime) -> WindowState:
    if not windows:
        return WindowState(open=True, reason="no deploy windows configured")
    spans = {id(w): _span(w, now) for w in windows}
    until = min(change for _, change in spans.values())
    denying = [w for w in windows if w.kind == "deny" and spans[id(w)][0]]
    if denying:
        return WindowState(open=False, reason=f"inside deny window {_label(denying[0])}", until=until)
    allows = [w for w in windows if w.kind == "allow"]
    inside = [w for w in allows if spans[id(w)][0]]
    if allows and not inside:
        return WindowState(open=False, reason="outside every allow window", until=until)
    return WindowState(
        open=True, reason=f"inside allow window {_label(inside[0])}" if inside else "no deny window now", until=until
    )
