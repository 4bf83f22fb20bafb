"""Trains under faults at scale, and what asking the conductor costs over starting a train directly.

A dev server of its own and `airagent worker` as a process. First, with nothing failing,
the latency from a deploy call to the train's first scheduled activity, through the
conductor (an update with start) and by a direct start, alternating, on an idle pipeline.
Then two files-only pipelines (soak 3 s, probe interval 1 s) take a stream of commits,
one or two at a time, while the worker is SIGKILLed every 6 to 15 s and the dev server
restarts 5 times; tests/faults.py is the harness and says what each figure reads. Every
commit is good, so every train must end `succeeded` or `noop`: the headline counts the
trains that did not, with the wedged, doubled, mismatched and overlapping ones.

    .venv/bin/python -m bench.faults [ROUNDS_PER_PIPELINE]
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from airagent.config import PipelineSettings
from airagent.devserver import DevServer, free_ports, register_search_attributes
from airagent.repo import open_repository, resolve
from interface.client import AirAgent
from tests.conftest import start_train
from tests.devserver import WorkerProcess
from tests.faults import Lane, Scenario, run

SAMPLES = 20


async def scheduled(agent: AirAgent, wf_id: str, since: float) -> float:
    """Seconds from `since` (wall clock) to the train's first scheduled activity, once the train has ended."""
    await agent.wait(wf_id)
    history = await agent.client.get_workflow_handle(wf_id).fetch_history()
    first = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    return first.event_time.ToDatetime(tzinfo=UTC).timestamp() - since


async def start_directly(agent: AirAgent, pipeline: PipelineSettings, sha: str):
    """What deploy did before the conductor was the only starter: resolve the sha, start the train."""
    return await start_train(agent, pipeline, resolve(open_repository(pipeline), pipeline, sha))


async def latency(root: Path, server: DevServer, env: dict[str, str]) -> tuple[float, float]:
    """Median seconds to a working train: through the conductor, and started directly."""
    lane = Lane.create(root, "latency", soak="0s")
    worker = WorkerProcess(env, root / "latency-worker.log")
    worker.start()
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    agent = AirAgent(client, env["AIRAGENT_TASK_QUEUE"])
    conductor, direct, rng = [], [], random.Random(0)
    try:
        await agent.wait((await agent.deploy(lane.pipeline, lane.repo.head.commit.hexsha)).train)  # warm-up
        for _ in range(SAMPLES):
            since = time.time()
            conductor.append(await scheduled(agent, (await agent.deploy(lane.pipeline, lane.push(rng))).train, since))
            since = time.time()
            direct.append(
                await scheduled(agent, (await start_directly(agent, lane.pipeline, lane.push(rng))).id, since)
            )
    finally:
        await client.get_workflow_handle(f"pipeline/{lane.pipeline.name}").terminate("bench over")
        worker.stop()
    return statistics.median(conductor), statistics.median(direct)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-faults-") as tmp:
        root = Path(tmp)
        server = DevServer(root / "temporal", port=free_ports(), ui_port=free_ports(first=21000))
        server.start()
        try:
            await register_search_attributes(await Client.connect(server.address))
            env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "AIRAGENT_TASK_QUEUE": f"faults-{uuid.uuid4()}"}
            through_conductor, started_directly = await latency(
                root, server, {**env, "AIRAGENT_TASK_QUEUE": f"latency-{uuid.uuid4()}"}
            )
            began = datetime.now(UTC)
            report = await run(
                root,
                server,
                env,
                Scenario(seed=2026, pipelines=2, rounds=rounds, restarts=5, restart_every=8, timeout=3600),
            )
            took = (datetime.now(UTC) - began).total_seconds()
        finally:
            server.stop()

    for problem in report.problems():
        print(f"  {problem}")
    print(f"trains: {report.trains} count")
    print(f"worker_kills: {report.kills} count")
    print(f"server_restarts: {report.restarts} count")
    print(f"run_time: {took:.0f} s")
    print(f"unfinished_trains: {len(report.unfinished)} count")
    print(f"good_trains_failed: {len(report.failed)} count")
    print(f"histories_failing_replay: {len(report.nondeterministic)} count")
    print(f"doubled_rolls: {len(report.doubled)} count")
    print(f"record_mismatches: {len(report.mismatched)} count")
    print(f"overlapping_trains: {len(report.overlapping)} count")
    print(f"longest_still: {report.longest_still:.1f} s")
    print(f"deploy_to_train_conductor: {1000 * through_conductor:.0f} ms")
    print(f"deploy_to_train_direct: {1000 * started_directly:.0f} ms")
    print(f"deploy_latency_ratio: {through_conductor / started_directly:.2f} x")
    # Wedged, failed by a fault, failing replay, doubled, mismatched or overlapping: each is a wrong outcome.
    print(f"faults_wrong_outcomes: {len(report.problems())} count")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 24))
