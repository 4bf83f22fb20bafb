"""`make demo`'s Prometheus: where Debian's `prometheus` is installed, one that scrapes the demo's worker and its
environments' StatsD exporters, with its configuration and storage in the demo's state folder, so its history
lasts from one demo to the next; it stops with the demo. Without `prometheus` on PATH the demo says so and goes on.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from airagent import tls

PORT = 9090  # Prometheus' own default; another free port when it is taken
WORKER_PORT = 9464  # the README's example for AIRAGENT_METRICS_PORT
SCRAPE = "5s"
READY = 60.0  # seconds it gets to answer /-/ready


def port(preferred: int) -> int:
    """`preferred` when nothing listens there, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoPrometheus:
    def __init__(self, folder: Path, proc: subprocess.Popen, url: str):
        self.folder, self.proc, self.url = folder, proc, url

    @classmethod
    def start(cls, folder: Path, worker: str, airflows: dict[str, str]) -> DemoPrometheus | None:
        """Prometheus scraping the worker's endpoint and each environment's StatsD exporter (`host:port`, the
        environment's name as the `environment` label) every few seconds; None when it is not installed."""
        binary = shutil.which("prometheus")
        if binary is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        environments = [{"targets": [address], "labels": {"environment": env}} for env, address in airflows.items()]
        jobs = [{"job_name": "airagent", "static_configs": [{"targets": [worker]}]}]
        jobs += [{"job_name": "airflow", "static_configs": environments}] if environments else []
        config.write_text(json.dumps({"global": {"scrape_interval": SCRAPE}, "scrape_configs": jobs}, indent=2))
        address = f"127.0.0.1:{port(PORT)}"
        with open(folder / "prometheus.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={address}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        prometheus = cls(folder, proc, f"http://{address}")
        if not prometheus.ready():
            prometheus.stop()
            raise RuntimeError(f"Prometheus did not start; see {folder / 'prometheus.log'}")
        return prometheus

    def ready(self) -> bool:
        deadline = time.monotonic() + READY
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=5, verify=tls.context()).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False

    def value(self, promql: str) -> float | None:
        """The first value of an instant query, or None while it has none."""
        answer = httpx.get(
            f"{self.url}/api/v1/query", params={"query": promql}, timeout=30, verify=tls.context()
        ).json()
        result = answer.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else None

    def until(self, promql: str, timeout: float = 60) -> float | None:
        """The query's value once it has one (a scrape or two after the fact), or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (found := self.value(promql)) is not None:
                return found
            time.sleep(1)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
