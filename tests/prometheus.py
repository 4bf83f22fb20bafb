"""A real Prometheus (Debian's `prometheus`) for the tests that judge metrics: started on a free port with a
temporary storage folder, scraping the targets it is given every second, asked through its HTTP API, stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.devserver import free_port


class Prometheus:
    def __init__(self, folder: Path, targets: list[str]):
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        scrape = {"job_name": "airagent", "scrape_interval": "1s", "static_configs": [{"targets": targets}]}
        config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}))
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("Prometheus is not installed: `apt-get install -y prometheus` (make setup does, as root)")
        self.log = open(folder / "prometheus.log", "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(timeout=60)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"Prometheus never got ready; see {self.folder / 'prometheus.log'}")

    def api(self, path: str, **params: str) -> dict | list:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=30) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> dict[str, float]:
        """An instant vector as {the series' labels other than the job's and instance's, sorted: value}."""
        data = self.api("query", query=promql)
        assert isinstance(data, dict)
        found = {}
        for sample in data["result"]:
            labels = {k: v for k, v in sample["metric"].items() if k not in ("job", "instance")}
            found[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = float(sample["value"][1])
        return found

    def value(self, promql: str) -> float | None:
        """The one value an aggregated query gives, or None while there is none."""
        found = self.query(promql)
        return next(iter(found.values())) if found else None

    def until(self, promql: str, predicate, timeout: float = 120) -> float | None:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(promql)
            if predicate(value):
                return value
            time.sleep(0.5)
        raise AssertionError(f"{promql} never got there; last value {value}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
