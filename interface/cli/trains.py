"""Commands about trains: deploy one, watch it, steer it, roll back, read the history."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from rich.text import Text

from airagent import config as config_module
from airagent import repair as repair_module
from airagent.models import Control, TrainControl
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
from interface.client import (
    EXIT_TIMEOUT,
    AirAgent,
    exit_code,
)
from interface.display import follow, render, render_history


@app.command()
@friendly
def deploy(
    pipeline: PipelineOpt,
    sha: Annotated[str | None, typer.Option(help="commit to deploy (default: head of the branch)")] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="runtime image CI built for the commit, tagged with its runtime hash (kubernetes, builder external)"
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait for the train to end; exit code tells how it ended")] = False,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait, with --wait")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: JsonOpt = False,
) -> None:
    """Start a train. A running conductor deploys with its own settings, not the file's (`pipeline reconfigure`
    changes them). With --wait, exit 0 for succeeded or noop, 3 failed, 4 rolled back, 5 aborted, 6 timeout."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> int:
        agent = await AirAgent.connect()
        answer = await agent.deploy(settings, sha, image, by=current_user())
        await note_unapplied(agent, settings, config)
        if not wait:
            emit({"train": answer.train, "message": answer.message}, as_json, f"{answer.train}: {answer.message}")
            return 0
        assert answer.train is not None  # deploy() raises DeployRefused for an answer without one
        try:
            status = await follow(
                agent,
                answer.train,
                quiet=as_json,
                timeout=timedelta(seconds=timeout) if timeout else None,
                since=answer.asked,
            )
        except TimeoutError:
            emit(
                {"train": answer.train, "state": "timeout"}, as_json, f"{answer.train}: still running after {timeout}s"
            )
            return EXIT_TIMEOUT
        if as_json:
            print(status.model_dump_json(indent=2))
        return exit_code(status)

    raise typer.Exit(run(go()))


@app.command()
@friendly
def status(
    train: Annotated[str | None, typer.Argument(help="train id, e.g. train/main/1a2b3c4d5e6f")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="latest train of this pipeline")] = None,
    watch: Annotated[bool, typer.Option(help="follow the train until it ends")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a train: its stage, environments and probes, commits, held-back commits, validation, controls.

    --watch prints each stage as it moves. Once the train has ended, the exit code is as for `deploy --wait`."""

    async def go() -> int:
        agent = await AirAgent.connect()
        wf_id = train or await agent.latest(pipeline)
        if watch:
            result = await follow(agent, wf_id, quiet=as_json)
        else:
            result = await agent.status(wf_id)
            if not as_json:
                console.print(render(wf_id, result))
        if as_json:
            print(result.model_dump_json(indent=2))
        return exit_code(result) if result.state.finished else 0

    raise typer.Exit(run(go()))


def _control_command(name: TrainControl):
    def command(
        train: Annotated[str, typer.Argument(help="train id, e.g. train/main/1a2b3c4d5e6f")],
        reason: Annotated[str | None, typer.Option(help="why; kept in the train's event log")] = None,
        by: Annotated[str | None, typer.Option(help="who (default: your user name)")] = None,
        env: Annotated[str | None, typer.Option(help="environment, for rollback and approve")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        raise typer.Exit(
            run(send_control(train, name, Control(by=by or current_user(), reason=reason, environment=env), as_json))
        )

    command.__doc__ = {
        TrainControl.pause: "Hold the train at its next safe point (a paused soak's clock stops).",
        TrainControl.resume: "Let a paused train go on.",
        TrainControl.abort: "Stop the train and roll back every environment it changed.",
        TrainControl.rollback: "Roll back now (every environment the train changed, or --env) and end the train.",
        TrainControl.approve: "Pass the manual approval gate before an environment.",
    }[name]
    return friendly(command)


for _name in TrainControl:
    if _name != TrainControl.rollback:
        app.command(name=_name)(_control_command(_name))
_rollback_train = _control_command(TrainControl.rollback)


@app.command()
@friendly
def repair(
    workflow: Annotated[
        str, typer.Argument(help="a train or conductor id whose workflow tasks fail with a nondeterminism error")
    ],
    reset: Annotated[bool, typer.Option("--reset", help="reset it there; without, only say where")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the workflow task from which a wedged train or conductor no longer replays on this code; --reset runs
    it again from there (what it did before, rolls included, stands)."""
    from worker.main import WORKFLOWS  # the code a reset run continues on is this worker's

    async def go() -> int:
        agent = await AirAgent.connect()
        run_id = (await agent.client.get_workflow_handle(workflow).describe()).run_id
        history = await agent.client.get_workflow_handle(workflow, run_id=run_id).fetch_history()
        point = await repair_module.reset_point(history, WORKFLOWS)
        if point is None:
            emit(
                {"workflow": workflow, "reset_to": None},
                as_json,
                f"{workflow}: its whole history replays on this code; nothing to repair",
            )
        elif not reset:
            emit(
                {"workflow": workflow, "reset_to": point},
                as_json,
                f"{workflow}: replays up to the workflow task that ends at event {point}; "
                f"`airagent repair {workflow} --reset` runs that task again on this code",
            )
        else:
            new_run = await repair_module.reset(
                agent.client, workflow, run_id, point, reason=f"airagent repair by {current_user()}"
            )
            emit(
                {"workflow": workflow, "reset_to": point, "run_id": new_run},
                as_json,
                f"{workflow}: reset to event {point}; it goes on as run {new_run}",
            )
        return 0

    raise typer.Exit(run(go()))


@app.command()
@friendly
def rollback(
    train: Annotated[str | None, typer.Argument(help="a running train to roll back")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="without TRAIN: the pipeline")] = None,
    env: Annotated[str | None, typer.Option(help="environment (with TRAIN: only this one)")] = None,
    to: Annotated[str | None, typer.Option(help="without TRAIN: release id (default: the one before)")] = None,
    reason: Annotated[str | None, typer.Option(help="why; kept in the event log")] = None,
    by: Annotated[str | None, typer.Option(help="who (default: your user name)")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: JsonOpt = False,
) -> None:
    """Roll back a running train (TRAIN), or put an environment back on an earlier release
    (--pipeline --env [--to]) and freeze the pipeline so the next train does not undo it."""
    if train:
        return _rollback_train(train, reason=reason, by=by, env=env, as_json=as_json)
    if not (pipeline and env):
        raise typer.BadParameter("give a TRAIN, or --pipeline and --env")
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> None:
        result = await (await AirAgent.connect()).rollback_environment(settings, env, to, by or current_user(), reason)
        emit(
            result.model_dump(),
            as_json,
            Text.assemble(
                (f"{env} back on {result.live} (was {result.replaced}); pipeline frozen: {result.frozen}", "green"),
                f"\nunfreeze with `airagent pipeline unfreeze --pipeline {pipeline} --reason ...`",
            ),
        )

    run(go())


@app.command()
@friendly
def history(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline")] = None,
    limit: Annotated[int, typer.Option(help="how many trains, newest first")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent trains, newest first, from Temporal visibility."""

    async def go() -> None:
        agent = await AirAgent.connect()
        trains = await agent.history(pipeline, limit)
        if as_json:
            print(json.dumps([t.model_dump(mode="json") for t in trains], indent=2))
            return
        console.print(render_history(trains))

    run(go())
