"""`airagent env`: start, stop and show a local environment's Airflow components."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from airagent import config as config_module
from airagent.config import ConfigError
from interface.cli.base import DEFAULT_CONFIG, ConfigOpt, JsonOpt, app, console, err_console, friendly
from interface.display import id_column, timestamp
from interface.terminal import labelled

if TYPE_CHECKING:  # imported where used: `airagent --help` need not load the drivers
    from activities.targets.local_airflow import LocalAirflow

env_app = typer.Typer(no_args_is_help=True, help="Start, stop and show a local environment's Airflow components.")
app.add_typer(env_app, name="env")


EnvArg = Annotated[str, typer.Argument(help="environment name from airagent.yaml")]
EnvPipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", help="pipeline name from airagent.yaml")]


def _local(pipeline: str, environment: str, config: Path, say: Callable[[str], None] | None = None):
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
    return LocalAirflow(env.name, env.target, env.probes, say), settings


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
            err_console.print(labelled("error:", "red", str(err)))
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
    metrics = f"; metrics for Prometheus at {env.exporter.url}" if env.exporter.url else ""
    console.print(
        f"{environment}: {message}; API http://127.0.0.1:{env.target.port} (login in {env.secrets / 'api-login'})"
        + metrics,
        soft_wrap=True,
    )


@env_app.command("down")
@_env_command
def env_down(environment: EnvArg, pipeline: EnvPipelineOpt = "main", config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Stop the components; the scheduler first lets running tasks finish (up to the drain timeout).

    Each wait is said before it starts, with what it waits for and how long at most."""

    def say(line: str) -> None:  # task ids come from the repo's DAGs: printed as they are, never as markup
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    env, _ = _local(pipeline, environment, config, say)
    say(f"{environment}: {env.down()}")


@env_app.command("status")
@_env_command
def env_status(
    environment: EnvArg, pipeline: EnvPipelineOpt = "main", config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False
) -> None:
    """What runs there: the live release, each component, and Airflow's own health. Exit 1 when not all run."""
    from activities.targets.local_airflow import COMPONENTS

    env, _ = _local(pipeline, environment, config)
    live = env.files.live()
    processes = env.processes()
    stopped = env.stopped()
    state = "running" if not stopped else "down" if len(stopped) == len(COMPONENTS) else "partly down"
    fix = (
        f"airagent env up {environment}"
        + (f" -p {pipeline}" if pipeline != "main" else "")
        + (f" -c {config}" if config != DEFAULT_CONFIG else "")
    )
    data = {
        "environment": environment,
        "state": state,
        "live": live.id if live else None,
        "commit": live.commit if live else None,
        "running": not stopped,
        "stopped": stopped,
        "fix": fix if stopped else None,
        "components": {name: {**p.model_dump(mode="json"), "alive": p.alive} for name, p in processes.items()},
        "health": _health(env, "api-server" in stopped),
        "metrics": {"url": env.exporter.url, "alive": env.exporter.alive()} if env.exporter.url else None,
    }
    if as_json:
        print(json.dumps(data))
    elif state == "down":
        console.print(
            Text.assemble(
                (environment, "bold"),
                ": ",
                ("down", "red"),
                f" (no component runs), live {data['live'] or 'nothing'}; start it with `{fix}`",
            ),
            soft_wrap=True,
        )
    else:
        table = Table("component", "pid", "state", id_column("started on"), "since")
        for name, p in sorted(processes.items()):
            table.add_row(
                name,
                str(p.pid),
                Text("running", style="green") if p.alive else Text("down", style="red"),
                p.release or "(empty)",
                timestamp(p.started),
            )
        console.print(
            labelled(
                f"{environment}:",
                "bold",
                f"{state}, live {data['live'] or 'nothing'}, API http://127.0.0.1:{env.target.port}",
            )
        )
        console.print(table)
        console.print(f"health: {json.dumps(data['health'])}", soft_wrap=True)
        if env.exporter.url:
            exporter = "serving" if env.exporter.alive() else f"exporter down; `{fix}` starts it"
            console.print(f"metrics for Prometheus: {env.exporter.url} ({exporter})", soft_wrap=True)
        if stopped:
            console.print(f"{', '.join(stopped)} down; start {'it' if len(stopped) == 1 else 'them'} with `{fix}`")
    raise typer.Exit(0 if data["running"] else 1)


def _health(env: LocalAirflow, api_down: bool) -> dict:
    """Airflow's own health; without an api-server to ask, why not, instead of a connection error."""
    if api_down:
        return {"error": "the api-server is not running"}
    try:
        with env.api(timeout=3) as api:
            return api.health()
    except Exception as err:  # an api-server starting up or hung: say what the request met
        return {"error": f"the API does not answer: {type(err).__name__}: {err}"}
