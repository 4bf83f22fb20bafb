"""`airagent config`: check airagent.yaml or print its JSON Schema."""

from __future__ import annotations

import json

import typer

from airagent import config as config_module
from interface.cli.base import DEFAULT_CONFIG, ConfigOpt, app, console, err_console, friendly
from interface.terminal import labelled

config_app = typer.Typer(no_args_is_help=True, help="Check airagent.yaml or print its JSON Schema.")
app.add_typer(config_app, name="config")


@config_app.command("check")
@friendly
def config_check(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check airagent.yaml; every mistake is named with its file, line and field, and so is every warning."""
    cfg, base, warnings = config_module.check(config)
    for warning in warnings:
        err_console.print(labelled("warning:", "yellow", warning))
    for name in cfg.pipelines:
        p = cfg.pipeline(name, base)
        console.print(
            labelled(
                "ok", "green", f"pipeline {name}: {p.repo} @ {p.branch} → {' → '.join(e.name for e in p.environments)}"
            ),
            soft_wrap=True,
        )


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of airagent.yaml (for editors and CI linters)."""
    print(json.dumps(config_module.AirAgentConfig.model_json_schema(), indent=2))
