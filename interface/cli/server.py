"""Commands that run airagent itself: the dev server, a worker, the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from airagent import config as config_module
from interface.cli.base import app, console, err_console, run
from interface.terminal import labelled


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
) -> None:
    """Run a persistent Temporal dev server with airagent's search attributes, until Ctrl-C."""
    from airagent import devserver

    server = devserver.DevServer(config_module.home(), port=port, ui_port=ui_port)
    if not server.start():
        err_console.print(
            labelled("error:", "red", f"a server already listens on localhost:{port}; use it, or pick --port")
        )
        raise typer.Exit(2)
    console.print(
        f"Temporal dev server on localhost:{port}, Web UI http://localhost:{ui_port} "
        f"(state in {server.db}); Ctrl-C stops it"
    )
    assert server.process is not None  # start() just started it
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
def worker(
    task_queue: Annotated[str | None, typer.Option(help="default: $AIRAGENT_TASK_QUEUE or 'airagent'")] = None,
) -> None:
    """Run a worker; SIGTERM or Ctrl-C lets running activities finish first.

    It polls the shared task queue and this host's (`<queue>@<host>`), and sweeps this host's disk."""
    from worker.main import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every URL, and a probe's may carry a token
    run(serve(task_queue))


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="exit when the scenario is done")] = False,
    repo: Annotated[
        Path | None,
        typer.Option(help="a monorepo of yours: only its head is deployed (default: the example, with every scene)"),
    ] = None,
) -> None:
    """Dev server, worker, example monorepo, real Airflow staging and prod: every scene, checked as it goes.

    The head deploys through both; one team's broken DAG is held back while another's change lands, and its fix
    lifts the hold; a DAG whose task fails is rolled back by staging's soak. Exit 1 when a step did not behave as
    described; the services stay up until Ctrl-C."""
    from interface import demo as demo_module

    raise typer.Exit(demo_module.main(once=once, repo=repo))


# --- trains ---------------------------------------------------------------------------
