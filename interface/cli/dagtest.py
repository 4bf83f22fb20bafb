"""`airagent test`: a DAG author's DAGs, each run once in the release runtime and the sandbox, before a merge."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from activities.dagtest.report import DagResult, DagTestReport
from airagent import config as config_module
from airagent.config import ConfigError
from interface.cli.base import JsonOpt, app, console, err_console, friendly
from interface.terminal import labelled


@app.command(name="test")
@friendly
def dag_test(
    path: Annotated[Path, typer.Argument(help="the root of a working tree of the monorepo")] = Path("."),
    dag: Annotated[
        list[str] | None, typer.Option("--dag", help="a dag_id to run; repeat for more (default: every DAG)")
    ] = None,
    changed: Annotated[
        bool,
        typer.Option("--changed", help="the DAGs of the files the working tree changes, and of those importing them"),
    ] = False,
    base: Annotated[
        str | None,
        typer.Option(help="with --changed: compare with this ref (default: where HEAD left the pipeline's branch)"),
    ] = None,
    sha: Annotated[str | None, typer.Option(help="run this commit's DAGs instead of the files on disk")] = None,
    timeout: Annotated[float, typer.Option(help="seconds one DAG's run may take; past it, it fails alone")] = 120.0,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="default: the only pipeline")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="default: PATH/airagent.yaml")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run each DAG of a working tree (or --sha) once, as DAG.test() does, in the runtime the release would get,
    sandboxed: no deployer secrets, no network unless validation.tests_network, a throwaway database per DAG.

    Connections and variables come from validation.test_connections / test_variables (default
    tests/connections.yaml, tests/variables.yaml) and then validation.placeholders. Exit 0 when every run
    succeeded, 3 when one failed, 1 when this host cannot run them. Under GitHub Actions
    ($GITHUB_STEP_SUMMARY set) a table goes to the job summary and each failing DAG is annotated."""
    from temporalio.exceptions import ApplicationError

    from activities.dagtest.run import BenchUnavailable
    from activities.dagtest.tree import run_tree
    from activities.sandbox import SandboxUnavailable

    cfg, folder = config_module.load(config or path / config_module.DEFAULT_FILE)
    if pipeline is None and len(cfg.pipelines) != 1:
        raise ConfigError(
            f"{len(cfg.pipelines)} pipelines declared; pick one with --pipeline ({', '.join(cfg.pipelines)})"
        )
    if changed and (sha is not None or dag):
        raise typer.BadParameter("--changed picks the DAGs from the files on disk; drop --sha and --dag")
    if base is not None and not changed:
        raise typer.BadParameter("--base says what --changed compares with; add --changed")
    if timeout <= 0:
        raise typer.BadParameter("--timeout is in seconds, above 0")
    settings = cfg.pipeline(pipeline or next(iter(cfg.pipelines)), folder)
    try:
        report = run_tree(
            settings,
            path.resolve(),
            sha,
            dag or (),
            changed_only=changed,
            base=base,
            timeout=timeout,
            done=(lambda result: None) if as_json else (lambda result: console.print(describe(result), soft_wrap=True)),
        )
    except (BenchUnavailable, SandboxUnavailable) as err:
        err_console.print(labelled("error:", "red", str(err)))
        raise typer.Exit(1) from None
    except ApplicationError as err:
        # As `validate`: requirements that do not resolve fail here as a train's build; no sandbox, nothing ran.
        err_console.print(labelled("error:", "red", err.message))
        raise typer.Exit(1 if err.type == "SandboxUnavailable" else 3) from None
    if as_json:
        print(report.model_dump_json(indent=2, include={"dags", "broken", "scope"}))
    else:
        for file, error in report.broken.items():
            console.print(Text.assemble((f"{file}: does not import: ", "red"), error), soft_wrap=True)
        if report.scope:
            console.print(report.scope, soft_wrap=True)
        console.print(verdict(report), style="green" if report.ok else "red", soft_wrap=True)
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a") as page:
            page.write(report.markdown())
        for line in report.annotations():
            # Workflow commands are read from the step's output; with --json, stdout is the answer.
            (err_console if as_json else console).print(line, soft_wrap=True, highlight=False)
    raise typer.Exit(0 if report.ok else 3)


def describe(result: DagResult) -> Text:
    """One line for a DAG, then one for each failing task with its log's tail."""
    where = f"{result.file}:{result.line}" if result.line else result.file
    if result.ok:
        return Text.assemble(("ok ", "green"), f"{result.dag_id} ({where}, {result.seconds:.1f}s)")
    text = Text.assemble(("FAILED ", "red"), f"{result.reason()} ({where}, {result.seconds:.1f}s)")
    for task in result.failing_tasks():
        took = f", {task.seconds:.1f}s" if task.seconds is not None else ""
        text.append(f"\n  {task.task_id}: {task.state} (try {task.try_number}{took})")
        for line in task.log_tail:
            text.append(f"\n    {line}", style="dim")
    if result.error and not result.failing_tasks():
        for line in result.error.strip().splitlines()[-20:]:
            text.append(f"\n    {line}", style="dim")
    return text


def verdict(report: DagTestReport) -> str:
    failed = [d for d in report.dags if not d.ok]
    if not report.dags and not report.broken:
        return "no DAG to run"
    said = f"{len(report.dags) - len(failed)} of {len(report.dags)} DAGs ran successfully"
    return said + (f"; {len(report.broken)} files do not import" if report.broken else "")
