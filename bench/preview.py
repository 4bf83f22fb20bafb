"""How long a DAG author waits: `airagent test` of one changed DAG, and a preview of their branch, cold and warm.

The example monorepo, a dev server and `airagent worker` as a process. The runtime is built
(or found) before anything is measured, as an author's host has it from earlier work. Then:

- `airagent test --dag` of the one DAG a branch changes, run once to warm what a first run
  makes (the runtime's bytecode, the migrated database it copies), then timed;
- push → preview serving the branch's DAGs, cold: `preview up` of the branch, to the status
  saying its Airflow serves the head (a build, a validation, Airflow's start);
- warm: a new DAG-only commit on the branch of a running preview, to its status saying it
  serves that commit (a poll, a build, a validation, a dags-only roll). The preview polls
  every POLL seconds, so up to that much of the figure is waiting for the poll.

Goals on 2 cores: one DAG test ≤ 15 s, cold preview ≤ 60 s, warm update ≤ 10 s.

    AIRAGENT_HOME=.airagent/test-home .venv/bin/python -m bench.preview
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.runtime import ensure_runtime
from airagent import example
from airagent.config import Runtime, load_pipeline
from airagent.devserver import DevServer, binary, free_ports, register_search_attributes
from airagent.models import PreviewState
from interface.client import AirAgent

POLL = 2  # seconds between a preview's looks at its branch


def dag_test(repo: Path, dag: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [binary("airagent"), "test", str(repo), "--dag", dag], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"airagent test failed ({done.returncode}): {done.stdout}{done.stderr}")
    return time.perf_counter() - started


async def previews(repo, config: Path, address: str, queue: str) -> tuple[float, float]:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    await register_search_attributes(client)
    agent = AirAgent(client, queue)
    pipeline = load_pipeline("main", config)
    started = time.perf_counter()
    await agent.preview_up(pipeline, "feat", ttl=timedelta(minutes=30))
    status = await agent.wait_preview("main", "feat", timeout=600)
    cold = time.perf_counter() - started
    if status.state != PreviewState.serving:
        raise SystemExit(f"the preview serves nothing: {status.error}")
    try:
        repo.git.checkout("feat")
        sha = example.commit(repo, {"dags/finance/bench_two.py": example.dag_file("bench_two")}, "two", "finance")
        repo.git.checkout("main")
        started = time.perf_counter()
        status = await agent.wait_preview("main", "feat", lambda s: s.commit == sha or s.error, timeout=600)
        warm = time.perf_counter() - started
        if status.commit != sha:
            raise SystemExit(f"the preview did not take the new commit: {status.error}")
    finally:
        await agent.preview_down("main", "feat", by="bench")
    return cold, warm


def main() -> None:
    ensure_runtime(Runtime(), None)  # built or found before anything is measured
    with tempfile.TemporaryDirectory(prefix="airagent-preview-bench-") as scratch:
        root = Path(scratch)
        repo = example.create(root / "repo", root / "envs", airflow=False)
        config = root / "repo" / "bench.yaml"
        previews_block = f"    previews:\n      poll_interval: {POLL}s\n"
        text = (root / "repo" / "airagent.yaml").read_text()
        config.write_text(text.replace("    poll_interval: 30s\n", "    poll_interval: 30s\n" + previews_block, 1))
        repo.git.checkout("-b", "feat")
        example.commit(repo, {"dags/finance/bench_one.py": example.dag_file("bench_one")}, "one", "finance")
        dag_test(root / "repo", "bench_one", dict(os.environ))  # warms the runtime's caches
        # The author's loop: the DAG's file changed since the last check, so it is parsed again, then run.
        with open(root / "repo" / "dags" / "finance" / "bench_one.py", "a") as edited:
            edited.write("# edited\n")
        test_seconds = dag_test(root / "repo", "bench_one", dict(os.environ))
        repo.git.checkout("--", "dags/finance/bench_one.py")
        repo.git.checkout("main")

        server = DevServer(root / "temporal", port=free_ports(first=22000), ui_port=free_ports(first=23000))
        server.start()
        queue = "bench-preview"
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "AIRAGENT_TASK_QUEUE": queue}
        with open(root / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [binary("airagent"), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            cold, warm = asyncio.run(previews(repo, config, server.address, queue))
        finally:
            worker.terminate()
            worker.wait(timeout=120)
            server.stop()
    print(f"dag_test_one: {test_seconds:.1f} s")
    print(f"preview_poll_interval: {POLL} s")
    print(f"preview_cold: {cold:.1f} s")
    print(f"preview_warm_update: {warm:.1f} s")


if __name__ == "__main__":
    main()
