"""A monorepo of 20,000 files (2,000 DAG files, the rest SQL and YAML beside them) through the conductor.

Files-only environments (staging, prod, soak 0), a dev server with the worker in this
process. In one run: the first deploy; then TRAINS one-file changes, each deployed on its
own, with gc after each (no ten-minute grace here, so what a train leaves is collected at
once). Figures: first deploy seconds; the median one-file train, commit to prod; the
largest event in any train's history; this process's peak RSS (the worker; DAG files are
parsed in processes of their own); disk use of the state directory and the environments
after ten trains, half of them and all (flat once what is kept reaches its caps).

    .venv/bin/python -m bench.scale [TRAINS]
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import git
from temporalio.client import Client

from activities import gc
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.generated import beside, generate
from airagent.models import TrainState
from bench.harness import dev_server, in_process_worker
from interface.client import AirAgent

DAG_FILES, OTHER_FILES = 2_000, 18_000


def disk(*folders: Path) -> int:
    """Bytes of the files under `folders`, a file hard-linked in several places counted once."""
    sizes = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file() and not p.is_symlink():
                stat = p.lstat()
                sizes[stat.st_dev, stat.st_ino] = stat.st_size
    return sum(sizes.values())


async def deploy(agent: AirAgent, pipeline: PipelineSettings, sha: str, stages: dict[str, list[float]]) -> float:
    """Seconds from asking to the train's end; each stage's seconds added to `stages`."""
    started = time.monotonic()
    answer = await agent.deploy(pipeline, sha)
    status = await agent.wait(answer.train, timeout=timedelta(minutes=20))
    if status.state != TrainState.succeeded:
        raise SystemExit(f"{answer.train} ended {status.state.value}: {status.reason}")
    for stage in status.stages:
        if stage.ended:
            name = f"{stage.name} {stage.environment}" if stage.environment else stage.name
            stages.setdefault(name, []).append((stage.ended - stage.started).total_seconds())
    return time.monotonic() - started


async def largest_event(client: Client) -> int:
    largest = 0
    async for execution in client.list_workflows("WorkflowType = 'DeployTrain'"):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        largest = max([largest, *(e.ByteSize() for e in history.events)])
    return largest


async def main(trains: int) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-scale-") as tmp:
        root = Path(tmp)
        os.environ["AIRAGENT_HOME"] = str(root / "home")
        repo_dir = root / "repo"
        beside(generate(repo_dir, DAG_FILES), OTHER_FILES)
        repo = git.Repo.init(repo_dir, initial_branch="main")
        repo.git.add("-A")
        repo.git.commit("-m", "twenty teams", "--author", "Ada Lovelace <ada@example.com>")
        envs = [
            EnvironmentSettings(name=name, target=LocalTarget(path=root / "envs" / name, airflow=False))
            for name in ("staging", "prod")
        ]
        pipeline = PipelineSettings(name="scale", repo=str(repo_dir), environments=envs)
        async with dev_server(root) as client, in_process_worker(client, "scale") as agent:
            first = await deploy(agent, pipeline, repo.head.commit.hexsha, {})
            stages: dict[str, list[float]] = {}
            keep = gc.Retention(young=timedelta(0))
            one_file, used = [], {}
            for i in range(trains):
                changed = repo_dir / "dags" / "team_07" / "dag_0007.py"
                changed.write_text(changed.read_text() + f"# change {i}\n")
                repo.index.add([str(changed)])
                sha = repo.index.commit(f"change {i}").hexsha
                one_file.append(await deploy(agent, pipeline, sha, stages))
                await asyncio.to_thread(gc.collect, pipeline, keep)  # the worker's loop goes on
                if i + 1 in (min(10, trains), trains // 2 or 1, trains):
                    used[i + 1] = await asyncio.to_thread(disk, root / "home", root / "envs")
            largest = await largest_event(client)
    print(f"files: {DAG_FILES + OTHER_FILES} count", file=sys.stderr)
    for name, seconds in stages.items():
        print(f"one-file train, {name}: median {statistics.median(seconds):.2f} s", file=sys.stderr)
    print(f"scale_first_deploy: {first:.1f} s")
    print(f"scale_largest_payload: {largest} bytes")
    print(f"scale_worker_peak_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for count, size in sorted(used.items()):
        print(f"scale_disk_after_{count}_trains: {size / 2**20:.0f} MB")
    # Kept things fill up to their caps in the first trains (reports: the newest 50); then use stays flat.
    print(f"scale_disk_growth_second_half: {used[trains] / used[trains // 2 or 1]:.2f} ratio")
    print(f"scale_one_file_train: {statistics.median(one_file):.2f} s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
