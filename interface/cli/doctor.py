"""`airagent doctor`: is everything a train needs in place? One line per check, with the fix."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer
from rich.text import Text

from airagent.connection import task_queue
from interface.checks import Check, environments, host, safely, safely_async, temporal
from interface.cli.base import DEFAULT_CONFIG, ConfigOpt, JsonOpt, app, console, run

MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


@app.command()
def doctor(config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Check Temporal, its search attributes, the workers, each conductor and environment, the sandbox, disk and
    runtimes; each problem comes with its fix. Exit 1 when a check fails (warnings do not)."""
    checks = run(diagnose(config))
    if as_json:
        print(json.dumps([c.as_json() for c in checks], indent=2))
    else:
        for c in checks:
            line = Text.assemble(MARKS[c.level], f" {c.check}: {c.detail}")
            if c.fix and c.level != "ok":
                line.append(" → fix:", style="dim").append(f" {c.fix}")
            console.print(line, soft_wrap=True)
        failed = sum(c.level == "fail" for c in checks)
        warned = sum(c.level == "warn" for c in checks)
        warnings = "1 warning" if warned == 1 else f"{warned} warnings"
        console.print(f"{len(checks)} checks: {failed} failed, {warnings}" if failed or warned else "all checks pass")
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


async def diagnose(config: Path) -> list[Check]:
    """Every check, in the order a fix is best made: the config and Temporal first, as the rest build on them."""
    found, pipelines = host.configured(config)
    checks = [found]
    reached, client = await temporal.reachable()
    checks.append(reached)
    if client is not None:  # without a server, its checks would only repeat that it is unreachable
        queue = task_queue()
        checks.append(await safely_async("search attributes", partial(temporal.search_attributes_check, client)))
        checks.append(await safely_async("worker", partial(temporal.worker, client, queue)))
        for name in sorted({e.host for p in pipelines for e in p.environments if e.host}):
            checks.append(await safely_async(f"worker@{name}", partial(temporal.host_worker, client, queue, name)))
        for p in pipelines:
            checks.append(
                await safely_async(f"conductor {p.name}", partial(temporal.conductor, client, p, queue, config))
            )
    for p in pipelines:
        for e in p.environments:
            checks.append(safely(f"env {p.name}/{e.name}", partial(environments.environment, p, e, config)))
    checks.append(safely("sandbox", partial(host.sandbox_check, pipelines)))
    checks.append(safely("api swap", partial(host.api_swap, pipelines)))
    checks.append(safely("disk", host.disk))
    checks.append(safely("runtimes", partial(host.runtimes, pipelines, config)))
    return checks
