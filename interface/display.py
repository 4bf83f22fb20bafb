"""How trains look in a terminal: a line per stage as it moves, a table for the whole."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta

from rich.table import Column, Table
from rich.text import Text
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from airagent import details
from airagent.models import (
    ConductorState,
    ConductorStatus,
    Event,
    HeldCommit,
    Outcome,
    StageRecord,
    TrainState,
    TrainStatus,
    TrainSummary,
)
from interface.client import AirAgent, NotFound
from interface.terminal import console


async def follow(
    agent: AirAgent, wf_id: str, quiet: bool = False, timeout: timedelta | None = None, since: datetime | None = None
) -> TrainStatus:
    """Print each stage as it starts and ends, until the train is over; a queued train, a dead worker or a
    restarting server is waited for (up to `timeout`), and said once."""
    seen: dict[int, Text] = {}
    waiting: str | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds() if timeout else None
    while True:
        try:
            status = await agent.status(wf_id, since)
        except (NotFound, RPCError, WorkflowQueryFailedError) as err:
            why = "queued at the conductor" if isinstance(err, NotFound) else f"the server or worker: {_reason(err)}"
            if why != waiting and not quiet:
                console.print(f"  waiting for {why}", style="dim")
            waiting, status = why, None
        if status and not quiet:
            waiting = None
            for i, stage in enumerate(status.stages):
                line = stage_line(stage)
                if seen.get(i) != line and (stage.outcome != Outcome.running or i not in seen):
                    console.print(line)
                    seen[i] = line
        if status and status.state.finished:
            if not quiet:
                console.print(render(wf_id, status))
            return status
        if deadline and loop.time() > deadline:
            raise TimeoutError(wf_id)
        await asyncio.sleep(0.5)


def _reason(err: Exception) -> str:
    return getattr(err, "message", None) or str(err) or type(err).__name__


_COLOURS = {"ok": "green", "failed": "red", "running": "yellow", "skipped": "dim", "stopped": "magenta"}


def stage_line(stage: StageRecord) -> Text:
    where = f" {stage.environment}" if stage.environment else ""
    took = f" {(stage.ended - stage.started).total_seconds():.1f}s" if stage.ended else ""
    colour = _COLOURS.get(stage.outcome.value, "white")
    detail = f" — {stage.detail.splitlines()[0]}" if stage.detail else ""
    return Text.assemble("  ", (f"{stage.outcome.value:>8}", colour), f" {stage.name}{where}{took}{detail}")


def id_column(header: str) -> Column:
    """A column of ids, the one thing a person copies: on one line while the other columns can give way, folded
    rather than cut short when they cannot."""
    return Column(header, no_wrap=True, overflow="fold")


def render(wf_id: str, s: TrainStatus) -> Table:
    # As wide as its title, so the train id in it is not wrapped to a narrow table.
    table = Table(
        title=Text.assemble(f"{wf_id}: ", (s.state.value, "bold")),
        show_header=False,
        title_justify="left",
        min_width=len(f"{wf_id}: {s.state.value}"),
    )
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # an id longer than the column folds rather than ending in "…"
    table.add_row("target", f"{s.target[:12]} ({s.mode or 'no change'}; {', '.join(s.kinds) or '-'})")
    if s.reason:
        table.add_row("reason", s.reason)
    table.add_row("stage", f"{s.stage or '-'}{' ' + s.environment if s.environment else ''}")
    if s.bisect:
        table.add_row("bisection", s.bisect.line())
    for e in s.environments:
        table.add_row(
            f"env {e.name}", f"{e.live or 'nothing'} ({e.state}; before this train: {e.previous or 'nothing'})"
        )
        for m in e.analysis:
            table.add_row(
                f"  {m.metric}",
                Text.assemble(
                    (str(m.verdict), "red" if m.verdict in ("failed", "error") else "green"),
                    " ",
                    (m.line().split(" — ", 1)[-1], "dim"),
                ),
            )
        for readings in [] if e.analysis else e.probes.values():
            last = readings[-1]
            table.add_row(
                f"  {last.probe}",
                Text.assemble(
                    (last.reading, "green" if last.ok else "red"),
                    " ",
                    (f"({timestamp(last.at)}, {len(readings)} kept; threshold: {last.threshold})", "dim"),
                ),
            )
    for c in s.commits[:10]:
        table.add_row("commit", f"{c.sha[:8]} {c.summary} — {c.author}")
    for h in s.held:
        table.add_row("held back", held_line(h))
    if s.release_commit:
        table.add_row("release commit", f"{s.release_commit[:12]} (the target without the held commits)")
    if s.validation:
        table.add_row("validation", s.validation)
    for note in s.notes:
        table.add_row("note", Text(note, style="yellow"))
    for ev in s.events:
        verdict = "ok" if ev.accepted else "rejected"
        table.add_row(
            "control",
            f"{timestamp(ev.at)} {ev.control} by {ev.by or '?'} ({verdict}: {ev.message})"
            f"{' — ' + ev.reason if ev.reason else ''}",
        )
    return table


def render_history(trains: list[TrainSummary]) -> Table:
    # Past 80 columns the other columns give way, folded rather than cut.
    table = Table(id_column("train"), *(Column(h, overflow="fold") for h in ("state", "stage", "started", "ended")))
    for t in trains:
        table.add_row(t.id, t.state, t.stage or "", timestamp(t.started), timestamp(t.ended))
    return table


def timestamp(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""


def render_pipeline(status: ConductorStatus, live: dict[str, str] | None = None) -> Table:
    s = status.state
    mode = f"frozen: {s.frozen}" if s.frozen else "paused" if s.paused else "flowing"
    title = Text.assemble(f"pipeline {status.pipeline}: ", (mode, "bold"))
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # an id longer than the column folds rather than ending in "…"
    table.add_row("window", f"{'open' if status.window_open else 'closed'}: {status.window}")
    if warning := details.sandbox_warning(status):
        table.add_row(Text("warning", style="yellow"), warning)
    table.add_row("head", (s.head or "-")[:12])
    table.add_row("last deployed", (s.last_deployed or "-")[:12])
    if rolled_back := last_rollback(s):
        table.add_row("rolled back", f"{timestamp(rolled_back.at)} {rolled_back.reason}")
    for name, runs in (live or {}).items():
        table.add_row(f"{name} runs", runs)
    table.add_row("running", s.running.id if s.running else "-")
    table.add_row("queued", (status.queued or "-")[:12])
    if s.poll_error:
        table.add_row("poll error", s.poll_error)
    if s.blocked:
        table.add_row("blocked", s.blocked)
    if s.bisection:
        table.add_row("bisecting", s.bisection.step_input().line())
    for h in s.held:
        table.add_row("held back", held_line(h))
    for t in reversed(s.trains):
        took = f" in {(t.ended - t.started).total_seconds():.0f}s" if t.ended else ""
        table.add_row("train", f"{t.id} {t.state}{took}, {t.commits} commits by {', '.join(t.authors) or '-'}")
    if s.reconfigured and s.reconfigured not in s.events[-5:]:
        table.add_row("settings", event_line(s.reconfigured))
    for ev in s.events[-5:]:
        table.add_row("control", event_line(ev))
    return table


# The reason EnvironmentRollback (workflows/environment_rollback.py) freezes the pipeline with.
_ROLLBACK_REASON = re.compile(r"\S+ rolled back from \S+ to \S+")


def last_rollback(s: ConductorState) -> Event | None:
    """The last rollback outside a train, when no train has deployed since: the environment it names no longer
    runs what `last deployed` says."""
    deployed = [t.ended for t in s.trains if t.state == TrainState.succeeded and t.ended]
    return next(
        (
            ev
            for ev in reversed(s.events)
            if ev.control == "freeze"
            and ev.accepted
            and _ROLLBACK_REASON.match(ev.reason or "")
            and not any(at > ev.at for at in deployed)
        ),
        None,
    )


def event_line(ev: Event) -> str:
    return f"{timestamp(ev.at)} {ev.control} by {ev.by or '?'}: {ev.message}{' — ' + ev.reason if ev.reason else ''}"


def held_line(h: HeldCommit) -> str:
    teams = f" ({', '.join(h.teams)})" if h.teams else ""
    since = f", since {timestamp(h.since)}" if h.since else ""
    return f"{h.sha[:12]} by {h.author}{teams}: {h.summary} — {h.reason}{since}"
