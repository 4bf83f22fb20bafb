"""Trains deploying to a kubernetes environment: the time-skipping server, the worker in-process, the real
`kubernetes` client over HTTP to the API emulator (tests/kube/), real git and real Airflow parsing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import git
import pytest
import yaml
from kubernetes import client

from activities.runtime import ensure_runtime
from airagent import example
from airagent.config import EnvironmentSettings, ImageSettings, KubernetesTarget, PipelineSettings, home
from airagent.models import TrainState, conductor_id
from airagent.repo import stands_for
from tests.conftest import start_train
from tests.kube import cluster as kube
from tests.kube.controller import Kubelet

# The Airflow runtime or the Kubernetes emulator: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

REGISTRY = "registry.example/data/airflow"
CONTEXT = "https://git.example/monorepo.git"  # where the cluster clones commits from (kaniko, the validator's git-sync)
WORKLOADS = [
    "deployments/airflow-scheduler",
    "deployments/airflow-api-server",
    "deployments/airflow-dag-processor",
    "deployments/airflow-triggerer",
    "statefulsets/airflow-worker",
]


def kube_pipeline(repo, config: Path, repository: str = REGISTRY) -> PipelineSettings:
    """Another test file gives its own `repository`: a built image's record is kept in the state directory the
    suite's processes share, and this file counts the builds its own trains make."""
    target = KubernetesTarget(namespace=kube.NAMESPACE, kubeconfig=config, worker_drain="15m", rollout_deadline="30s")
    return PipelineSettings(
        name="main",
        repo=str(repo.working_tree_dir),
        environments=[EnvironmentSettings(name="staging", target=target)],
        image=ImageSettings(repository=repository, builder="kaniko", context=CONTEXT),
    )


def run_validator_jobs(cluster, pipeline: PipelineSettings, repo, origin: Path | None = None) -> None:
    """Let the controller's kubelet stand-in run validator Jobs: the runtime the image is built from, the repo
    the git-sync URL names (`origin`, else the working repo itself)."""
    _, runtime = ensure_runtime(pipeline.runtime, Path(repo.working_tree_dir) / pipeline.runtime.requirements)
    cluster.controller.kubelet = Kubelet(runtime, {pipeline.image.context: origin or Path(repo.working_tree_dir)})


def build_jobs(cluster) -> list[str]:
    return [
        j["metadata"]["name"]
        for j in cluster.emulator.store.list("jobs")[0]
        if j["metadata"]["name"].startswith("airagent-build-")
    ]


@pytest.fixture
def cluster():
    with kube.emulated(delay=0.1, progress_deadline=5) as c:
        yield c


@pytest.fixture
def world(cluster, monorepo, tmp_path):
    shutil.rmtree(home() / "images", ignore_errors=True)  # so kaniko builds in this test, whatever ran before
    pipeline = kube_pipeline(monorepo, kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host))
    run_validator_jobs(cluster, pipeline, monorepo)
    return pipeline


def templates(cluster) -> dict[str, dict]:
    apps = client.AppsV1Api(cluster.api)
    out = {}
    for key in WORKLOADS:
        kind, name = key.split("/")
        read = apps.read_namespaced_deployment if kind == "deployments" else apps.read_namespaced_stateful_set
        out[key] = json.loads(read(name, cluster.namespace, _preload_content=False).data)["spec"]["template"]
    return out


def template_patches(calls) -> list[str]:
    return [
        f"{c.resource}/{c.name}" for c in calls if c.verb == "patch" and c.resource in ("deployments", "statefulsets")
    ]


async def test_trains_roll_kubernetes_dags_only_rebuild_and_crash_rollback(agent, drive, world, monorepo, cluster):
    emulator = cluster.emulator
    first = await drive.finish((await start_train(agent, world, monorepo.head.commit.hexsha)).id)

    assert first.state == TrainState.succeeded, first.reason
    assert first.mode == "rebuild"
    staging = first.environment_status("staging")
    assert any(w.startswith("airflow-worker: terminationGracePeriodSeconds is 600s") for w in staging.warnings)
    assert len(build_jobs(cluster)) == 1  # kaniko built the runtime image once
    on_first = templates(cluster)
    image = on_first["deployments/airflow-scheduler"]["spec"]["containers"][0]["image"]
    runtime = next(s for s in first.stages if s.name == "build").detail.split("runtime ")[1].rstrip(")")
    assert image == f"{REGISTRY}:{runtime}"  # tagged by the runtime hash
    assert all(t["spec"]["containers"][0]["image"] == image for t in on_first.values())
    assert all(t["spec"]["containers"][1]["image"] == kube.GIT_SYNC_IMAGE for t in on_first.values())
    assert monorepo.heads["airagent/staging"].commit.hexsha == monorepo.head.commit.hexsha

    mark = len(emulator.calls)
    sha = example.commit(
        monorepo,
        {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)},
        "finance: more fx steps",
        "finance",
    )
    second = await drive.finish((await start_train(agent, world, sha)).id)

    assert second.state == TrainState.succeeded, second.reason
    assert second.mode == "dags-only"
    assert template_patches(emulator.since(mark)) == []
    assert templates(cluster) == on_first
    assert monorepo.heads["airagent/staging"].commit.hexsha == sha
    assert len(build_jobs(cluster)) == 1  # same runtime: nothing to build

    cluster.controller.crash("airflow-scheduler")
    mark = len(emulator.calls)
    bad = example.commit(
        monorepo,
        {"Dockerfile": "FROM apache/airflow:3.1.0\nRUN pip install nothing\n"},
        "platform: new image",
        "platform",
    )
    third = await drive.finish((await start_train(agent, world, bad)).id)
    cluster.controller.heal()

    assert third.state == TrainState.failed, third.reason
    assert "CrashLoopBackOff" in third.reason and "airflow-scheduler" in third.reason
    assert third.environment_status("staging").state == "rolled_back"
    assert templates(cluster) == on_first
    assert monorepo.heads["airagent/staging"].commit.hexsha == sha
    assert sorted(set(template_patches(emulator.since(mark)))) == sorted(WORKLOADS)


async def test_an_image_from_ci_must_carry_the_runtime_hash(agent, drive, world, monorepo):
    pipeline = world.model_copy(update={"image": ImageSettings(repository=REGISTRY, context=CONTEXT)})  # external
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha, image=f"{REGISTRY}:latest")
    status = await drive.finish(handle.id)

    assert status.state == TrainState.failed
    assert status.stages[-1].name == "build"
    assert f"expected '{REGISTRY}:" in status.reason and "runtime hash" in status.reason


def write_config(path: Path, pipeline: PipelineSettings, image: bool = True) -> Path:
    """airagent.yaml for the kube pipeline, as a platform team would write it (builder external)."""
    target = pipeline.environments[0].target
    declared = {
        "repo": pipeline.repo,
        "environments": [
            {
                "name": "staging",
                "target": {"type": "kubernetes", "namespace": target.namespace, "kubeconfig": str(target.kubeconfig)},
            }
        ],
    }
    path.write_text(
        yaml.safe_dump({"pipelines": {"main": {**declared, **({"image": {"repository": REGISTRY}} if image else {})}}})
    )
    return path


def airagent_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("airagent")), *args], capture_output=True, text=True, timeout=120
    )


async def test_the_conductor_rolls_the_image_ci_announced_for_the_commit(
    agent, drive, world, monorepo, cluster, tmp_path
):
    pipeline = world.model_copy(update={"image": ImageSettings(repository=REGISTRY, context=CONTEXT)})  # external
    head = monorepo.head.commit.hexsha
    await agent.start_pipeline(pipeline)
    try:
        waiting = await drive.pipeline_until("main", lambda s: s.state.blocked is not None)
        assert f"waiting for CI to announce the image of {head[:12]}" in waiting.state.blocked
        assert waiting.state.trains == []

        # CI learns the tag without building anything, builds and pushes it, then tells the conductor.
        told = airagent_cli(
            "image",
            "tag",
            "-p",
            "main",
            "--sha",
            head[:12],
            "-c",
            str(write_config(tmp_path / "airagent.yaml", pipeline)),
        )
        assert told.returncode == 0, told.stderr
        tag = told.stdout.strip()
        assert tag.startswith(f"{REGISTRY}:")
        rejected = await agent.notify(pipeline, None, by="ci", image=tag)
        assert not rejected.accepted and "--sha" in rejected.message
        ack = await agent.notify(pipeline, head[:12], by="ci", image=tag)
        assert ack.accepted and tag in ack.message

        done = await drive.pipeline_until("main", lambda s: s.state.last_deployed == head, step=timedelta(minutes=1))
    finally:
        await agent.client.get_workflow_handle(conductor_id("main")).terminate("test over")

    assert [t.state for t in done.state.trains] == ["succeeded"] and done.state.blocked is None
    train = await agent.status(done.state.trains[0].id)
    runtime = next(s for s in train.stages if s.name == "build").detail.split("runtime ")[1].rstrip(")")
    assert tag == f"{REGISTRY}:{runtime}"  # the CLI's hash is the build stage's
    assert all(t["spec"]["containers"][0]["image"] == tag for t in templates(cluster).values())
    assert build_jobs(cluster) == []  # CI built it: no kaniko


def test_image_tag_needs_image_settings(world, tmp_path):
    path = write_config(tmp_path / "airagent.yaml", world, image=False)
    told = airagent_cli("image", "tag", "-p", "main", "-c", str(path))
    assert told.returncode == 2 and "no `image:` settings" in told.stderr and "Traceback" not in told.stderr


def validator_jobs(cluster) -> list[dict]:
    return [j for j in cluster.emulator.store.list("jobs")[0] if j["metadata"]["name"].startswith("airagent-validate-")]


def ref_and_record(cluster, monorepo) -> tuple:
    record = cluster.emulator.store.get("configmaps", cluster.namespace, "airagent-staging")
    return monorepo.heads["airagent/staging"].commit.hexsha, record["metadata"]["resourceVersion"]


async def test_validate_runs_in_the_release_image_as_a_job(agent, drive, world, monorepo, cluster):
    """The validate stage of a release with an image is a Job in that image (run here by the kubelet stand-in with
    the runtime the image is built from): a good commit passes on Airflow's own report, a broken DAG and an image
    that cannot be pulled fail validate, and neither touches the environment."""
    emulator = cluster.emulator
    # A repository of its own: files parsed in an image are cached under it, and this test must see Jobs run.
    world = world.model_copy(
        update={
            "image": world.image.model_copy(update={"repository": f"registry.example/{uuid.uuid4().hex[:8]}/airflow"})
        }
    )
    # A commit of its own too: the example's commits are the same in every test, and a report kept for one
    # another test validated first would answer without a Job.
    example.commit(monorepo, {"README.md": f"# Airflow monorepo {uuid.uuid4().hex}\n"}, "docs", "platform")
    first = await drive.finish((await start_train(agent, world, monorepo.head.commit.hexsha)).id)

    assert first.state == TrainState.succeeded, first.reason
    [job] = validator_jobs(cluster)
    pod = job["spec"]["template"]["spec"]
    runtime = next(s for s in first.stages if s.name == "build").detail.split("runtime ")[1].rstrip(")")
    assert pod["containers"][0]["image"] == f"{world.image.repository}:{runtime}"  # the release image itself
    assert pod["initContainers"][0]["args"][:2] == [f"--repo={CONTEXT}", f"--ref={monorepo.head.commit.hexsha}"]
    [log] = [text for (_, name, container), text in emulator.store.logs.items() if container == "validate"]
    report = json.loads(log.split("airagent-report: ", 1)[1])
    assert sorted(d for f in report["files"] for d in f["dag_ids"]) == [
        "campaigns",
        "fx_rates",
        "ledger_daily",
        "orders_hourly",
    ]  # parsed by Airflow's DagBag
    assert "6 files, 4 DAGs (6 parsed, 0 from cache): all parse" in first.validation

    before = ref_and_record(cluster, monorepo)
    mark = len(emulator.calls)
    example.commit(monorepo, {"dags/marketing/campaigns.py": "import no_such_module\n"}, "marketing: oops", "marketing")
    broken = await drive.finish((await start_train(agent, world, monorepo.head.commit.hexsha)).id)

    assert broken.state == TrainState.failed and broken.stages[-1].name == "validate", broken.reason
    assert "dags/marketing/campaigns.py" in broken.reason and "no_such_module" in broken.reason
    assert "5 from cache" in broken.validation  # only the changed file went to the Job
    assert len(validator_jobs(cluster)) == 2
    assert template_patches(emulator.since(mark)) == [] and ref_and_record(cluster, monorepo) == before

    example.commit(
        monorepo,
        {"dags/marketing/campaigns.py": example.dag_file("campaigns", tasks=3)},
        "marketing: fixed",
        "marketing",
    )
    unpullable = world.model_copy(
        update={"image": world.image.model_copy(update={"repository": "registry.invalid/data/airflow"})}
    )
    mark = len(emulator.calls)
    pulled = await drive.finish((await start_train(agent, unpullable, monorepo.head.commit.hexsha)).id)

    assert pulled.state == TrainState.failed and pulled.stages[-1].name == "validate", pulled.reason
    # A cluster says ErrImagePull, then ImagePullBackOff: which one the job is seen in depends on the host's speed.
    assert "airagent-validate-" in pulled.reason
    assert "ErrImagePull" in pulled.reason or "ImagePullBackOff" in pulled.reason
    assert "registry.invalid/data/airflow:" in pulled.reason
    assert template_patches(emulator.since(mark)) == [] and ref_and_record(cluster, monorepo) == before


def paths(commit) -> set[str]:
    """Every file of a commit's tree (a Tree's `in` looks at its top level only)."""
    return {item.path for item in commit.tree.traverse() if item.type == "blob"}


async def test_a_held_back_train_moves_the_dag_ref_to_the_release_commit(agent, drive, cluster, monorepo, tmp_path):
    """GitDagBundle serves what `airagent/<env>` points at: with a commit held back, that is the release commit
    airagent made (head minus the held changes), so the bundle version is a real commit of the repo. The cluster
    clones from a remote the developers push to: the release commit must be there before validate asks for it."""
    shutil.rmtree(home() / "images", ignore_errors=True)
    origin = git.Repo.init(tmp_path / "origin.git", bare=True)
    url = Path(origin.git_dir).as_uri()
    pipeline = kube_pipeline(monorepo, kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host))
    pipeline = pipeline.model_copy(update={"image": pipeline.image.model_copy(update={"context": url})})
    run_validator_jobs(cluster, pipeline, monorepo, origin=Path(origin.git_dir))

    def pushed(sha: str) -> str:
        monorepo.git.push(url, "main")
        return sha

    await drive.finish((await start_train(agent, pipeline, pushed(monorepo.head.commit.hexsha))).id)
    broken_path, good_path = "dags/marketing/orders_daily.py", "dags/finance/fx_weekly.py"
    does_not_import = "import pandas_but_misspelled\n" + example.dag_file("orders_daily")
    broken = example.commit(monorepo, {broken_path: does_not_import}, "marketing: daily orders", "marketing")
    good = pushed(example.commit(monorepo, {good_path: example.dag_file("fx_weekly")}, "finance: weekly fx", "finance"))

    status = await drive.finish((await start_train(agent, pipeline, good)).id)

    assert status.state == TrainState.succeeded, status.reason
    assert [(h.sha, h.author) for h in status.held] == [(broken, example.AUTHORS["marketing"][0])]
    ref = monorepo.heads["airagent/staging"].commit
    assert ref.hexsha == status.release_commit
    assert origin.commit(f"refs/airagent/releases/{ref.hexsha}").hexsha == ref.hexsha
    assert stands_for(monorepo, ref.hexsha) == (good, [broken])
    assert ref.tree[good_path].data_stream.read().decode() == example.dag_file("fx_weekly")
    assert broken_path not in paths(ref)

    # The fix lifts the hold: the held commit rides the next train with it, and the ref is the fix itself.
    fix = pushed(
        example.commit(monorepo, {broken_path: example.dag_file("orders_daily")}, "marketing: fixed", "marketing")
    )
    fixed = await drive.finish((await start_train(agent, pipeline, fix)).id)

    assert fixed.state == TrainState.succeeded and fixed.held == [], fixed.reason
    assert {c.sha for c in fixed.commits} == {broken, fix}
    ref = monorepo.heads["airagent/staging"].commit
    assert ref.hexsha == fix and {good_path, broken_path} <= paths(ref)
