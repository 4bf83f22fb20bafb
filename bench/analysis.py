"""How the soak analysis judges a real Airflow: regressions it must catch, noise it must let through.

One local staging environment, a dev server of its own and `airagent worker` as a process; tests/analysis_scenarios.py
is the harness and says what each scenario does. Ten soaks carry a regression (a changed DAG failing every run,
one three times slower, an import error appearing during soak, a component killed) and ten only noise (the
api-server stalled past the probe timeout or answering slowly, a DAG failing a third of its runs before and after,
changed or not, an idle environment, another team's new DAG). Each scenario's line goes to stderr; the figures to
stdout, `analysis_false_rollbacks` last.

    .venv/bin/python -m bench.analysis [REPEAT]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from itertools import count
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from airagent.devserver import DevServer, free_ports, register_search_attributes
from interface.client import AirAgent
from tests.analysis_scenarios import Outcome, Scenario, Soaks
from tests.devserver import WorkerProcess

# Regressions and noise alternate, so neither meets an environment the other kind has warmed or loaded.
ROUND = (
    "fails",
    "stall",
    "slower",
    "flaky_changed",
    "import_error",
    "slow_answer",
    "component_dies",
    "flaky_unchanged",
    "fails",
    "idle",
    "slower",
    "harmless",
    "fails",
    "stall",
    "import_error",
    "flaky_changed",
    "component_dies",
    "slow_answer",
    "slower",
    "flaky_unchanged",
)


def scenarios(repeat: int) -> list[Scenario]:
    numbers = count(1)
    return [Scenario(kind, next(numbers)) for _ in range(repeat) for kind in ROUND]


async def main(repeat: int) -> None:
    began = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="airagent-analysis-") as tmp:
        root = Path(tmp)
        server = DevServer(root / "temporal", port=free_ports(), ui_port=free_ports(first=21000))
        server.start()
        soaks = Soaks(root / "world", scenarios(repeat))
        worker: WorkerProcess | None = None
        try:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            await register_search_attributes(client)
            queue = f"analysis-{uuid.uuid4()}"
            worker = WorkerProcess(
                {**os.environ, "TEMPORAL_ADDRESS": server.address, "AIRAGENT_TASK_QUEUE": queue}, root / "worker.log"
            )
            worker.start()
            agent = AirAgent(client, queue)
            await asyncio.to_thread(soaks.up)
            await soaks.prepare(agent)
            for scenario in soaks.scenarios:
                outcome = await soaks.run(agent, scenario)
                outcomes.append(outcome)
                print(outcome.line(), file=sys.stderr, flush=True)
        finally:
            soaks.down()
            if worker:
                worker.stop()
            server.stop()
    report(outcomes, time.monotonic() - began)


def report(outcomes: list[Outcome], took: float) -> None:
    regressions = [o for o in outcomes if o.scenario.regression]
    noise = [o for o in outcomes if not o.scenario.regression]
    caught = [o for o in regressions if o.caught]
    false = [o for o in noise if o.caught]
    intervals = [o.intervals for o in caught if o.intervals is not None]
    print(f"analysis_regression_soaks: {len(regressions)} count")
    print(f"analysis_noise_soaks: {len(noise)} count")
    print(f"analysis_detections: {len(caught)} count")
    print(f"analysis_misses: {len(regressions) - len(caught)} count")
    print(f"analysis_caught_before_soak: {sum(1 for o in caught if o.metric is None)} count")
    print(f"analysis_false_rollbacks_noise: {len(false) / max(len(noise), 1):.2f} ratio")
    print(f"analysis_held_on_noise: {sum(1 for o in noise if o.held)} count")
    median = statistics.median(intervals) if intervals else float("nan")
    print(f"analysis_median_intervals_to_detect: {median:g} intervals")
    print(f"analysis_max_intervals_to_detect: {max(intervals, default=float('nan')):g} intervals")
    print(f"analysis_run_time: {took:.0f} s")
    print(f"analysis_false_rollbacks: {len(false)} count")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
