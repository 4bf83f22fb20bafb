"""`airagent init`: write an airagent.yaml for an existing repository, check it, validate its head."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from airagent import config as config_module
from airagent.devserver import port_open
from interface.cli.base import app, console, err_console, friendly
from interface.init_yaml import ENVIRONMENTS, PIPELINE, STATE, render
from interface.inspect_repo import InitError, Layout, inspect
from interface.terminal import labelled


@app.command()
@friendly
def init(
    path: Annotated[Path, typer.Argument(help="the root of the repository (default: here)")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="replace an existing airagent.yaml")] = False,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="skip validating the head")] = False,
) -> None:
    """Inspect a repository and write a commented airagent.yaml: DAG and plugins folders, requirements, the
    Airflow version, teams, and a local staging and prod. Then validate the head and say what to run next."""
    target = path / config_module.DEFAULT_FILE
    if target.exists() and not force:
        err_console.print(labelled("error:", "red", f"{target} exists; keep it, or replace it with --force"))
        raise typer.Exit(2)
    try:
        layout = inspect(path)
    except InitError as err:
        err_console.print(labelled("error:", "red", str(err)))
        raise typer.Exit(2) from None
    _write_checked(target, render(layout))
    _ignore_state(layout.root)
    console.print(labelled("wrote", "green", f"{target}: {_summary(layout)}"), soft_wrap=True)
    for note in _notes(layout):
        err_console.print(labelled("note:", "yellow", note))
    code = 0 if no_validate else _validate(target, layout)
    _next_steps(target)
    raise typer.Exit(code)


def _write_checked(target: Path, text: str) -> None:
    """Load the file with the real loader before it takes the name: a file init wrote always passes
    `config check`. The draft sits beside it, so relative paths mean the same."""
    draft = target.with_name(f".{target.name}.draft")
    draft.write_text(text)
    try:
        _, _, warnings = config_module.check(draft)
        os.replace(draft, target)
    finally:
        draft.unlink(missing_ok=True)
    for warning in warnings:
        err_console.print(labelled("warning:", "yellow", warning))


def _ignore_state(root: Path) -> None:
    """The environments live under the repository; a .gitignore of their own keeps their releases, database
    and API login out of every commit, without touching the repository's files."""
    state = root / Path(STATE).parts[0]
    state.mkdir(exist_ok=True)
    ignore = state / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# airagent's local environments and state: never committed\n*\n")


def _summary(layout: Layout) -> str:
    envs = " → ".join(name for name, _, _ in ENVIRONMENTS)
    teams = f", teams {', '.join(layout.teams)}" if layout.teams else ""
    return (
        f"pipeline {PIPELINE} ({layout.branch} → {envs}), DAGs in {layout.dag_folder}, Airflow {layout.airflow}{teams}"
    )


def _notes(layout: Layout) -> list[str]:
    notes = []
    if layout.airflow.startswith(("1.", "2.")):
        notes.append(
            f"Airflow {layout.airflow} ({layout.version_from}): local environments run Airflow 3's components; "
            "move to Airflow 3 before `airagent env up`"
        )
    if not layout.is_git:
        notes.append(f"{layout.root} is not a git repository: `git init`, commit, then start the pipeline")
    elif layout.head is None:
        notes.append(f"{layout.branch} has no commit yet: commit the repository, then start the pipeline")
    taken = [f"{name}'s port {port}" for name, port, _ in ENVIRONMENTS if port_open(port)]
    if taken:
        notes.append(f"something listens on {', '.join(taken)}; give that environment another `port` (5 apart)")
    return notes


def _validate(target: Path, layout: Layout) -> int:
    """The validate stage on the head, as `airagent validate` runs it: on the working tree when that holds the
    head's files (nothing to export), else on the head's commit; exit 3 when it would stop a train."""
    from temporalio.exceptions import ApplicationError

    from activities.sandbox import SandboxUnavailable
    from activities.validation.service import ParserFailed
    from activities.validation.tree import check_tree

    settings = config_module.load_pipeline(PIPELINE, target)
    sha = None if layout.clean else layout.head
    what = f"the head ({layout.head[:12]})" if layout.head else "the working tree (there is no commit yet)"
    console.print(
        f"validating {what}; the first run builds the Airflow {layout.airflow} runtime (minutes)…", soft_wrap=True
    )
    try:
        report = check_tree(settings, layout.root, sha)
    except (ApplicationError, SandboxUnavailable, ParserFailed) as err:
        err_console.print(labelled("validation could not run:", "red", str(err)))
        return 3
    console.print(report.summary(), style="green" if report.ok else "red", soft_wrap=True)
    if not report.ok:
        err_console.print("the head does not validate: a train would stop at validate until these are fixed")
    return 0 if report.ok else 3


def _next_steps(target: Path) -> None:
    here = target.resolve().parent == Path.cwd().resolve()
    config = "" if here else f" -c {shlex.quote(str(target))}"
    ups = " && ".join(f"airagent env up {name}{config}" for name, _, _ in ENVIRONMENTS)
    console.print(
        "next, with `airagent dev` and `airagent worker` running (`airagent doctor` checks them):", soft_wrap=True
    )
    for command in (ups, f"airagent pipeline start -p {PIPELINE}{config}", f"airagent pipeline status -p {PIPELINE}"):
        console.print(f"  {command}", soft_wrap=True, highlight=False)
