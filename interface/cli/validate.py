"""`airagent validate`: the validate stage on a working tree or a commit, before a merge, on every save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from airagent import config as config_module
from airagent.config import ConfigError
from interface.cli.base import JsonOpt, app, console, err_console, friendly
from interface.terminal import labelled


@app.command()
@friendly
def validate(
    path: Annotated[Path, typer.Argument(help="the root of a working tree of the monorepo")] = Path("."),
    sha: Annotated[str | None, typer.Option(help="check this commit instead of the files on disk")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="default: the only pipeline")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="default: PATH/airagent.yaml")] = None,
    changed: Annotated[
        bool, typer.Option("--changed", help="only the DAG files the working tree changes, and those importing them")
    ] = False,
    base: Annotated[
        str | None,
        typer.Option(help="with --changed: compare with this ref (default: where HEAD left the pipeline's branch)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the validate stage on a working tree (or --sha) before you merge: parse, policies, removed DAGs
    since the branch point, owners. Exit 3 when it would stop a train, 1 when this host cannot check.

    --changed checks only what the tree changes against --base, with the same verdicts; a change to plugins,
    config, requirements or a data file checks everything, and says so."""
    from temporalio.exceptions import ApplicationError

    from activities.validation.tree import check_changed, check_tree

    cfg, folder = config_module.load(config or path / config_module.DEFAULT_FILE)
    if pipeline is None and len(cfg.pipelines) != 1:
        raise ConfigError(
            f"{len(cfg.pipelines)} pipelines declared; pick one with --pipeline ({', '.join(cfg.pipelines)})"
        )
    if changed and sha is not None:
        raise typer.BadParameter("--changed compares the files on disk; drop --sha or --changed")
    if base is not None and not changed:
        raise typer.BadParameter("--base says what --changed compares with; add --changed")
    settings = cfg.pipeline(pipeline or next(iter(cfg.pipelines)), folder)
    scope = None
    try:
        if changed:
            report, scope = check_changed(settings, path.resolve(), base)
        else:
            report = check_tree(settings, path.resolve(), sha)
    except ApplicationError as err:
        # What fails a train's build (requirements that do not resolve, a link out of the commit) fails here
        # as the train says it; a host without a sandbox checked nothing.
        err_console.print(labelled("error:", "red", err.message))
        raise typer.Exit(1 if err.type == "SandboxUnavailable" else 3) from None
    checked = [f.path for f in report.files]
    if as_json and scope is not None:
        answer = report.model_dump(mode="json") | {"checked": checked, "why": scope.describe(len(checked))}
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    elif as_json:
        print(report.model_dump_json(indent=2))
    else:
        console.print(report.summary(), style="green" if report.ok else "red", soft_wrap=True)
        if scope is not None:
            console.print(scope.describe(len(checked)), soft_wrap=True)
    raise typer.Exit(0 if report.ok else 3)
