"""Trains deploying to a kubernetes environment: the time-skipping server, the worker in-process, the real
`kubernetes` client over HTTP to the API emulator (tests/kube/), real git and real Airflow parsing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
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
    return kube_pipeline(monorepo, kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host))


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


def write_config(path: Path, pipeline: PipelineSettings, image: bool = True) -> Path:
    """airagent.yaml for the kube pipeline, as a platform team would write it (builder external)."""
    target = pipeline.environments[0].target
    declared = {"repo": pipeline.repo, "environments": [{"name": "staging", "target": {
        "type": "kubernetes", "namespace": target.namespace, "kubeconfig": str(target.kubeconfig)}}]}
    path.write_text(yaml.safe_dump({"pipelines": {"main": {**declared, **({"image": {"repository": REGISTRY}}
                                                                         if image else {})}}}))
    return path


def airagent_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("airagent")), *args], capture_output=True, text=True,
                          timeout=120)


async def test_the_conductor_rolls_the_image_ci_announced_for_the_commit(agent, drive, world, monorepo, cluster,
                                                                        tmp_path):
    pipeline = world.model_copy(update={"image": ImageSettings(repository=REGISTRY)})  # builder: external
    head = monorepo.head.commit.hexsha
    await agent.start_pipeline(pipeline)
    try:
        waiting = await drive.pipeline_until("main", lambda s: s.state.blocked is not None)
        assert f"waiting for CI to announce the image of {head[:12]}" in waiting.state.blocked
        assert waiting.state.trains == []

        # CI learns the tag without building anything, builds and pushes it, then tells the conductor.
        told = airagent_cli("image", "tag", "-p", "main", "--sha", head[:12],
                            "-c", str(write_config(tmp_path / "airagent.yaml", pipeline)))
        assert told.returncode == 0, told.stderr
        tag = told.stdout.strip()
        assert tag.startswith(f"{REGISTRY}:")
        rejected = await agent.notify(pipeline, None, by="ci", image=tag)
        assert not rejected.accepted and "--sha" in rejected.message
        ack = await agent.notify(pipeline, head[:12], by="ci", image=tag)
        assert ack.accepted and tag in ack.message

        done = await drive.pipeline_until("main", lambda s: s.state.last_deployed == head, step=timedelta(minutes=1))
    finally:
        await (await agent.start_pipeline(pipeline)).terminate("test over")

    assert [t.state for t in done.state.trains] == ["succeeded"] and done.state.blocked is None
    train = await agent.status(done.state.trains[0].id)
    runtime = next(s for s in train.stages if s.name == "build").detail.split("runtime ")[1].rstrip(")")
    assert tag == f"{REGISTRY}:{runtime}"  # the CLI's hash is the build stage's
    assert all(t["spec"]["containers"][0]["image"] == tag for t in templates(cluster).values())
    assert not [c for c in cluster.emulator.calls if c.resource == "jobs"]  # CI built it: no kaniko


def test_image_tag_needs_image_settings(world, tmp_path):
    path = write_config(tmp_path / "airagent.yaml", world, image=False)
    told = airagent_cli("image", "tag", "-p", "main", "-c", str(path))
    assert told.returncode == 2 and "no `image:` settings" in told.stderr and "Traceback" not in told.stderr
