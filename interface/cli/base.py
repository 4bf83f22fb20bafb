"""What every command shares: the app, the consoles, the common options, and one clear line for a user's mistake."""

from __future__ import annotations

import asyncio
import json
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import RenderableType
from rich.text import Text

from airagent import config as config_module
from airagent.config import ConfigError, PipelineSettings
from airagent.models import Control
from airagent.repo import RepoError
from interface.terminal import console, err_console, labelled

if TYPE_CHECKING:
    from interface.client import AirAgent

HELP = (
    "`airagent`: run the deployer, start trains, watch and steer them. `--json` for machines on what reads trains, "
    "pipelines and environments."
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)


@app.callback()
def commands() -> None:
    """A group of commands even when the console script registered only the one it runs (interface/cli)."""


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
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except (ConfigError, RepoError) as err:
            err_console.print(labelled("error:", "red", str(err)))
            raise typer.Exit(2) from None
        except Exception as err:
            refusals, unreachable = _client_errors()
            if isinstance(err, refusals):
                err_console.print(labelled("error:", "red", str(err)))
                raise typer.Exit(2) from None
            if isinstance(err, unreachable):
                err_console.print(
                    labelled(
                        "error:",
                        "red",
                        f"cannot reach Temporal ({err}); start it with `airagent dev` or set TEMPORAL_ADDRESS",
                    )
                )
                raise typer.Exit(2) from None
            raise

    return wrapper


def _client_errors() -> tuple[tuple[type[Exception], ...], type[Exception]]:
    """The client's refusals and an unreachable Temporal, imported once a command fails: a command that never
    talks to Temporal does not pay seconds for importing its client."""
    from airagent.connection import TemporalUnreachable
    from interface.client import DeployRefused, NotFound, RollbackRefused, TrainRunning

    return (TrainRunning, DeployRefused, NotFound, RollbackRefused), TemporalUnreachable


def run(coro):
    return asyncio.run(coro)


# --- services -------------------------------------------------------------------------


async def send_control(wf_id: str, name: str, control: Control, as_json: bool) -> int:
    from interface.client import AirAgent

    ack = await (await AirAgent.connect()).control(wf_id, name, control)
    emit(
        ack.model_dump(),
        as_json,
        Text(f"{name}: {ack.message}", style="green")
        if ack.accepted
        else Text(f"{name} rejected: {ack.message}", style="red"),
    )
    return 0 if ack.accepted else 1


async def note_unapplied(agent: AirAgent, settings: PipelineSettings, config: Path) -> None:
    """Say so when the file differs from what the pipeline's running conductor deploys with: only an operator's
    `reconfigure` changes that, so the file was not applied."""
    unapplied = await agent.unapplied(settings)
    if unapplied:
        err_console.print(
            labelled(
                "note:",
                "yellow",
                f"the conductor of {settings.name} deploys with its own settings, not {config}'s "
                f"(they differ in {', '.join(unapplied)}); to change them, `airagent pipeline reconfigure "
                f"-p {settings.name} -c {config} --reason ...`",
            )
        )


def current_user() -> str:
    import getpass

    return getpass.getuser()


def emit(data: dict, as_json: bool, text: RenderableType) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        console.print(text)
