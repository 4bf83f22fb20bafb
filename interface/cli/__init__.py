"""`airagent`: run the deployer, start trains, watch and steer them. `--json` for machines on what reads trains,
pipelines and environments.

One module per group of commands.
"""

from __future__ import annotations

import os
import sys

# isort: off
# Imported in the order `--help` lists their commands; importing registers them on `app`.
from interface.cli import server, trains, dagtest, pipeline, preview, image, env, config, gc, metrics, init, doctor  # noqa: F401

# isort: on
from interface.cli.base import app

__all__ = ["app", "main"]


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
