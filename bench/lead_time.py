"""Lead time of a DAG-only change, commit to live in prod, and API availability through a restart roll.

A monorepo of 100 DAGs, staging and prod as real local Airflow environments, soak 0, a
dev server with the worker in this process. Set-up (runtime, environments, the first
train, and each environment's first parse of every file after it) is not measured. Then,
in one run:

- one DAG file changes, five times over (a different file each time); seconds from the
  commit to the train's end, when prod serves the new code, and per stage: the median
  of the five, as each environment's DAG processor takes a parse request at its next
  loop, up to a second later, so one change alone says more of that loop's phase than of
  airagent;
- a plugin changes (a `restart` roll); while it runs, staging's api-server health
  endpoint is asked every 100 ms: the share of answers that succeeded, the longest gap.

    .venv/bin/python -m bench.lead_time [DAGS]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import httpx

from activities.runtime import ensure_runtime
from activities.targets.local_airflow import LocalAirflow
from activities.validation.parse import parse_release
from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.devserver import free_ports
from airagent.models import TrainState, TrainStatus
from bench.harness import dev_server, in_process_worker
from interface.client import AirAgent

# DAG-only changes measured, one after another.
CHANGES = 5


class HealthPoller:
    """Asks one URL every 100 ms from a thread; counts answers and the longest time without a good one."""

    def __init__(self, url: str):
        self.url, self.ok, self.asked, self.gap = url, 0, 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_good = time.monotonic()
        with httpx.Client(timeout=2) as http:
            while not self._stop.is_set():
                self.asked += 1
                try:
                    good = http.get(self.url).status_code == 200
                except httpx.HTTPError:
                    good = False
                now = time.monotonic()
                self.gap = max(self.gap, now - last_good)
                if good:
                    self.ok += 1
                    last_good = now
                time.sleep(0.1)


def settle(env: LocalAirflow, seconds: float = 600) -> None:
    """Wait until the environment serves every DAG of its release: a restart roll ends once Airflow is healthy, before
    its DAG processor has parsed every file again, and a change rolled meanwhile would wait for all of them."""
    live = env.files.live()
    assert live is not None
    expected = {dag_id for f in parse_release(live).files for dag_id in f.dag_ids}
    deadline = time.monotonic() + seconds
    with env.api() as api:
        while not expected <= {d["dag_id"] for d in api.dags()}:
            if time.monotonic() > deadline:
                raise SystemExit(f"{env.name} did not serve every DAG within {seconds:.0f} s")
            time.sleep(1)


async def deploy(agent: AirAgent, pipeline: PipelineSettings, sha: str) -> TrainStatus:
    answer = await agent.deploy(pipeline, sha)
    status = await agent.wait(answer.train)
    if status.state != TrainState.succeeded:
        raise SystemExit(f"train {answer.train} ended {status.state.value}: {status.reason}")
    return status


async def main(dags: int) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-lead-") as tmp:
        root = Path(tmp)
        envs: list[LocalAirflow] = []
        try:
            repo = example.create(root / "repo", root / "envs", soak="0s", airflow=False)
            example.commit(
                repo,
                {f"dags/generated/dag_{i:03}.py": example.dag_file(f"generated_{i:03}") for i in range(dags)},
                f"{dags} generated DAGs",
                "platform",
            )
            settings = [
                EnvironmentSettings(
                    name=name,
                    target=LocalTarget(
                        path=root / "envs" / name, port=free_ports(5, first=22000 + 100 * i), live_timeout="120s"
                    ),
                )
                for i, name in enumerate(("staging", "prod"))
            ]
            pipeline = PipelineSettings(name="lead", repo=str(repo.working_tree_dir), environments=settings)
            _, runtime = ensure_runtime(pipeline.runtime, None)
            envs = [LocalAirflow(e.name, e.target, e.probes) for e in settings]
            for env in envs:
                env.up(runtime)

            async with dev_server(root) as client, in_process_worker(client, "lead") as agent:
                await deploy(agent, pipeline, repo.head.commit.hexsha)  # first train: restarts, unmeasured
                for env in envs:
                    await asyncio.to_thread(settle, env)

                changes: list[tuple[float, TrainStatus]] = []
                for i in range(CHANGES):
                    sha = example.commit(
                        repo,
                        {f"dags/generated/dag_{i:03}.py": example.dag_file(f"generated_{i:03}", 5)},
                        "one DAG changes",
                        "finance",
                    )
                    started = time.monotonic()
                    status = await deploy(agent, pipeline, sha)
                    changes.append((time.monotonic() - started, status))

                plugin = example.FILES["plugins/example_plugin.py"] + "# restart me\n"
                sha = example.commit(repo, {"plugins/example_plugin.py": plugin}, "plugin change", "platform")
                with HealthPoller(f"http://127.0.0.1:{envs[0].target.port}/api/v2/monitor/health") as poll:
                    restarted = await deploy(agent, pipeline, sha)
        finally:
            for env in envs:
                env.down()

    assert all(s.mode == "dags-only" for _, s in changes) and restarted.mode == "restart", restarted.mode
    stages: dict[str, list[float]] = {}
    for _, status in changes:
        for stage in status.stages:
            name = f"{stage.name}_{stage.environment}" if stage.environment else stage.name
            stages.setdefault(name, []).append((stage.ended - stage.started).total_seconds())
    for name, seconds in stages.items():
        print(f"stage_{name}: {median(seconds):.2f} s")
    print(f"restart_health_answers: {poll.asked} count")
    print(f"restart_health_success: {100 * poll.ok / poll.asked:.1f} %")
    print(f"restart_longest_gap: {poll.gap:.2f} s")
    totals = sorted(total for total, _ in changes)
    print(f"lead_time_each: {' '.join(f'{t:.2f}' for t in totals)} s")
    print(f"lead_time_total: {median(totals):.2f} s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
