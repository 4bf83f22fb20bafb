"""Trains deploying to a kubernetes environment: the time-skipping server, the worker in-process, the real
`kubernetes` client over HTTP to the API emulator (tests/kube/), real git and real Airflow parsing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from airagent import example
from airagent.config import EnvironmentSettings, ImageSettings, KubernetesTarget, PipelineSettings, home
from airagent.models import TrainState
from tests.kube import cluster as kube

REGISTRY = "registry.example/data/airflow"
WORKLOADS = ["deployments/airflow-scheduler", "deployments/airflow-api-server", "deployments/airflow-dag-processor",
             "deployments/airflow-triggerer", "statefulsets/airflow-worker"]


def kubeconfig(path: Path, server: str) -> Path:
    """What a person would point airagent at: a kubeconfig naming the cluster (here, the emulator)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "airagent", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "airagent"}}],
    }))
    return path


def kube_pipeline(repo, config: Path) -> PipelineSettings:
    target = KubernetesTarget(namespace=kube.NAMESPACE, kubeconfig=config, worker_drain="15m", rollout_deadline="30s")
    return PipelineSettings(
        name="main", repo=str(repo.working_tree_dir),
        environments=[EnvironmentSettings(name="staging", target=target)],
        image=ImageSettings(repository=REGISTRY, builder="kaniko", context="https://git.example/monorepo.git"),
    )


@pytest.fixture
def cluster():
    with kube.emulated(delay=0.1, progress_deadline=5) as c:
        yield c


@pytest.fixture
def world(cluster, monorepo, tmp_path):
    shutil.rmtree(home() / "images", ignore_errors=True)  # so kaniko builds in this test, whatever ran before
    return kube_pipeline(monorepo, kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host))


def templates(cluster) -> dict[str, dict]:
    apps = client.AppsV1Api(cluster.api)
    out = {}
    for key in WORKLOADS:
        kind, name = key.split("/")
        read = apps.read_namespaced_deployment if kind == "deployments" else apps.read_namespaced_stateful_set
        out[key] = json.loads(read(name, cluster.namespace, _preload_content=False).data)["spec"]["template"]
    return out


def template_patches(calls) -> list[str]:
    return [f"{c.resource}/{c.name}" for c in calls if c.verb == "patch" and c.resource in ("deployments", "statefulsets")]


async def test_trains_roll_kubernetes_dags_only_rebuild_and_crash_rollback(agent, drive, world, monorepo, cluster):
    emulator = cluster.emulator
    first = await drive.finish((await agent.start(world, monorepo.head.commit.hexsha)).id)

    assert first.state == TrainState.succeeded, first.reason
    assert first.mode == "rebuild"
    staging = first.environment_status("staging")
    assert any(w.startswith("airflow-worker: terminationGracePeriodSeconds is 600s") for w in staging.warnings)
    jobs = [c for c in emulator.calls if c.resource == "jobs" and c.verb == "create"]
    assert len(jobs) == 1  # kaniko built the runtime image once
    on_first = templates(cluster)
    image = on_first["deployments/airflow-scheduler"]["spec"]["containers"][0]["image"]
    runtime = next(s for s in first.stages if s.name == "build").detail.split("runtime ")[1].rstrip(")")
    assert image == f"{REGISTRY}:{runtime}"  # tagged by the runtime hash
    assert all(t["spec"]["containers"][0]["image"] == image for t in on_first.values())
    assert all(t["spec"]["containers"][1]["image"] == kube.GIT_SYNC_IMAGE for t in on_first.values())
    assert monorepo.heads["airagent/staging"].commit.hexsha == monorepo.head.commit.hexsha

    mark = len(emulator.calls)
    sha = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)},
                         "finance: more fx steps", "finance")
    second = await drive.finish((await agent.start(world, sha)).id)

    assert second.state == TrainState.succeeded, second.reason
    assert second.mode == "dags-only"
    assert template_patches(emulator.since(mark)) == []
    assert templates(cluster) == on_first
    assert monorepo.heads["airagent/staging"].commit.hexsha == sha
    assert not [c for c in emulator.since(mark) if c.resource == "jobs"]  # same runtime: nothing to build

    cluster.controller.crash("airflow-scheduler")
    mark = len(emulator.calls)
    bad = example.commit(monorepo, {"Dockerfile": "FROM apache/airflow:3.1.0\nRUN pip install nothing\n"},
                         "platform: new image", "platform")
    third = await drive.finish((await agent.start(world, bad)).id)
    cluster.controller.heal()

    assert third.state == TrainState.failed, third.reason
    assert "CrashLoopBackOff" in third.reason and "airflow-scheduler" in third.reason
    assert third.environment_status("staging").state == "rolled_back"
    assert templates(cluster) == on_first
    assert monorepo.heads["airagent/staging"].commit.hexsha == sha
    assert sorted(set(template_patches(emulator.since(mark)))) == sorted(WORKLOADS)


async def test_an_image_from_ci_must_carry_the_runtime_hash(agent, drive, world, monorepo):
    pipeline = world.model_copy(update={"image": ImageSettings(repository=REGISTRY)})  # builder: external
    handle = await agent.start(pipeline, monorepo.head.commit.hexsha, image=f"{REGISTRY}:latest")
    status = await drive.finish(handle.id)

    assert status.state == TrainState.failed
    assert status.stages[-1].name == "build"
    assert f"expected '{REGISTRY}:" in status.reason and "runtime hash" in status.reason
