"""`airagent metrics`: a pipeline's DORA figures per environment, from the trains Temporal recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError
from rich.table import Table

from airagent import dora, train_records
from airagent.config import NAME, ConfigError
from airagent.config.base import Duration
from interface.cli.base import JsonOpt, PipelineOpt, app, console, friendly, run
from interface.client import AirAgent


def _window(text: str) -> timedelta:
    try:
        return TypeAdapter(Duration).validate_python(text)
    except ValidationError as err:
        raise ConfigError(f"--since: {err.errors()[0]['msg']}") from None


@app.command("metrics")
@friendly
def metrics(
    pipeline: PipelineOpt,
    since: Annotated[str, typer.Option(help="how far back: trains that ended in this window (30d, 12h, ...)")] = "30d",
    env: Annotated[str | None, typer.Option("--env", "-e", help="only this environment")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deployment frequency, change lead time, change fail rate, failed-deployment recovery time and rework rate,
    per environment, each with the number of deploys it rests on. The README's Metrics section defines them."""
    if not NAME.fullmatch(pipeline):
        raise ConfigError(f"{pipeline!r} is not a pipeline name: lowercase letters, digits, '-' and '_'")
    window = _window(since)

    async def go() -> list[dora.Figures]:
        client = (await AirAgent.connect()).client
        until = datetime.now(UTC)
        start = until - window
        deliveries = (await train_records.deliveries(client, start, pipeline)).get(pipeline, [])
        outside = await train_records.outside_rollbacks(client, start, pipeline)
        names = [env] if env else dora.environments(deliveries)
        return [dora.figures(deliveries, outside, name, start, until) for name in names]

    figures = run(go())
    if as_json:
        print(json.dumps({"pipeline": pipeline, "environments": [f.model_dump(mode="json") for f in figures]}))
        return
    if not figures:
        console.print(f"no deploys of {pipeline} in the last {since}")
        return
    console.print(render(pipeline, since, figures))


def render(pipeline: str, since: str, figures: list[dora.Figures]) -> Table:
    """One column per environment, one row per figure, each with the number of deploys it rests on."""
    table = Table(title=f"{pipeline}: DORA over the last {since}")
    table.add_column("figure")
    for f in figures:
        table.add_column(f.environment)
    rows: dict[str, list[str]] = {
        "deploys": [str(f.deployments) for f in figures],
        "deploys a day": [f"{f.deployment_frequency_per_day:.2f}" for f in figures],
        "lead time p50": [_span(f.lead_time_seconds.median, f.lead_time_seconds.trains) for f in figures],
        "lead time p90": [_span(f.lead_time_seconds.p90, f.lead_time_seconds.trains) for f in figures],
        "change fail rate": [_rate(f.change_fail_rate, f.failures, f.deployments) for f in figures],
        "recovery p50": [_span(f.recovery_seconds.median, f.recovery_seconds.trains) for f in figures],
        "rework rate": [_rate(f.rework_rate, f.reworks, f.deployments) for f in figures],
    }
    for name, cells in rows.items():
        table.add_row(name, *cells)
    return table


def _span(seconds: float | None, trains: int) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit} ({trains})"
    return f"{seconds:.0f}s ({trains})"


def _rate(value: float | None, count: int, of: int) -> str:
    return "-" if value is None else f"{value:.0%} ({count} of {of})"
