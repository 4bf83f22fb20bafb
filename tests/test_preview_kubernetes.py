"""Previews of a kubernetes pipeline: a namespace of its own per branch, on the API emulator (tests/kube/).

The Preview workflow runs on the dev server (the cap counts previews through its visibility,
which the time-skipping server lacks) with the worker in-process, so TTLs pass in real time; the real
`kubernetes` client talks HTTP to the emulator, whose controller makes pods ready and whose
kubelet stand-in runs the validator Jobs with the release's runtime. The namespace is copied
from the first environment's (`airflow`, the chart's objects), and deleting it is the end of it.
"""

from __future__ import annotations

import asyncio
import configparser
import copy
import json
import os
import re
import subprocess
import time
from datetime import timedelta

import celpy
import kubernetes_validate
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.targets.base import RolloutFailed
from activities.targets.kube_git import GitRef
from activities.targets.kube_preview import PreviewNamespace, PreviewValues, airflow_cfg, overlay
from activities.targets.kube_record import Rollout
from activities.targets.kubernetes import KubernetesEnvironment
from airagent import example
from airagent.config import ConfigError, KubernetesPreviews, KubernetesTarget
from airagent.devserver import binary
from airagent.models import PreviewState, PreviewStatus, RolloutMode
from airagent.models.preview import namespace
from interface.previews import PreviewRefused
from interface.visibility import NotFound
from tests.conftest import running_worker
from tests.devserver import dev_server  # noqa: F401 - a fixture
from tests.kube import cluster as kube
from tests.test_kube_hardening import admission
from tests.test_kubernetes_target import INFRA
from tests.test_kubernetes_train import REGISTRY, WORKLOADS, kube_pipeline, run_validator_jobs

pytestmark = [pytest.mark.slow, pytest.mark.devserver]
SERVE = 240  # seconds a preview may take to serve on a loaded host: a build, a validator Job, a roll

VALUES = "previews/values.yaml"
IMAGES = f"{REGISTRY}-previews"  # its own: the suite's processes share built images' records
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture
def cluster():
    with kube.emulated(delay=0.1, progress_deadline=5) as c:
        yield c


@pytest.fixture
async def agent(dev_server):
    """The worker in-process on a queue of its own; every preview a test left running ends with it."""
    temporal = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    async with running_worker(temporal) as agent:
        yield agent
        for left in await agent.previews("main"):
            try:
                await agent.preview_down("main", left.branch, reason="test over")
            except NotFound:
                pass


@pytest.fixture
def world(cluster, monorepo, tmp_path):
    config = kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host)
    pipeline = kube_pipeline(monorepo, config, repository=IMAGES)
    previews = pipeline.previews.model_copy(
        update={"cap": 2, "poll_interval": timedelta(seconds=2), "kubernetes": KubernetesPreviews(values=VALUES)}
    )
    run_validator_jobs(cluster, pipeline, monorepo)
    return pipeline.model_copy(update={"previews": previews})


def on_branch(repo, branch: str, files: dict[str, str | None], message: str, new: bool = False) -> str:
    repo.git.checkout(*(["-b"] if new else []), branch)
    sha = example.commit(repo, files, message, "marketing")
    repo.git.checkout("main")
    return sha


async def until(agent, branch: str, predicate, timeout: float = SERVE) -> PreviewStatus:
    """The preview's status once `predicate` holds."""
    status = None
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            status = await agent.preview_status("main", branch)
            if predicate(status):
                return status
        except NotFound:  # not started yet
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"the preview of {branch} never got there within {timeout:.0f}s; last status: {status}")


async def airagent_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`airagent preview ...` in a thread: the worker in this process answers its queries meanwhile."""
    return await asyncio.to_thread(
        subprocess.run,
        [binary("airagent"), "preview", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored(cluster, resource: str, ns: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in cluster.emulator.store.list(resource, ns)[0]}


async def gone(cluster, ns: str, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if cluster.emulator.store.get("namespaces", "", ns) is None:
            break
        await asyncio.sleep(0.1)
    store = cluster.emulator.store
    assert store.get("namespaces", "", ns) is None, f"namespace {ns} left behind"
    assert not [key for key in store.objects if key[1] == ns], "objects left in the deleted namespace"


def templates(cluster, ns: str) -> dict[str, dict]:
    return {
        f"{plural}/{name}": obj["spec"]["template"]
        for plural in ("deployments", "statefulsets")
        for name, obj in stored(cluster, plural, ns).items()
    }


def test_namespaces_on_the_emulator_are_made_listed_and_deleted_with_what_is_in_them(cluster):
    core = client.CoreV1Api(cluster.api)
    cluster.emulator.store.termination = 3  # long enough to be seen Terminating from a loaded host
    core.create_namespace({"metadata": {"name": "scratch", "labels": {"airagent.io/preview": "true"}}})
    core.create_namespaced_config_map("scratch", {"metadata": {"name": "c"}, "data": {"a": "b"}})

    listed = core.list_namespace(label_selector="airagent.io/preview=true")
    assert [n.metadata.name for n in listed.items] == ["scratch"]
    assert core.read_namespace("scratch").metadata.labels["kubernetes.io/metadata.name"] == "scratch"
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    assert missing.value.status == 404

    core.delete_namespace("scratch")

    assert core.read_namespace("scratch").status.phase == "Terminating"
    with pytest.raises(ApiException) as closed:
        core.create_namespaced_config_map("scratch", {"metadata": {"name": "d"}})
    assert closed.value.status == 403 and "being terminated" in json.loads(closed.value.body)["message"]
    for _ in range(200):
        try:
            core.read_namespace("scratch")
        except ApiException as err:
            assert err.status == 404
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the namespace was never deleted")
    assert cluster.emulator.store.get("configmaps", "scratch", "c") is None


def test_two_long_branch_names_get_namespaces_of_their_own():
    long = "feature/" + "x" * 50
    a, b = namespace("airagent-preview-", "main", long + "-one"), namespace("airagent-preview-", "main", long + "-two")

    assert a != b
    for name in (a, b, namespace("p-", "main", "UPPER/Case_and.dots"), namespace("p-", "main", "///")):
        assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert a.startswith("airagent-preview-main-feature-xxx")
    assert namespace("airagent-preview-", "main", "a/b") != namespace("airagent-preview-", "main", "a-b")


async def test_a_preview_gets_a_namespace_follows_its_branch_and_down_deletes_it(
    agent, world, monorepo, cluster, dev_server
):
    values = "workers: {replicas: 1}\nscheduler: {replicas: 2}\nconfig: {core: {parallelism: 4}}\n"
    head = on_branch(
        monorepo,
        "feat-a",
        {VALUES: values, "dags/marketing/preview_a.py": example.dag_file("preview_a")},
        "a",
        new=True,
    )
    staging = templates(cluster, kube.NAMESPACE)

    await agent.preview_up(world, "feat-a")
    status = await until(agent, "feat-a", lambda s: s.state != PreviewState.starting)

    assert status.state == PreviewState.serving and status.commit == head, status
    ns = namespace("airagent-preview-", "main", "feat-a")
    made = cluster.emulator.store.get("namespaces", "", ns)
    assert made and made["metadata"]["labels"]["airagent.io/preview"] == "true", made
    assert made["metadata"]["annotations"]["airagent.io/branch"] == "feat-a"
    rolled = templates(cluster, ns)
    assert sorted(rolled) == sorted(WORKLOADS)
    image = rolled["deployments/airflow-scheduler"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"{IMAGES}:")  # the branch's release image
    assert all(t["metadata"]["annotations"]["airagent.io/release"] == status.release for t in rolled.values())
    assert stored(cluster, "deployments", ns)["airflow-scheduler"]["spec"]["replicas"] == 2
    assert stored(cluster, "statefulsets", ns)["airflow-worker"]["spec"]["replicas"] == 1
    assert "parallelism = 4" in stored(cluster, "configmaps", ns)["airflow-config"]["data"]["airflow.cfg"]
    assert "airflow-api-server" in stored(cluster, "services", ns)
    record = json.loads(stored(cluster, "configmaps", ns)["airagent-preview"]["data"]["record.json"])
    assert record["live"] == status.release and record["live_commit"] == head
    assert monorepo.heads[f"airagent/previews/{ns}"].commit.hexsha == head
    assert status.url == f"http://airflow-api-server.{ns}.svc:8080"
    assert status.reach and f"kubectl port-forward -n {ns} svc/airflow-api-server" in status.reach
    assert templates(cluster, kube.NAMESPACE) == staging, "the pipeline's environment is never touched"
    assert "airagent-staging" not in stored(cluster, "configmaps", kube.NAMESPACE)
    env = {**os.environ, "TEMPORAL_ADDRESS": dev_server.address}
    listed = await airagent_cli(env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [shown] = [p for p in json.loads(listed.stdout) if p["branch"] == "feat-a"]
    assert shown["url"] == status.url and shown["reach"] == status.reach and shown["login_file"] is None
    human = (await airagent_cli(env, "list")).stdout
    assert f"Airflow {status.url}; reach it with: kubectl port-forward -n {ns}" in " ".join(human.split()), human

    newer = on_branch(monorepo, "feat-a", {"dags/marketing/preview_a2.py": example.dag_file("preview_a2")}, "a2")
    status = await until(agent, "feat-a", lambda s: s.commit == newer)

    assert status.event and status.event.startswith("dags-only"), status.event
    record = json.loads(stored(cluster, "configmaps", ns)["airagent-preview"]["data"]["record.json"])
    assert record["live_commit"] == newer and record["live"] == status.release
    assert monorepo.heads[f"airagent/previews/{ns}"].commit.hexsha == newer
    assert templates(cluster, kube.NAMESPACE) == staging

    ended = await agent.preview_down("main", "feat-a", by="ana", reason="done")

    assert ended.state == PreviewState.ended and "down by ana" in str(ended.ended_because), ended
    await gone(cluster, ns)
    assert f"airagent/previews/{ns}" not in [h.name for h in monorepo.heads]
    assert templates(cluster, kube.NAMESPACE) == staging


async def test_the_cap_refuses_naming_the_running_previews_and_ttl_and_branch_deletion_end_them(
    agent, world, monorepo, cluster
):
    url = "https://{namespace}.previews.example.com"
    no_values = world.previews.model_copy(update={"kubernetes": KubernetesPreviews(url=url)})
    world = world.model_copy(update={"previews": no_values})
    for branch in ("feat-b", "feat-c", "feat-d"):
        on_branch(
            monorepo,
            branch,
            {f"dags/finance/{branch[-1]}.py": example.dag_file(f"preview_{branch[-1]}")},
            branch,
            new=True,
        )
    await agent.preview_up(world, "feat-b", ttl=timedelta(seconds=90))
    await agent.preview_up(world, "feat-c", ttl=timedelta(hours=8))
    b = await until(agent, "feat-b", lambda s: s.state == PreviewState.serving)
    await until(agent, "feat-c", lambda s: s.state == PreviewState.serving)

    with pytest.raises(PreviewRefused) as refused:
        await agent.preview_up(world, "feat-d")

    message = str(refused.value)
    assert "cap" in message and "feat-b" in message and "feat-c" in message, message
    assert cluster.emulator.store.get("namespaces", "", namespace("airagent-preview-", "main", "feat-d")) is None
    assert (
        stored(cluster, "statefulsets", namespace("airagent-preview-", "main", "feat-b"))["airflow-worker"]["spec"][
            "replicas"
        ]
        == 1
    )  # no values file: every component at one replica

    assert b.url == url.format(namespace=namespace(PREFIX, "main", "feat-b")) and b.reach is None, b
    ended = await until(agent, "feat-b", lambda s: s.state == PreviewState.ended)
    assert "TTL" in str(ended.ended_because) and b.expires, ended
    await gone(cluster, namespace("airagent-preview-", "main", "feat-b"))

    monorepo.git.branch("-D", "feat-c")
    ended = await until(agent, "feat-c", lambda s: s.state == PreviewState.ended)
    assert "deleted" in str(ended.ended_because), ended
    await gone(cluster, namespace("airagent-preview-", "main", "feat-c"))


# --- infra/previews.yaml: the rights a preview needs, and the policy that keeps them to preview namespaces ----------

WORKER = "system:serviceaccount:airflow:airagent"
PREFIX = KubernetesPreviews().namespace_prefix


def previews_yaml() -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / "previews.yaml").read_text()) if d]


def grants(kind: str, name: str) -> set[tuple[str, str, str | None]]:
    [role] = [d for d in previews_yaml() if d["kind"] == kind and d["metadata"]["name"] == name]
    return {
        (verb, resource, named)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for named in rule.get("resourceNames") or [None]
    }


def assert_grants_exactly(granted: set, calls, who: str) -> None:
    """Every call is allowed by `granted`, and every grant is used by a call."""
    used = set()
    for c in calls:
        anywhere, named = (c.verb, c.resource, None), (c.verb, c.resource, c.name)
        grant = anywhere if anywhere in granted or c.verb == "create" else named
        assert grant in granted, f"a preview calls {c.verb} {c.resource}/{c.name}, which {who} does not grant"
        used.add(grant)
    assert granted - used == set(), f"{who} grants more than a preview uses: {sorted(granted - used, key=str)}"


def test_infra_previews_grants_exactly_what_a_preview_calls(tmp_path):
    """A preview's whole life on the cluster (its namespace made and copied, a restart, a dags-only roll, a failed
    rebuild and its rollback, the namespace deleted), each request checked against the role that covers it."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    sha = repo.head.commit.hexsha
    with kube.emulated(delay=0.05, progress_deadline=0.8) as cluster:
        source = KubernetesTarget(namespace=kube.NAMESPACE, rollout_deadline="20s")
        ns = namespace(PREFIX, "main", "feat-rbac")
        mark = len(cluster.emulator.calls)
        made = PreviewNamespace(cluster.api, source, ns).create(
            "main", "feat-rbac", PreviewValues(), f"airagent/previews/{ns}", ("airflow", "airagent")
        )
        env = KubernetesEnvironment(
            "preview",
            source.model_copy(update={"namespace": ns}),
            cluster.api,
            GitRef(repo.working_dir, f"airagent/previews/{ns}"),
        )
        env.roll(Rollout(release="r1", commit=sha, mode=RolloutMode.restart, config={"airflow.cfg": "x"}))
        env.roll(Rollout(release="r2", commit=sha, mode=RolloutMode.dags_only))
        cluster.controller.crash("airflow-worker")
        with pytest.raises(RolloutFailed):
            env.roll(Rollout(release="r3", commit=sha, mode=RolloutMode.rebuild, image="apache/airflow:3.1.1"))
        cluster.controller.heal()
        env.rollback("r2")
        PreviewNamespace(cluster.api, source, ns).delete(30)
        calls = cluster.emulator.since(mark)
        binding = cluster.emulator.store.events  # the RoleBinding as the worker sent it, before the namespace went
        sent = next(e[3] for e in binding if e[1] == "rolebindings" and e[2] == "ADDED")

    assert made[:2] == [f"namespaces/{ns}", "rolebindings/airagent-preview"], made
    assert sent["roleRef"]["name"] == "airagent-preview"
    assert sent["subjects"] == [{"kind": "ServiceAccount", "namespace": "airflow", "name": "airagent"}]
    cluster_wide = [c for c in calls if c.namespace is None or c.resource == "rolebindings"]
    # `bind` is asked by the API server of the RoleBinding's creator, not sent as a request
    namespaces = grants("ClusterRole", "airagent-preview-namespaces") - {("bind", "clusterroles", "airagent-preview")}
    assert_grants_exactly(namespaces, cluster_wide, "ClusterRole airagent-preview-namespaces")
    inside = [c for c in calls if c.namespace == ns and c.resource != "rolebindings"]
    assert_grants_exactly(grants("ClusterRole", "airagent-preview"), inside, "ClusterRole airagent-preview")
    copied = [c for c in calls if c.namespace == kube.NAMESPACE]
    assert_grants_exactly(grants("Role", "airagent-previews"), copied, "Role airagent-previews")


def admitted(operation: str, resource: str, obj: dict | None, old: dict | None = None, namespace_object=None):
    """None when the preview policy does not apply, else the messages of the validations that deny the request."""
    [policy] = [d for d in previews_yaml() if d["kind"] == "ValidatingAdmissionPolicy"]
    spec = policy["spec"]
    request = {"operation": operation, "userInfo": {"username": WORKER}, "resource": {"resource": resource}}
    activation = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "namespaceObject": celpy.json_to_cel(namespace_object),
        "request": celpy.json_to_cel(request),
    }
    return admission(spec, activation)


def test_the_admission_policy_keeps_the_worker_to_preview_namespaces(cluster):
    ns = namespace(PREFIX, "main", "feat-policy")
    PreviewNamespace(cluster.api, KubernetesTarget(namespace=kube.NAMESPACE), ns).create(
        "main", "feat-policy", PreviewValues(), f"airagent/previews/{ns}", ("airflow", "airagent")
    )
    preview = cluster.emulator.store.get("namespaces", "", ns)
    binding = cluster.emulator.store.get("rolebindings", ns, "airagent-preview")
    airflow = cluster.emulator.store.get("namespaces", "", kube.NAMESPACE)
    for doc in previews_yaml():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)

    assert admitted("CREATE", "namespaces", preview) == []
    assert admitted("DELETE", "namespaces", None, old=preview) == []
    assert admitted("CREATE", "rolebindings", binding, namespace_object=preview) == []

    unlabelled = copy.deepcopy(preview)
    del unlabelled["metadata"]["labels"]["airagent.io/preview"]
    renamed = {**preview, "metadata": {**preview["metadata"], "name": "team-data"}}
    for denied in (
        admitted("CREATE", "namespaces", unlabelled),
        admitted("CREATE", "namespaces", renamed),
        admitted("DELETE", "namespaces", None, old=airflow),
        admitted("CREATE", "rolebindings", binding, namespace_object=airflow),
    ):
        assert denied and "only in preview namespaces" in denied[0], denied
    admin = {**binding, "roleRef": {**binding["roleRef"], "name": "cluster-admin"}}
    assert admitted("CREATE", "rolebindings", admin, namespace_object=preview) == [
        "in a preview namespace the worker binds the ClusterRole airagent-preview and nothing else"
    ]


def test_the_preview_config_tracks_its_own_dag_ref_over_any_release_config(tmp_path):
    bundles = [{"name": "deploy", "classpath": "GitDagBundle", "kwargs": {"tracking_ref": "airagent/staging"}}]
    chart = f"[core]\nparallelism = 32\n\n[dag_processor]\ndag_bundle_config_list = {json.dumps(bundles)}\n"
    options = overlay({"core": {"parallelism": 4, "load_examples": False}}, chart, "airagent/previews/p-1")
    release = "[core]\nexecutor = CeleryExecutor\nparallelism = 64\n"

    configured = configparser.ConfigParser(interpolation=None)
    configured.read_string(airflow_cfg(release, options))

    assert configured.get("core", "parallelism") == "4" and configured.get("core", "load_examples") == "false"
    assert configured.get("core", "executor") == "CeleryExecutor"
    tracked = json.loads(configured.get("dag_processor", "dag_bundle_config_list"))
    assert tracked[0]["kwargs"]["tracking_ref"] == "airagent/previews/p-1"
    (tmp_path / "values.yaml").write_text(yaml.safe_dump({"workers": {"replica": 2}}))
    with pytest.raises(ConfigError, match="values.yaml: workers.replica: Extra inputs"):
        PreviewValues.read(tmp_path / "values.yaml", "previews/values.yaml")
