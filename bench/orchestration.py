"""Orchestration overhead per train: wall time minus time inside activities, read from workflow histories.

Runs TRAINS trains, one after another, on a real dev server against the local target,
with a tiny repo and soak 0, each train carrying one DAG change.

    .venv/bin/python -m bench.orchestration [TRAINS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from temporalio.client import WorkflowHandle

from airagent import example
from airagent.config import load_pipeline
from airagent.models import TrainState
from bench.harness import dev_server, in_process_worker


async def overhead(handle: WorkflowHandle) -> tuple[float, float]:
    """(wall seconds, seconds not inside an activity) of one finished train."""
    history = await handle.fetch_history()
    events = history.events
    start = events[0].event_time.ToDatetime()
    end = events[-1].event_time.ToDatetime()
    started = {}
    inside = 0.0
    for e in events:
        if e.HasField("activity_task_started_event_attributes"):
            started[e.event_id] = e.event_time.ToDatetime()
        elif e.HasField("activity_task_completed_event_attributes"):
            inside += (
                e.event_time.ToDatetime() - started[e.activity_task_completed_event_attributes.started_event_id]
            ).total_seconds()
    wall = (end - start).total_seconds()
    return wall, wall - inside


async def main(trains: int) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-bench-") as scratch:
        root = Path(scratch)
        repo = example.create(root / "repo", root / "envs", soak="0s", airflow=False)
        pipeline = load_pipeline("main", root / "repo" / "airagent.yaml")
        figures = []
        async with dev_server(root) as client, in_process_worker(client, "bench") as agent:
            for i in range(trains):
                example.commit(
                    repo,
                    {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=2 + i)},
                    f"fx v{i}",
                    "finance",
                )
                answer = await agent.deploy(pipeline)
                status = await agent.wait(answer.train)
                assert status.state == TrainState.succeeded, status.reason
                figures.append(await overhead(client.get_workflow_handle(answer.train)))
                print(
                    f"train {i + 1}: wall {figures[-1][0]:.2f}s, overhead {figures[-1][1]:.3f}s",
                    file=sys.stderr,
                )
    walls = [w for w, _ in figures]
    overheads = [o for _, o in figures]
    print(f"trains: {trains} count")
    print(f"train_wall_median: {statistics.median(walls):.3f} s")
    print(f"overhead_share_median: {statistics.median(o / w for w, o in figures):.3f} ratio")
    print(f"overhead_max: {max(overheads):.3f} s")
    print(f"overhead_median: {statistics.median(overheads):.3f} s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
