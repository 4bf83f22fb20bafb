"""Fault injection on the real dev server: trains go on while the worker is SIGKILLed and the server
restarts; afterwards Temporal's histories and the environments' records say whether anything broke.

Used by tests/test_faults.py (small, for CI) and bench/faults.py (at scale). A `Scenario` is
seeded: the same seed gives the same commits, the same deploys and the same gaps between
faults; where in a train a fault lands still depends on timing. Pipelines are files only
(`airflow: false`): a train is diff, build, validate (real Airflow parses the DAGs, in the
runtime this host already built), then roll and a short soak per environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import git
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import PipelineSettings, load_pipeline
from airagent.devserver import DevServer
from airagent.models import TrainState, TrainStatus
from interface.client import AirAgent, outcome
from tests.devserver import WorkerProcess, end_conductors
from worker.main import WORKFLOWS

TRANSIENT = (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError)


@dataclass
class Scenario:
    seed: int
    pipelines: int = 2
    rounds: int = 3  # per pipeline; a round pushes one or two commits and deploys each
    faults: int | None = None  # worker kills and server restarts in all; None: until the trains end
    restarts: int = 1  # dev-server restarts, one every `restart_every` faults
    restart_every: int = 3
    # Seconds between faults: a killed activity waits out its 30 s heartbeat timeout, so
    # faults much closer than that would only measure the timeout.
    fault_gap: tuple[float, float] = (6.0, 15.0)
    down_for: tuple[float, float] = (0.3, 3.0)  # how long the killed worker stays dead
    soak: str = "3s"
    timeout: float = 600  # the whole run, faults and all


@dataclass
class FaultReport:
    trains: int = 0
    kills: int = 0
    restarts: int = 0
    unfinished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # a train of good commits that ended other than succeeded or noop
    nondeterministic: list[str] = field(default_factory=list)  # a failed workflow task, or a failed replay
    doubled: list[str] = field(default_factory=list)  # a release rolled twice to one environment
    mismatched: list[str] = field(default_factory=list)  # live is not what the last succeeded train rolled
    overlapping: list[str] = field(default_factory=list)  # two trains of one pipeline running at once
    longest_still: float = 0.0  # seconds, the longest gap between two events of one train

    def problems(self) -> list[str]:
        return self.unfinished + self.failed + self.nondeterministic + self.doubled + self.mismatched + self.overlapping


@dataclass
class Lane:
    """One pipeline: its repo, its environments and the commits deployed to it."""

    pipeline: PipelineSettings
    repo: git.Repo
    shas: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, name: str, soak: str) -> Lane:
        repo = example.create(
            root / name / "repo", root / name / "envs", soak=soak, probe_interval="1s", airflow=False, pipeline=name
        )
        return cls(load_pipeline(name, root / name / "repo" / "airagent.yaml"), repo)

    def environments(self) -> dict[str, LocalEnvironment]:
        return {e.name: LocalEnvironment(e.target.path) for e in self.pipeline.environments}

    def push(self, rng: random.Random) -> str:
        tasks = rng.randint(1, 9)
        sha = example.commit(
            self.repo,
            {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=tasks)},
            f"finance: fx_rates with {tasks} tasks ({len(self.shas)})",
            "finance",
        )
        self.shas.append(sha)
        return sha


class Chaos:
    """Kills the worker every few seconds and, now and then, restarts the dev server instead."""

    def __init__(self, server: DevServer, worker: WorkerProcess, scenario: Scenario, rng: random.Random):
        self.server, self.worker, self.scenario, self.rng = server, worker, scenario, rng
        self.kills = self.restarts = 0

    async def __call__(self) -> None:
        faults = 0
        while self.scenario.faults is None or faults < self.scenario.faults:
            # The gap is the worker's time at work: a kill before it polls again (a slow start on a loaded
            # host) tests nothing but its start-up, and back to back such kills starved every train.
            await self.worker.polling()
            await asyncio.sleep(self.rng.uniform(*self.scenario.fault_gap))
            faults += 1
            if self.restarts < self.scenario.restarts and faults % self.scenario.restart_every == 0:
                await asyncio.to_thread(self.restart_server)
            else:
                self.worker.kill()
                self.kills += 1
                try:
                    await asyncio.sleep(self.rng.uniform(*self.scenario.down_for))
                finally:
                    self.worker.start()

    def restart_server(self) -> None:
        self.server.stop()
        self.server.start()
        self.restarts += 1


async def retry(call, deadline: float):
    """Ask again through a restarting server or a dead worker, until the deadline."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await call()
        except TRANSIENT:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def drive(agent: AirAgent, lane: Lane, rng: random.Random, rounds: int, deadline: float) -> None:
    """Each round pushes one or two commits, deploys each (concurrently) and waits for their trains."""
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        shas = [lane.push(rng) for _ in range(rng.choice((1, 1, 2)))]
        answers = await asyncio.gather(*(retry(lambda s=sha: agent.deploy(lane.pipeline, s), deadline) for sha in shas))
        for answer in answers:
            await agent.wait(
                answer.train, timeout=timedelta(seconds=max(1.0, deadline - loop.time())), since=answer.asked
            )


async def run(root: Path, server: DevServer, env: dict[str, str], scenario: Scenario) -> FaultReport:
    """Drive every lane under chaos, end the chaos with a live worker, then judge what happened."""
    rng = random.Random(scenario.seed)
    lanes = [Lane.create(root, f"lane{i}", scenario.soak) for i in range(scenario.pipelines)]
    worker = WorkerProcess(env, root / "worker.log")
    worker.start()
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    agent = AirAgent(client, env["AIRAGENT_TASK_QUEUE"])
    chaos = Chaos(server, worker, scenario, random.Random(rng.random()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scenario.timeout
    faults = asyncio.create_task(chaos())
    try:
        drivers = [drive(agent, lane, random.Random(rng.random()), scenario.rounds, deadline) for lane in lanes]
        with contextlib.suppress(TimeoutError):
            await asyncio.gather(*drivers)
        if scenario.faults is None:
            faults.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await faults  # a planned number of faults all happen, even when the trains were quick
        report = await judge(agent, lanes, deadline + 60)
    finally:
        faults.cancel()
        await end_conductors(client, agent.task_queue)
        worker.stop()
    report.kills, report.restarts = chaos.kills, chaos.restarts
    return report


async def judge(agent: AirAgent, lanes: list[Lane], deadline: float) -> FaultReport:
    client, report = agent.client, FaultReport()
    executions = await retry(lambda: listed(client, agent.task_queue), deadline)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    spans: dict[str, list[tuple]] = {}
    last_succeeded: dict[str, tuple] = {}
    for ex in executions:
        handle = client.get_workflow_handle(ex.id, run_id=ex.run_id, result_type=TrainStatus)
        history = await retry(handle.fetch_history, deadline)
        failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        if failed:
            report.nondeterministic.append(
                f"{ex.id}: {failed[0].workflow_task_failed_event_attributes.failure.message}"
            )
        else:
            try:
                await replayer.replay_workflow(history)
            except Exception as err:
                report.nondeterministic.append(f"{ex.id}: replay: {err}")
        if ex.workflow_type != "DeployTrain":
            continue
        report.trains += 1
        described = await retry(handle.describe, deadline)  # visibility may lag; the execution does not
        if described.status == WorkflowExecutionStatus.RUNNING:
            report.unfinished.append(ex.id)
            continue
        times = [e.event_time.ToDatetime() for e in history.events]
        report.longest_still = max([report.longest_still, *((b - a).total_seconds() for a, b in pairwise(times))])
        pipeline = ex.id.split("/")[1]
        spans.setdefault(pipeline, []).append((described.start_time, described.close_time, ex.id))
        status = await retry(lambda h=handle: outcome(h), deadline)
        if status.state not in (TrainState.succeeded, TrainState.noop):  # every commit a lane pushes is good
            report.failed.append(f"{ex.id}: {status.state.value}: {status.reason}")
        elif (
            status.state == TrainState.succeeded
            and described.close_time >= last_succeeded.get(pipeline, (described.close_time,))[0]
        ):
            last_succeeded[pipeline] = (described.close_time, status.release)
    for runs in spans.values():
        runs.sort()
        report.overlapping += [f"{a[2]} and {b[2]}" for a, b in pairwise(runs) if a[1] > b[0]]
    for lane in lanes:
        expected = last_succeeded.get(lane.pipeline.name, (None, None))[1]
        for name, environment in lane.environments().items():
            record = environment.record()
            rolled = Counter(s.release for s in record.history if s.action == "roll")
            report.doubled += [f"{lane.pipeline.name}/{name}: {r} rolled {n} times" for r, n in rolled.items() if n > 1]
            live = record.live.id if record.live else None
            if live != expected:
                report.mismatched.append(f"{lane.pipeline.name}/{name}: live {live}, last succeeded train {expected}")
    return report


async def listed(client: Client, queue: str) -> list[WorkflowExecution]:
    return [ex async for ex in client.list_workflows(f"TaskQueue = '{queue}'")]
