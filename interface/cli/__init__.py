"""`airagent`: run the deployer, start trains, watch and steer them. `--json` for machines on what reads trains,
pipelines and environments.

One module per group of commands. The console script imports only the module of the command it runs: the
Temporal client and the workflows take seconds to import, which `validate` on every save and `test` should not
pay. `app` with every command (for `--help`, and for tests) is `interface.cli.app`.
"""

from __future__ import annotations

import importlib
import os
import sys

# In the order `--help` lists their commands; importing one registers its commands on the app.
MODULES = (
    "server",
    "trains",
    "validate",
    "dagtest",
    "pipeline",
    "preview",
    "image",
    "env",
    "config",
    "gc",
    "metrics",
    "init",
    "doctor",
)
# Each command (or group) by the module that registers it; tests/test_cli_output.py checks it against the app.
COMMANDS = {
    **dict.fromkeys(("dev", "worker", "demo"), "server"),
    **dict.fromkeys(
        ("deploy", "status", "pause", "resume", "abort", "approve", "repair", "rollback", "history"), "trains"
    ),
    "validate": "validate",
    "test": "dagtest",
    **dict.fromkeys(("pipeline", "notify"), "pipeline"),
    "preview": "preview",
    "image": "image",
    "env": "env",
    "config": "config",
    "gc": "gc",
    "metrics": "metrics",
    "init": "init",
    "doctor": "doctor",
}

__all__ = ["COMMANDS", "MODULES", "app", "main"]


def __getattr__(name: str):
    """`app`, with every command registered, imported when asked for."""
    if name == "app":
        return register(MODULES)
    raise AttributeError(name)


def register(modules):
    for module in modules:
        importlib.import_module(f"interface.cli.{module}")
    from interface.cli.base import app

    return app


def main() -> None:
    """The console script. It leaves with os._exit once output is flushed: the Temporal client's
    core threads can abort CPython's teardown of a short-lived process (temporalio/sdk-python#300),
    which would turn a clean exit code into SIGABRT."""
    named = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    app = register([COMMANDS[named]] if named in COMMANDS else MODULES)
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
