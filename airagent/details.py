"""The Web UI's current details of a train and of a pipeline's conductor: Markdown, built from their status.

Pure functions of the models, so workflows call them freely: details are not commands.
"""

from __future__ import annotations

from airagent.markdown import block, text
from airagent.models import ConductorStatus, HeldCommit, TrainStatus
from airagent.models.analysis import MetricState


def _newest(m: MetricState) -> str:
    newest = m.last[-1] if m.last else None
    seen = f"{newest.phase}: {text(newest.value)}" if newest else "no reading"
    return f"{seen} ({m.failures} failed, {m.errors} errors of {m.measurements})"


def train(status: TrainStatus) -> str:
    """The Web UI's current details: what a person glancing at the train wants to see."""
    where = f"{status.stage} ({status.environment})" if status.environment else (status.stage or "starting")
    lines = [f"**{status.state.value}** · stage **{where}** · target `{status.target[:12]}`"]
    if status.bisect:
        lines += ["", f"🔎 {text(status.bisect.line())}"]
    if status.reason:
        lines += ["", f"> {text(status.reason)}"]
    lines += ["", "| environment | state | live | before this train |", "|---|---|---|---|"]
    lines += [f"| {e.name} | {e.state} | {e.live or '-'} | {e.previous or '-'} |" for e in status.environments]
    metrics = [(e.name, m) for e in status.environments for m in e.analysis]
    if metrics:
        lines += ["", "| environment | metric | verdict | newest reading | held to |", "|---|---|---|---|---|"]
        lines += [f"| {env} | {m.metric} | {m.verdict} | {_newest(m)} | {text(m.held_to)} |" for env, m in metrics]
    probes = [(e.name, r[-1]) for e in status.environments if not e.analysis for r in e.probes.values()]
    if probes:
        lines += ["", "| environment | probe | reading | threshold |", "|---|---|---|---|"]
        lines += [
            f"| {env} | {'✅' if r.ok else '❌'} {r.probe} | {text(r.reading)} | {text(r.threshold)} |"
            for env, r in probes
        ]
    if status.commits:
        lines += ["", f"**commits** ({len(status.commits)}, {status.mode or 'no change'}):"]
        lines += [f"- `{c.sha[:8]}` {text(c.summary)} — {text(c.author)}" for c in status.commits[:10]]
    if status.held:
        lines += [
            "",
            f"**held back** ({len(status.held)}; the release `{(status.release_commit or '')[:12]}` leaves "
            "their changes out):",
        ]
        lines += [_held(h) for h in status.held[:10]]
    for note in status.notes:
        lines += ["", f"⚠️ {text(note)}"]
    if status.validation:
        lines += ["", "**validation**", block(status.validation)]
    if status.events:
        e = status.events[-1]
        lines += [
            "",
            f"last control: {e.control} by {text(e.by or 'someone')} ({'accepted' if e.accepted else 'rejected'}: "
            f"{text(e.message)}){' — ' + text(e.reason) if e.reason else ''}",
        ]
    return "\n".join(lines)


def pipeline(status: ConductorStatus) -> str:
    """What the conductor is doing: the train running, what waits, what is held back and why."""
    s = status.state
    mode = f"frozen: {s.frozen}" if s.frozen else "paused" if s.paused else "flowing"
    lines = [
        f"**{mode}** · running `{s.running.id if s.running else '-'}` · queued `{(status.queued or '-')[:12]}` "
        f"· last deployed `{(s.last_deployed or '-')[:12]}`"
    ]
    if not status.window_open:
        lines += ["", f"window closed: {text(status.window)}"]
    if warning := sandbox_warning(status):
        lines += ["", f"⚠ {warning}"]
    if s.blocked:
        lines += ["", f"> {text(s.blocked)}"]
    if s.bisection:
        lines += ["", f"🔎 {text(s.bisection.step_input().line())}"]
    if s.reconfigured:
        e = s.reconfigured
        lines += [
            "",
            f"last reconfigure, by {text(e.by or 'someone')}{' — ' + text(e.reason) if e.reason else ''}: "
            f"{text(e.message)}",
        ]
    if s.held:
        lines += ["", f"**held back** ({len(s.held)}):"]
        lines += [_held(h) for h in s.held[:10]]
    if s.trains:
        lines += ["", "| train | state | commits | authors |", "|---|---|---|---|"]
        lines += [
            f"| {t.id} | {t.state} | {t.commits} | {text(', '.join(t.authors))} |" for t in reversed(s.trains[-5:])
        ]
    return "\n".join(lines)


def sandbox_warning(status: ConductorStatus) -> str | None:
    if status.settings is None or status.settings.sandbox:
        return None
    return (
        "sandbox: off: DAG files and requirements run with the worker's own rights (its secrets, network and "
        "files); `airagent pipeline reconfigure` with `sandbox: on` ends that"
    )


def _held(h: HeldCommit) -> str:
    reason = h.reason.splitlines()[0] if h.reason else ""
    return f"- `{h.sha[:8]}` {text(h.summary)} — {text(h.author)} {text(', '.join(h.teams))}: {text(reason)}"
