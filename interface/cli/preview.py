"""`airagent preview`: a real Airflow per branch, for its authors to click through before they merge."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import wraps
from typing import Annotated

import typer
from pydantic import ValidationError

from airagent import config as config_module
from airagent.models import PreviewState, PreviewStatus
from interface.cli.base import (
    DEFAULT_CONFIG,
    ConfigOpt,
    JsonOpt,
    app,
    console,
    current_user,
    err_console,
    friendly,
    run,
)
from interface.client import AirAgent
from interface.previews import PreviewRefused
from interface.terminal import labelled

preview_app = typer.Typer(no_args_is_help=True, help="Previews: a real Airflow per branch, until its TTL or `down`.")
app.add_typer(preview_app, name="preview")

BranchOpt = Annotated[str, typer.Option("--branch", "-b", help="the git branch to preview")]
PreviewPipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", help="pipeline name from airagent.yaml")]
# The JSON keys of a preview, in the order `list` prints them.
FIELDS = ("branch", "pipeline", "state", "commit", "url", "login_file", "reach", "expires", "event", "error")


def _refusable(fn):
    """A refused preview is the user's to fix: one line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PreviewRefused as err:
            err_console.print(labelled("refused:", "red", str(err)))
            raise typer.Exit(2) from None

    return friendly(wrapper)


@preview_app.command("up")
@_refusable
def preview_up(
    branch: BranchOpt,
    pipeline: PreviewPipelineOpt = "main",
    ttl: Annotated[str | None, typer.Option(help="how long it lives, e.g. 8h; default previews.ttl")] = None,
    wait: Annotated[bool, typer.Option(help="wait until it serves the branch (or says why not)")] = True,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: JsonOpt = False,
) -> None:
    """Start the branch's preview, or extend a running one to live TTL from now. Exit 3 when it serves nothing."""
    settings = config_module.load_pipeline(pipeline, config)
    lives = _duration(ttl) if ttl else None

    async def go() -> PreviewStatus:
        agent = await AirAgent.connect()
        status = await agent.preview_up(settings, branch, lives, by=current_user())
        return await agent.wait_preview(pipeline, branch) if wait else status

    status = run(go())
    if as_json:
        print(json.dumps(_fields(status)))
    else:
        _say(status)
    raise typer.Exit(3 if status.state == PreviewState.broken else 0)


@preview_app.command("list")
@friendly
def preview_list(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline's")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The running previews: where each one's Airflow is, how to log in, what it serves, until when."""

    async def go() -> list[PreviewStatus]:
        return await (await AirAgent.connect()).previews(pipeline)

    found = run(go())
    if as_json:
        print(json.dumps([_fields(p) for p in found]))
        return
    if not found:
        console.print("no previews run; start one with `airagent preview up --branch B`")
        return
    for p in found:  # lines, not a table: a login file's path must print whole, whatever the terminal's width
        expires = f"{p.expires:%Y-%m-%d %H:%M} UTC" if p.expires else "-"
        say(f"{p.branch}: {p.state.value}, serving {(p.commit or 'nothing')[:12]}, expires {expires}")
        if p.login_file or not p.reach:
            say(f"  Airflow {p.url or '-'}; log in with the username:password in {p.login_file or '-'}")
        else:
            say(f"  Airflow {p.url}; reach it with: {p.reach}")
        if p.error:
            say(f"  not served: {p.error}")


@preview_app.command("down")
@friendly
def preview_down(
    branch: BranchOpt,
    pipeline: PreviewPipelineOpt = "main",
    reason: Annotated[str | None, typer.Option(help="why, for the record")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Tear the preview down: every process, its ports and its folder; returns once they are gone."""

    async def go() -> PreviewStatus:
        return await (await AirAgent.connect()).preview_down(pipeline, branch, by=current_user(), reason=reason)

    status = run(go())
    if as_json:
        print(json.dumps(_fields(status)))
    else:
        say(f"{branch}: {status.event or 'ended'}")


def say(line: str) -> None:
    """Branch names and errors come from the repository: printed as they are, never as markup."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _fields(status: PreviewStatus) -> dict:
    data = status.model_dump(mode="json")
    return {key: data[key] for key in FIELDS}


def _say(status: PreviewStatus) -> None:
    line = f"{status.branch}: {status.state.value}"
    if status.commit:
        line += f" {status.commit[:12]} at {status.url}"
        line += f"; log in as the `username:password` in {status.login_file}" if status.login_file else ""
        line += f"; reach it with: {status.reach}" if status.reach else ""
    if status.expires:
        line += f"; expires {status.expires:%Y-%m-%d %H:%M} UTC"
    say(line)
    if status.error:
        err_console.print(labelled("not served:", "yellow", status.error))


def _duration(text: str) -> timedelta:
    """A TTL as airagent.yaml writes durations; a wrong one is the user's mistake, named."""
    try:
        return config_module.PreviewSettings.model_validate({"ttl": text}).ttl
    except ValidationError as err:
        raise config_module.ConfigError(f"--ttl: {err.errors()[0]['msg']}") from None
