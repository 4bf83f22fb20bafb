"""`airagent pipeline`, and `notify` for CI: a pipeline's conductor, started, watched and steered."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.text import Text

from airagent import config as config_module
from airagent.models import ConductorStatus, Control, PipelineControl, conductor_id
from interface.cli.base import (
    DEFAULT_CONFIG,
    ConfigOpt,
    JsonOpt,
    PipelineOpt,
    app,
    console,
    current_user,
    emit,
    friendly,
    note_unapplied,
    run,
    send_control,
)
from interface.client import AirAgent
from interface.display import render_pipeline

pipeline_app = typer.Typer(
    no_args_is_help=True, help="Run a pipeline's conductor: every commit on its branch, deployed."
)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("start")
@friendly
def pipeline_start(pipeline: PipelineOpt, config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Start the pipeline's conductor (idempotent): from now on the branch deploys itself. A running conductor
    keeps its settings; `pipeline reconfigure` changes them."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> None:
        agent = await AirAgent.connect()
        handle = await agent.start_pipeline(settings)
        emit({"conductor": handle.id}, as_json, f"conductor {handle.id} running")
        await note_unapplied(agent, settings, config)

    run(go())


@pipeline_app.command("reconfigure")
@friendly
def pipeline_reconfigure(
    pipeline: PipelineOpt,
    config: ConfigOpt = DEFAULT_CONFIG,
    reason: Annotated[str | None, typer.Option(help="why; kept in the conductor's event log")] = None,
    by: Annotated[str | None, typer.Option(help="who (default: your user name)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Give the running conductor the file's settings (environments, soak, approval, policies...), checked as
    `config check` does; the next train deploys with them, a running one goes on with its own."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> int:
        agent = await AirAgent.connect()
        ack = await agent.reconfigure(settings, by or current_user(), reason)
        emit(
            ack.model_dump(),
            as_json,
            Text(f"reconfigure: {ack.message}", style="green")
            if ack.accepted
            else Text(f"reconfigure rejected: {ack.message}", style="red"),
        )
        return 0 if ack.accepted else 1

    raise typer.Exit(run(go()))


@pipeline_app.command("unhold")
@friendly
def pipeline_unhold(
    pipeline: PipelineOpt,
    sha: Annotated[str, typer.Option(help="the held commit (at least 7 characters)")],
    reason: Annotated[str, typer.Option(help="why the hold was wrong; kept in the conductor's event log")],
    by: Annotated[str | None, typer.Option(help="who (default: your user name)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift a hold-back a person judges wrong, without touching the files: the next train deploys the commit."""

    async def go() -> int:
        agent = await AirAgent.connect()
        ack = await agent.unhold(pipeline, sha, by or current_user(), reason)
        verdict = "unhold" if ack.accepted else "unhold rejected"
        emit(ack.model_dump(), as_json, Text(f"{verdict}: {ack.message}", style="green" if ack.accepted else "red"))
        return 0 if ack.accepted else 1

    raise typer.Exit(run(go()))


@pipeline_app.command("status")
@friendly
def pipeline_status(pipeline: PipelineOpt, as_json: JsonOpt = False) -> None:
    """Paused or frozen, each environment's release, the running train and queued commit, held commits, past trains."""

    async def go() -> None:
        status = await (await AirAgent.connect()).pipeline_status(pipeline)
        live = await asyncio.to_thread(live_releases, status)
        if as_json:
            print(json.dumps({**status.model_dump(mode="json"), "live": live}, indent=2))
        else:
            console.print(render_pipeline(status, live))

    run(go())


def live_releases(status: ConductorStatus) -> dict[str, str]:
    """What each environment runs now, from its own record, so a rollback outside a train shows at once."""
    from activities.environment import environment  # the targets' clients load only when asked

    found = {}
    for env in status.settings.environments if status.settings else []:
        try:
            marker = environment(env, status.settings).marker()
        except Exception as err:  # another host's folder, a cluster out of reach: the status still shows
            found[env.name] = f"unknown here ({type(err).__name__}: {err})"
            continue
        commit = f" at {marker.live_commit[:12]}" if marker.live_commit else ""
        found[env.name] = f"{marker.live or 'nothing'}{commit}"
    return found


def _pipeline_control(name: PipelineControl):
    def command(
        pipeline: PipelineOpt,
        reason: Annotated[str | None, typer.Option(help="why; kept in the conductor's event log")] = None,
        by: Annotated[str | None, typer.Option(help="who (default: your user name)")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        raise typer.Exit(
            run(send_control(conductor_id(pipeline), name, Control(by=by or current_user(), reason=reason), as_json))
        )

    command.__doc__ = {
        PipelineControl.pause: "Start no new trains (a running train goes on).",
        PipelineControl.resume: "Let trains start again after a pause.",
        PipelineControl.freeze: "Kill switch: start no new trains until unfrozen; needs --reason.",
        PipelineControl.unfreeze: "Lift a freeze.",
    }[name]
    return friendly(command)


for _pipeline_name in PipelineControl:  # not `_name`: that one holds a TrainControl
    pipeline_app.command(name=_pipeline_name)(_pipeline_control(_pipeline_name))


@app.command()
@friendly
def notify(
    pipeline: PipelineOpt,
    sha: Annotated[
        str | None, typer.Option(help="the commit that was merged (a hint; the branch head is deployed)")
    ] = None,
    by: Annotated[str | None, typer.Option(help="who or what sends this, e.g. the CI job")] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="the runtime image CI built and pushed for --sha, named by "
            "`airagent image tag` (kubernetes, builder external)"
        ),
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: JsonOpt = False,
) -> None:
    """For CI after a merge: have the conductor look at the branch now (starting it if needed).

    From then on it follows the branch, as after `pipeline start`."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> int:
        agent = await AirAgent.connect()
        ack = await agent.notify(settings, sha, by, image)
        emit(
            ack.model_dump(),
            as_json,
            ack.message if ack.accepted else Text(f"notify rejected: {ack.message}", style="red"),
        )
        await note_unapplied(agent, settings, config)
        return 0 if ack.accepted else 1

    raise typer.Exit(run(go()))
