"""Airflow's own metrics of a local environment (`metrics: {statsd: true}` on its target): the settings that make
its components send StatsD, and the exporter (statsd_exporter.py) started and stopped with them.

The exporter is a component like the others (detached, with a record in `run/`, its output in `logs/`), but
no Airflow: it runs on airagent's own interpreter, belongs to no release, and is not judged by soak's
`components` metric (metrics going quiet is no reason to roll a release back).
"""

from __future__ import annotations

import sys
import time

import httpx

from activities.targets.components import Components, Process
from airagent import tls
from airagent.config import LocalTarget

EXPORTER = "statsd-exporter"
PREFIX = "airflow"
STARTUP = 30.0  # seconds the exporter gets to answer once started


def statsd_settings(target: LocalTarget) -> dict[str, str]:
    """Airflow's settings that send its metrics to the environment's exporter, whatever the release's airflow.cfg
    says: the exporter's port is the environment's to choose. Variables travel as InfluxDB-style tags, and the
    legacy names that put them inside dotted names are not sent (each metric would arrive twice)."""
    if not target.metrics.statsd:
        return {}
    settings = {
        "statsd_on": "True",
        "statsd_host": "127.0.0.1",
        "statsd_port": str(target.statsd_port),
        "statsd_prefix": PREFIX,
        "statsd_influxdb_enabled": "True",
        "statsd_datadog_enabled": "False",  # it would take over from StatsD
        "legacy_names_on": "False",
    }
    return {f"AIRFLOW__METRICS__{key.upper()}": value for key, value in settings.items()}


def metrics_url(target: LocalTarget) -> str | None:
    return f"http://127.0.0.1:{target.statsd_port}/metrics" if target.metrics.statsd else None


class Exporter:
    def __init__(self, target: LocalTarget, components: Components):
        self.target, self.components = target, components

    @property
    def url(self) -> str | None:
        return metrics_url(self.target)

    def record(self) -> Process | None:
        return self.components.record(EXPORTER)

    def alive(self) -> bool:
        record = self.record()
        return bool(record and record.alive)

    def ensure(self) -> str | None:
        """Start the exporter when metrics are on and it does not run; wait until it serves. Says what it did."""
        if not self.target.metrics.statsd or self.alive():
            return None
        if record := self.record():
            self.components.stop(record, 0)  # its record outlived it
        address = f"127.0.0.1:{self.target.statsd_port}"
        argv = [sys.executable, "-m", "activities.targets.statsd_exporter", "--statsd", address, "--web", address]
        process = self.components.start(
            EXPORTER, argv, {"PATH": "/usr/bin:/bin"}, cwd=self.target.path, port=self.target.statsd_port
        )
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if not process.alive:
                raise RuntimeError(f"the StatsD exporter exited at start; see {self.components.logs / EXPORTER}.log")
            try:
                if httpx.get(f"http://{address}/metrics", timeout=2, verify=tls.context()).status_code == 200:
                    return f"started {EXPORTER} ({self.url})"
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the StatsD exporter did not answer at {self.url} within {STARTUP:.0f}s")

    def stop(self) -> str | None:
        record = self.record()
        return f"{EXPORTER}: {self.components.stop(record, 5)}" if record else None
