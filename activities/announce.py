"""Telling people how a train ended: a generic JSON webhook, or a Slack-compatible message."""

from __future__ import annotations

import os

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from airagent import tls
from airagent.models import Announcement, TrainState

_ICONS = {
    TrainState.succeeded: ":white_check_mark:",
    TrainState.failed: ":x:",
    TrainState.rolled_back: ":rewind:",
    TrainState.aborted: ":octagonal_sign:",
}


def payload(a: Announcement) -> dict:
    s = a.status
    held = sorted({t for h in s.held for t in h.teams})
    blamed = held or a.pipeline.teams_of(a.broken or (a.changed if s.state != TrainState.succeeded else []))
    return {
        "pipeline": s.pipeline,
        "train": f"train/{s.pipeline}/{s.target[:12]}",
        "state": s.state.value,
        "reason": s.reason,
        "commit": s.target,
        "release": s.release,
        "commits": [{"sha": c.sha, "author": c.author, "summary": c.summary} for c in s.commits],
        "authors": sorted({c.author for c in s.commits}),
        "teams": blamed,
        "broken": a.broken,
        "held": [
            {"sha": h.sha, "author": h.author, "teams": h.teams, "paths": h.paths, "reason": h.reason} for h in s.held
        ],
        "environments": {e.name: e.live for e in s.environments},
    }


def slack_message(a: Announcement) -> dict:
    body = payload(a)
    lines = [f"{_ICONS.get(a.status.state, '')} *{body['train']}* {body['state']}"]
    if body["reason"]:
        lines.append(f"> {body['reason'].splitlines()[0]}")
    if body["teams"]:
        lines.append(f"owning team: {', '.join(body['teams'])}")
    lines += [f"• `{c['sha'][:8]}` {c['summary']} — {c['author']}" for c in body["commits"][:10]]
    lines += [f"held back: `{h['sha'][:8]}` by {h['author']}: {h['reason'].splitlines()[0]}" for h in body["held"][:10]]
    return {"text": "\n".join(lines)}


@activity.defn(name="announce")
def announce(a: Announcement) -> None:
    receiver = a.pipeline.notifications[a.receiver]
    url = os.environ.get(receiver.url_env)
    if not url:
        raise ApplicationError(
            f"{receiver.url_env} is not set on the worker; set it to the {receiver.type} URL",
            type="BadInput",
            non_retryable=True,
        )
    body = slack_message(a) if receiver.type == "slack" else payload(a)
    try:
        response = httpx.post(url, json=body, timeout=10, verify=tls.context())
    except httpx.HTTPError as err:
        raise RuntimeError(
            f"{receiver.type} receiver from {receiver.url_env} unreachable ({type(err).__name__})"
        ) from None
    if response.status_code >= 300:
        # The URL holds a token: name the variable, never the URL.
        raise RuntimeError(f"{receiver.type} receiver from {receiver.url_env} answered {response.status_code}")
