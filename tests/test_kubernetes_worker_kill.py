"""The worker as a real process, SIGKILLed in the middle of a kubernetes roll and started again: the roll resumes
from the environment's record and no pod template is patched twice (the emulator counts the PATCH requests)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from airagent import example
from airagent.models import TrainState
from tests.conftest import start_train
from tests.kube import cluster as kube
from tests.test_devserver import WorkerProcess, agent, cli_env, dev_server  # noqa: F401  (fixtures)
from tests.test_kubernetes_train import REGISTRY, WORKLOADS, kube_pipeline, run_validator_jobs

pytestmark = [pytest.mark.devserver, pytest.mark.slow]


async def test_worker_killed_mid_roll_resumes_without_patching_twice(agent, cli_env, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    # Slow pods: the roll is still waiting on them when the worker dies.
    with kube.emulated(delay=2.0, progress_deadline=120) as cluster:
        config = kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host)
        pipeline = kube_pipeline(repo, config, repository=f"{REGISTRY}-worker-kill")
        run_validator_jobs(cluster, pipeline, repo)
        worker = WorkerProcess(cli_env, tmp_path / "worker.log")
        worker.start()
        try:
            handle = await start_train(agent, pipeline, repo.head.commit.hexsha)
            for _ in range(600):
                if any(
                    c.verb == "patch" and c.resource in ("deployments", "statefulsets") for c in cluster.emulator.calls
                ):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"the roll never patched a template; see {tmp_path / 'worker.log'}")
            worker.kill()
            worker.start()
            status = await agent.wait(handle.id)
        finally:
            worker.stop()
        calls = cluster.emulator.calls

    assert status.state == TrainState.succeeded, status.reason
    patched = Counter(
        f"{c.resource}/{c.name}" for c in calls if c.verb == "patch" and c.resource in ("deployments", "statefulsets")
    )
    assert sorted(patched) == sorted(WORKLOADS)
    assert set(patched.values()) == {1}, patched  # each template patched exactly once across both attempts
