"""The worker's metrics endpoint: the Temporal SDK's own series and airagent's, and the DORA figures as gauges.

`AIRAGENT_METRICS_PORT` turns it on. The SDK's Prometheus exporter serves everything made
through its runtime's meter: the SDK's own `temporal_*` series, airagent's series that
workflows emit through the replay-safe meter (workflows/train_metrics.py), and the DORA
gauges this module sets every few minutes from the trains Temporal recorded. Counters end in
`_total`, durations are in seconds (Prometheus' conventions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from airagent import dora, train_records
from worker.background import beside
from workflows.train_metrics import BUCKETS

PORT = "AIRAGENT_METRICS_PORT"
WINDOW = timedelta(days=30)
EVERY = timedelta(minutes=5)
log = logging.getLogger("airagent")


def bind_address() -> str | None:
    """Where the endpoint listens: every interface on AIRAGENT_METRICS_PORT (AIRAGENT_METRICS_HOST narrows it)."""
    port = os.environ.get(PORT, "").strip()
    if not port:
        return None
    if not port.isdigit():
        raise SystemExit(f"{PORT}={port!r} is not a port number")
    return f"{os.environ.get('AIRAGENT_METRICS_HOST', '0.0.0.0')}:{port}"


def runtime(address: str) -> Runtime:
    """A Temporal runtime serving Prometheus' format at http://<address>/metrics."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides=BUCKETS,
            )
        )
    )


def interval() -> timedelta:
    """`AIRAGENT_DORA_EVERY_SECONDS`, default five minutes: how often the DORA gauges are worked out again."""
    seconds = os.environ.get("AIRAGENT_DORA_EVERY_SECONDS")
    return timedelta(seconds=float(seconds)) if seconds else EVERY


class DoraGauges:
    """The DORA figures of the last 30 days, per pipeline and environment. Trains already read are cached by run
    id, so each round asks Temporal for the visibility list and the new trains only."""

    def __init__(self, client: Client, meter: MetricMeter):
        self.client = client
        self.cache: dict[str, dora.Delivery | None] = {}
        help_ = "over the last 30 days, from the trains Temporal recorded"
        self.deployments = meter.create_gauge("airagent_dora_deployments", f"deploys {help_}")
        self.frequency = meter.create_gauge_float(
            "airagent_dora_deployment_frequency_per_day", f"deploys a day {help_}"
        )
        self.lead = meter.create_gauge_float("airagent_dora_lead_time_seconds", f"change lead time {help_}", "s")
        self.fail_rate = meter.create_gauge_float("airagent_dora_change_fail_rate", f"change fail rate {help_}")
        self.recovery = meter.create_gauge_float(
            "airagent_dora_recovery_seconds", f"failed-deployment recovery time {help_}", "s"
        )
        self.rework = meter.create_gauge_float("airagent_dora_rework_rate", f"rework rate {help_}")

    async def update(self, now: datetime) -> None:
        since = now - WINDOW
        found = await train_records.deliveries(self.client, since, cache=self.cache)
        for pipeline, deliveries in found.items():
            outside = await train_records.outside_rollbacks(self.client, since, pipeline)
            for env in dora.environments(deliveries):
                self._set(pipeline, dora.figures(deliveries, outside, env, since, now))

    def _set(self, pipeline: str, f: dora.Figures) -> None:
        labels = {"pipeline": pipeline, "environment": f.environment}
        self.deployments.set(f.deployments, labels)
        self.frequency.set(f.deployment_frequency_per_day, labels)
        for quantile, value in (("0.5", f.lead_time_seconds.median), ("0.9", f.lead_time_seconds.p90)):
            if value is not None:
                self.lead.set(value, {**labels, "quantile": quantile})
        if f.recovery_seconds.median is not None:
            self.recovery.set(f.recovery_seconds.median, {**labels, "quantile": "0.5"})
        if f.change_fail_rate is not None:
            self.fail_rate.set(f.change_fail_rate, labels)
        if f.rework_rate is not None:
            self.rework.set(f.rework_rate, labels)

    async def run(self, every: timedelta) -> None:
        """Work the figures out now and every `every` until cancelled; a round that fails is logged."""
        while True:
            try:
                await self.update(datetime.now(UTC))
            except Exception:
                log.exception("metrics: the DORA figures could not be read from Temporal")
            await asyncio.sleep(every.total_seconds())


def dora_gauges(client: Client, meter: MetricMeter | None) -> contextlib.AbstractAsyncContextManager[None]:
    """The DORA gauges, kept current while the worker runs; nothing without an endpoint."""
    return beside(DoraGauges(client, meter).run(interval()) if meter else None)
