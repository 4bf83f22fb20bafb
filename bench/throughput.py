"""Sustained trains per day per pipeline, and the lag from commit to live in prod.

PIPELINES conductors on one worker and a real dev server, local target, tiny repos,
soak 0. Every pipeline gets a commit (plus a CI notify) every INTERVAL seconds for
SECONDS; trains batch what arrives while they run. Trains are counted from the server's
visibility list, and each commit's lag ends with the train that carried it.

    .venv/bin/python bench/throughput.py [SECONDS] [PIPELINES] [INTERVAL]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.models import TrainSummary, conductor_id
from bench.harness import dev_server, in_process_worker
from interface.client import AirAgent


async def every_train(agent: AirAgent, name: str, last: str, timeout: float = 600) -> list[TrainSummary]:
    """Every train of the pipeline, from the server's visibility list (the conductor remembers only its last
    few), once the train that carries the `last` commit has ended there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ran = await agent.history(name, limit=1_000_000)
        if any(t.sha == last and t.ended for t in ran):
            return ran
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{name}: no ended train carried {last[:12]} within {timeout:.0f}s")


def pipeline(name: str, root: Path) -> PipelineSettings:
    return PipelineSettings(
        name=name,
        repo=str(root / "repo"),
        poll_interval="1h",
        environments=[
            EnvironmentSettings(name=env, target=LocalTarget(path=root / "envs" / env, airflow=False))
            for env in ("staging", "prod")
        ],
    )


async def main(seconds: float, count: int, interval: float) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-throughput-") as scratch:
        root = Path(scratch)
        pipelines = {f"p{i}": pipeline(f"p{i}", root / f"p{i}") for i in range(count)}
        repos = {name: example.create(root / name / "repo", root / name / "envs") for name in pipelines}
        committed: dict[str, list[tuple[str, float]]] = {name: [] for name in pipelines}
        async with dev_server(root) as client, in_process_worker(client, "throughput") as agent:
            for p in pipelines.values():
                await agent.start_pipeline(p)
            started = time.time()
            n = 0
            while time.time() - started < seconds:
                for name, repo in repos.items():
                    sha = example.commit(
                        repo,
                        {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=2 + n % 5, note=f"v{n}")},
                        f"fx v{n}",
                        "finance",
                    )
                    committed[name].append((sha, time.time()))
                    await agent.notify(pipelines[name], sha, by="bench")
                n += 1
                await asyncio.sleep(interval)
            window = time.time() - started
            trains = {name: await every_train(agent, name, committed[name][-1][0]) for name in pipelines}
            for name in pipelines:
                await client.get_workflow_handle(conductor_id(name)).terminate("bench over")

    lags, per_pipeline = [], []
    for name, ran in trains.items():
        assert all(t.state == "succeeded" for t in ran), [(t.id, t.state) for t in ran if t.state != "succeeded"]
        in_window = [t for t in ran if t.ended and t.ended.timestamp() <= started + window]
        per_pipeline.append(len(in_window) / window * 86400)
        order = {sha: i for i, (sha, _) in enumerate(committed[name])}
        carriers = sorted((t for t in ran if t.sha in order), key=lambda t: order[t.sha])  # not the first: the head
        for i, (_, at) in enumerate(committed[name]):
            carrier = next(t for t in carriers if order[t.sha] >= i)  # a train carries every commit up to its own
            assert carrier.ended is not None
            lags.append(carrier.ended.timestamp() - at)
    lags.sort()
    print(f"pipelines: {count} count")
    print(f"commits: {sum(len(c) for c in committed.values())} count")
    print(f"trains: {sum(len(t) for t in trains.values())} count")
    print(f"lag_median: {statistics.median(lags):.1f} s")
    print(f"lag_p95: {lags[int(0.95 * (len(lags) - 1))]:.1f} s")
    print(f"trains_per_day_per_pipeline: {statistics.mean(per_pipeline):.0f} trains/day")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            float(args[0]) if args else 180,
            int(args[1]) if len(args) > 1 else 10,
            float(args[2]) if len(args) > 2 else 2.0,
        )
    )
