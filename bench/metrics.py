"""What the metrics endpoint costs a train, and how big it grows.

One dev server and two in-process workers in this process: one whose client has a Temporal
runtime serving Prometheus (airagent's series, the SDK's, the DORA gauges worked out every
10 s), one with none. Trains of files-only local pipelines (soak 0, a DAG change each, so diff,
build, validate, roll and soak all run) go alternately to each, one at a time, PAIRS of each:
the ratio of their median durations is the overhead. Then TRAINS trains over PIPELINES
pipelines (each pipeline one train at a time, the pipelines side by side) on the worker with the
endpoint, whose size is read halfway and at the end: it must not grow with the trains.

    .venv/bin/python -m bench.metrics [PAIRS] [TRAINS] [PIPELINES]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import git
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.devserver import free_ports
from airagent.models import TrainInput, TrainStatus, train_id
from bench.harness import dev_server, in_process_worker
from interface.client import AirAgent
from worker import metrics


def pipeline(name: str, root: Path) -> PipelineSettings:
    return PipelineSettings(
        name=name,
        repo=str(root / "repo"),
        environments=[
            EnvironmentSettings(name=env, target=LocalTarget(path=root / "envs" / env, airflow=False))
            for env in ("staging", "prod")
        ],
    )


class Pipelines:
    """Tiny example repositories, one per pipeline, and a train per new commit."""

    def __init__(self, root: Path):
        self.root, self.commits = root, 0
        self.settings: dict[str, PipelineSettings] = {}
        self.repos: dict[str, git.Repo] = {}

    def add(self, name: str) -> PipelineSettings:
        self.settings[name] = pipeline(name, self.root / name)
        self.repos[name] = example.create(self.root / name / "repo", self.root / name / "envs")
        return self.settings[name]

    async def train(self, agent: AirAgent, name: str) -> float:
        """Commit a DAG change and deploy it; the train's wall-clock seconds."""
        self.commits += 1
        n = self.commits
        dag = example.dag_file("fx_rates", tasks=2 + n % 5, note=f"v{n}")
        sha = example.commit(self.repos[name], {"dags/finance/fx_rates.py": dag}, f"fx v{n}", "finance")
        began = time.monotonic()
        handle = await agent.client.start_workflow(
            "DeployTrain",
            TrainInput(pipeline=self.settings[name], target=sha),
            id=train_id(name, sha),
            task_queue=agent.task_queue,
            result_type=TrainStatus,
        )
        status = await handle.result()
        assert status.state == "succeeded", status.reason
        return time.monotonic() - began


def scrape(address: str) -> tuple[int, int, int]:
    """The endpoint's bytes, its series, and airagent's series among them."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    return len(text.encode()), len(series), sum(1 for s in series if s.startswith("airagent_"))


async def main(pairs: int, trains: int, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-metrics-") as scratch:
        root = Path(scratch)
        repos = Pipelines(root)
        address = f"127.0.0.1:{free_ports()}"
        runtime = metrics.runtime(address)
        async with dev_server(root) as plain:
            target = plain.service_client.config.target_host
            measured = await Client.connect(target, data_converter=pydantic_data_converter, runtime=runtime)
            dora = asyncio.create_task(metrics.DoraGauges(measured, runtime.metric_meter).run(timedelta(seconds=10)))
            async with in_process_worker(plain, "off") as off, in_process_worker(measured, "on") as on:
                sides = {"off": (off, repos.add("off")), "on": (on, repos.add("on"))}
                for side in sides.values():  # warm: the first build of each makes its runtime and parser
                    await repos.train(side[0], side[1].name)
                took: dict[str, list[float]] = {"off": [], "on": []}
                for i in range(pairs):
                    for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                        took[name].append(await repos.train(sides[name][0], sides[name][1].name))
                ratio = statistics.median(took["on"]) / statistics.median(took["off"])

                names = [repos.add(f"p{i}").name for i in range(count)]
                began = time.monotonic()
                sizes = []
                for half in (trains // 2, trains - trains // 2):
                    per = [half // count + (1 if i < half % count else 0) for i in range(count)]
                    await asyncio.gather(*(_run(repos, on, name, n) for name, n in zip(names, per, strict=True)))
                    await asyncio.sleep(12)  # a round of the DORA gauges and a scrape's worth of time
                    sizes.append(scrape(address))
                spent = time.monotonic() - began
            dora.cancel()

    print(f"train_seconds_off_median: {statistics.median(took['off']):.2f} s")
    print(f"train_seconds_on_median: {statistics.median(took['on']):.2f} s")
    print(f"pairs: {pairs} count")
    print(f"trains_for_size: {trains} count over {count} pipelines in {spent:.0f} s")
    for label, (size, series, ours) in zip(("halfway", "end"), sizes, strict=True):
        print(f"endpoint_{label}: {size} bytes, {series} series ({ours} airagent_)")
    print(f"metrics_overhead_ratio: {ratio:.3f} x")


async def _run(repos: Pipelines, agent: AirAgent, name: str, n: int) -> None:
    for _ in range(n):
        await repos.train(agent, name)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            int(args[0]) if args else 20,
            int(args[1]) if len(args) > 1 else 1000,
            int(args[2]) if len(args) > 2 else 20,
        )
    )
