"""`airagent`: run the deployer, start trains, watch and steer them. `--json` on every read for machines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from airagent import config as config_module
from airagent import repair as repair_module
from airagent.config import ConfigError
from airagent.connection import TemporalUnreachable
from airagent.models import Control, PipelineControl, TrainControl, conductor_id
from airagent.repo import RepoError
from interface.client import (
    EXIT_TIMEOUT,
    AirAgent,
    DeployRefused,
    NotFound,
    RollbackRefused,
    TrainRunning,
    exit_code,
)
from interface.display import follow, render, render_pipeline, timestamp

if TYPE_CHECKING:
    import subprocess

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
config_app = typer.Typer(no_args_is_help=True, help="Check airagent.yaml or print its JSON Schema.")
app.add_typer(config_app, name="config")
pipeline_app = typer.Typer(
    no_args_is_help=True, help="Run a pipeline's conductor: every commit on its branch, deployed."
)
app.add_typer(pipeline_app, name="pipeline")
image_app = typer.Typer(no_args_is_help=True, help="The runtime image of kubernetes environments, for CI.")
app.add_typer(image_app, name="image")
env_app = typer.Typer(no_args_is_help=True, help="Start, stop and show a local environment's Airflow components.")
app.add_typer(env_app, name="env")
console = Console()
# Soft wrap keeps `file:line: field` messages whole for grep and CI logs.
err_console = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="AIRAGENT_CONFIG", help="path of airagent.yaml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines")]
PipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", help="pipeline name from airagent.yaml")]
DEFAULT_CONFIG = Path(config_module.DEFAULT_FILE)


def friendly(fn):
    """Turn the mistakes a user can make into one clear line and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, RepoError, TrainRunning, DeployRefused, NotFound, RollbackRefused) as err:
            err_console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None
        except TemporalUnreachable as err:
            err_console.print(
                f"[red]error:[/red] cannot reach Temporal ({err}); start it with `airagent dev` or set TEMPORAL_ADDRESS"
            )
            raise typer.Exit(2) from None

    return wrapper


def run(coro):
    return asyncio.run(coro)


# --- services -------------------------------------------------------------------------


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
) -> None:
    """Run a persistent Temporal dev server with airagent's search attributes, until Ctrl-C."""
    from airagent import devserver

    server = devserver.DevServer(config_module.home(), port=port, ui_port=ui_port)
    server.start()
    console.print(
        f"Temporal dev server on localhost:{port}, Web UI http://localhost:{ui_port} "
        f"(state in {server.db}); Ctrl-C stops it"
    )
    # None when start() found a server already listening; .wait() then raises AttributeError, as it always has.
    process = cast("subprocess.Popen[bytes]", server.process)
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
def worker(
    task_queue: Annotated[str | None, typer.Option(help="default: $AIRAGENT_TASK_QUEUE or 'airagent'")] = None,
) -> None:
    """Run a worker; SIGTERM or Ctrl-C lets running activities finish first."""
    from worker.main import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every URL, and a probe's may carry a token
    run(serve(task_queue))


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="exit when the scenario is done")] = False,
    repo: Annotated[Path | None, typer.Option(help="monorepo to deploy (default: create the example)")] = None,
) -> None:
    """Dev server, worker, example monorepo, two trains: one that lands, one stopped at validate."""
    from interface import demo as demo_module

    raise typer.Exit(demo_module.main(once=once, repo=repo))


# --- trains ---------------------------------------------------------------------------


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
    """Start a train. With --wait, exit 0 for succeeded or noop, 3 failed, 4 rolled back, 5 aborted, 6 timeout."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> int:
        agent = await AirAgent.connect()
        answer = await agent.deploy(settings, sha, image, by=_user())
        if not wait:
            _emit({"train": answer.train, "message": answer.message}, as_json, f"{answer.train}: {answer.message}")
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
            _emit(
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
    """Show a train: stages, environments, commits, validation, controls. Exit code as for `deploy --wait`."""

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
        raise typer.Exit(run(_send(train, name, Control(by=by or _user(), reason=reason, environment=env), as_json)))

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
            _emit(
                {"workflow": workflow, "reset_to": None},
                as_json,
                f"{workflow}: its whole history replays on this code; nothing to repair",
            )
        elif not reset:
            _emit(
                {"workflow": workflow, "reset_to": point},
                as_json,
                f"{workflow}: replays up to the workflow task that ends at event {point}; "
                f"`airagent repair {workflow} --reset` runs that task again on this code",
            )
        else:
            new_run = await repair_module.reset(
                agent.client, workflow, run_id, point, reason=f"airagent repair by {_user()}"
            )
            _emit(
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
        result = await (await AirAgent.connect()).rollback_environment(settings, env, to, by or _user(), reason)
        _emit(
            result.model_dump(),
            as_json,
            f"[green]{env} back on {result.live} (was {result.replaced}); pipeline frozen: {result.frozen}[/green]\n"
            f"unfreeze with `airagent pipeline unfreeze --pipeline {pipeline} --reason ...`",
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
        table = Table("train", "state", "stage", "started", "ended")
        for t in trains:
            table.add_row(t.id, t.state, t.stage or "", timestamp(t.started), timestamp(t.ended))
        console.print(table)

    run(go())


@app.command()
@friendly
def validate(
    path: Annotated[Path, typer.Argument(help="the root of a working tree of the monorepo")] = Path("."),
    sha: Annotated[str | None, typer.Option(help="check this commit instead of the files on disk")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="default: the only pipeline")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="default: PATH/airagent.yaml")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the validate stage on a working tree (or --sha) before you merge: parse, policies, removed DAGs
    since the branch point, owners. Exit 3 when it would stop a train."""
    from activities.validation.tree import check_tree

    cfg, base = config_module.load(config or path / config_module.DEFAULT_FILE)
    if pipeline is None and len(cfg.pipelines) != 1:
        raise ConfigError(
            f"{len(cfg.pipelines)} pipelines declared; pick one with --pipeline ({', '.join(cfg.pipelines)})"
        )
    settings = cfg.pipeline(pipeline or next(iter(cfg.pipelines)), base)
    report = check_tree(settings, path.resolve(), sha)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        console.print(report.summary(), style="green" if report.ok else "red", soft_wrap=True)
    raise typer.Exit(0 if report.ok else 3)


# --- pipelines ----------------------------------------------------------------------


@pipeline_app.command("start")
@friendly
def pipeline_start(pipeline: PipelineOpt, config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Start the pipeline's conductor (idempotent): from now on the branch deploys itself."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> None:
        handle = await (await AirAgent.connect()).start_pipeline(settings)
        _emit({"conductor": handle.id}, as_json, f"conductor {handle.id} running")

    run(go())


@pipeline_app.command("status")
@friendly
def pipeline_status(pipeline: PipelineOpt, as_json: JsonOpt = False) -> None:
    """Paused or frozen, the running train, the queued commit, and the recent trains."""

    async def go() -> None:
        status = await (await AirAgent.connect()).pipeline_status(pipeline)
        if as_json:
            print(status.model_dump_json(indent=2))
        else:
            console.print(render_pipeline(status))

    run(go())


def _pipeline_control(name: PipelineControl):
    def command(
        pipeline: PipelineOpt,
        reason: Annotated[str | None, typer.Option(help="why; kept in the conductor's event log")] = None,
        by: Annotated[str | None, typer.Option(help="who (default: your user name)")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        raise typer.Exit(run(_send(conductor_id(pipeline), name, Control(by=by or _user(), reason=reason), as_json)))

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
    """For CI after a merge: have the conductor look at the branch now (starting it if needed)."""
    settings = config_module.load_pipeline(pipeline, config)

    async def go() -> int:
        ack = await (await AirAgent.connect()).notify(settings, sha, by, image)
        _emit(ack.model_dump(), as_json, ack.message if ack.accepted else f"[red]notify rejected: {ack.message}[/red]")
        return 0 if ack.accepted else 1

    raise typer.Exit(run(go()))


@image_app.command("tag")
@friendly
def image_tag(
    pipeline: PipelineOpt,
    sha: Annotated[str | None, typer.Option(help="the commit (default: head of the branch)")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Print `<repository>:<runtime hash>` of a commit: the tag CI builds and pushes, then passes to notify
    or deploy with --image. The same hash the build stage computes; nothing is built."""
    from temporalio.exceptions import ApplicationError

    from activities.build import image_tag as tag_of

    settings = config_module.load_pipeline(pipeline, config)
    if settings.image is None:
        raise ConfigError(
            f"{config}: pipeline {pipeline} has no `image:` settings; add image.repository "
            "to give its kubernetes environments a runtime image"
        )
    try:
        print(tag_of(settings, sha))
    except ApplicationError as err:  # a commit whose Dockerfile path leaves the repository
        raise ConfigError(err.message) from None


# --- config ---------------------------------------------------------------------------


# --- local environments ------------------------------------------------------------


EnvArg = Annotated[str, typer.Argument(help="environment name from airagent.yaml")]
EnvPipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", help="pipeline name from airagent.yaml")]


def _local(pipeline: str, environment: str, config: Path):
    from activities.targets.local_airflow import LocalAirflow

    settings = config_module.load_pipeline(pipeline, config)
    env = settings.environment(environment)
    if env.target.type != "local":
        raise ConfigError(
            f"{config}: environment {environment} is a {env.target.type} target: its Airflow runs "
            "as the cluster's workloads; `airagent env` starts and stops local environments"
        )
    if not env.target.airflow:
        raise ConfigError(f"{config}: environment {environment} has `airflow: false`: airagent runs no Airflow there")
    return LocalAirflow(env.name, env.target, env.probes), settings


def _env_command(fn):
    """Environment commands report a component that will not start as one line and exit 1."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from activities.targets.base import TargetError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:  # a RuntimeError too, but the command's own answer
            raise
        except (TargetError, RuntimeError) as err:
            err_console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(1) from None

    return friendly(wrapper)


@env_app.command("up")
@_env_command
def env_up(environment: EnvArg, pipeline: EnvPipelineOpt = "main", config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Start the environment's components that are not running, and wait until Airflow is healthy.

    They run detached: stopping or restarting the worker never stops them."""
    from activities.runtime import ensure_runtime

    env, settings = _local(pipeline, environment, config)
    runtime = None if env.files.live() else ensure_runtime(settings.runtime, None)[1]
    message = env.up(runtime)
    console.print(
        f"{environment}: {message}; API http://127.0.0.1:{env.target.port} (login in {env.secrets / 'api-login'})",
        soft_wrap=True,
    )


@env_app.command("down")
@_env_command
def env_down(environment: EnvArg, pipeline: EnvPipelineOpt = "main", config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Stop the components; the scheduler first lets running tasks finish (up to the drain timeout)."""
    env, _ = _local(pipeline, environment, config)
    console.print(f"{environment}: {env.down()}")


@env_app.command("status")
@_env_command
def env_status(
    environment: EnvArg, pipeline: EnvPipelineOpt = "main", config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False
) -> None:
    """What runs there: the live release, each component, and Airflow's own health. Exit 1 when not all run."""
    env, _ = _local(pipeline, environment, config)
    live = env.files.live()
    processes = env.processes()
    try:
        with env.api(timeout=3) as api:
            health = api.health()
    except Exception as err:
        health = {"error": f"{type(err).__name__}: {err}"}
    data = {
        "environment": environment,
        "live": live.id if live else None,
        "commit": live.commit if live else None,
        "running": env.running(),
        "components": {name: {**p.model_dump(mode="json"), "alive": p.alive} for name, p in processes.items()},
        "health": health,
    }
    if as_json:
        print(json.dumps(data))
    else:
        table = Table("component", "pid", "state", "started on", "since")
        for name, p in sorted(processes.items()):
            table.add_row(
                name,
                str(p.pid),
                "[green]running[/green]" if p.alive else "[red]down[/red]",
                p.release or "(empty)",
                timestamp(p.started),
            )
        console.print(
            f"[bold]{environment}[/bold]: live {data['live'] or 'nothing'}, API http://127.0.0.1:{env.target.port}"
        )
        console.print(table)
        console.print(f"health: {json.dumps(health)}", soft_wrap=True)
    raise typer.Exit(0 if data["running"] else 1)


@config_app.command("check")
@friendly
def config_check(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check airagent.yaml; every mistake is named with its file, line and field."""
    cfg, base = config_module.load(config)
    for name in cfg.pipelines:
        p = cfg.pipeline(name, base)
        console.print(
            f"[green]ok[/green] pipeline {name}: {p.repo} @ {p.branch} → {' → '.join(e.name for e in p.environments)}",
            soft_wrap=True,
        )


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of airagent.yaml (for editors and CI linters)."""
    print(json.dumps(config_module.AirAgentConfig.model_json_schema(), indent=2))


async def _send(wf_id: str, name: str, control: Control, as_json: bool) -> int:
    ack = await (await AirAgent.connect()).control(wf_id, name, control)
    _emit(
        ack.model_dump(),
        as_json,
        f"[green]{name}: {ack.message}[/green]" if ack.accepted else f"[red]{name} rejected: {ack.message}[/red]",
    )
    return 0 if ack.accepted else 1


def _user() -> str:
    import getpass

    return getpass.getuser()


def _emit(data: dict, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        console.print(text)


def main() -> None:
    """The console script. It leaves with os._exit once output is flushed: the Temporal client's
    core threads can abort CPython's teardown of a short-lived process (temporalio/sdk-python#300),
    which would turn a clean exit code into SIGABRT."""
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
