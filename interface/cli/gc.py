"""`airagent gc`: remove what no environment needs any more, and say what and how much."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from airagent import config as config_module
from interface.cli.base import DEFAULT_CONFIG, ConfigOpt, JsonOpt, app, console, err_console, friendly
from interface.terminal import labelled


@app.command("gc")
@friendly
def gc(
    config: ConfigOpt = DEFAULT_CONFIG,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="only this pipeline's releases (default: every pipeline)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go, remove nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove releases no environment runs or keeps to roll back to, runtimes no release uses, and old caches.

    The caches: the validation cache beyond its cap, full validation reports and DAG maps past their count or age,
    idle parsers' folders and copies that never finished. All but the releases are the host's, whatever the
    pipeline."""
    from activities import gc as collector

    cfg, base = config_module.load(config)
    pipelines = [cfg.pipeline(name, base) for name in ([pipeline] if pipeline else cfg.pipelines)]
    plan = collector.plan(pipelines)
    result = None if dry_run else collector.apply(plan)
    if as_json:
        print(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "plan": plan.model_dump(mode="json"),
                    "result": result.model_dump() if result else None,
                }
            )
        )
    else:
        for note in plan.notes:
            err_console.print(labelled("note:", "yellow", note))
        for r in plan.removals:
            console.print(f"{r.kind} {r.path} ({size(r.size)}): {r.reason}", soft_wrap=True, highlight=False)
        if result is None:
            console.print(f"would free {size(plan.size)} in {len(plan.removals)} removals (dry run: nothing removed)")
        else:
            kept = f"; {result.skipped} changed or gone since, left" if result.skipped else ""
            console.print(f"freed {size(result.freed)} in {sum(result.removed.values())} removals{kept}")
    if result is not None and result.failed:
        for failure in result.failed:
            err_console.print(labelled("could not remove", "red", failure))
        raise typer.Exit(1)


def size(count: int) -> str:
    value, unit = float(count), "B"
    for larger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
