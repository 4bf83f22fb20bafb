"""The kubernetes target driver, driven by the real `kubernetes` client.

Every test runs on the API emulator (tests/kube/). With AIRAGENT_KUBECONFIG set, each
also runs against that cluster in a throwaway namespace; tests that need injected faults
or request counts skip there.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import git
import pytest
import yaml
from kubernetes import client
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import images
from activities.roll import roll
from activities.targets.base import RolloutFailed, RolloutTimeout, UnexpectedLive
from activities.targets.kube_git import GitRef
from activities.targets.kube_record import Rollout
from activities.targets.kube_rollout import deployment_progress, statefulset_progress
from activities.targets.kubernetes import KubernetesEnvironment
from airagent.config import EnvironmentSettings, ImageSettings, KubernetesTarget, PipelineSettings
from airagent.models import Expected, Release, RollInput, RolloutMode
from tests.kube import cluster as kube

# The Airflow runtime or the Kubernetes emulator: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

KUBECONFIG = os.environ.get("AIRAGENT_KUBECONFIG")
INFRA = Path(__file__).resolve().parent.parent / "infra"
WORKLOADS = [
    "deployments/airflow-scheduler",
    "deployments/airflow-api-server",
    "deployments/airflow-dag-processor",
    "deployments/airflow-triggerer",
    "statefulsets/airflow-worker",
]


@pytest.fixture(params=["emulator", "kubeconfig"])
def cluster(request):
    if request.param == "kubeconfig":
        if not KUBECONFIG:
            pytest.skip("set AIRAGENT_KUBECONFIG to a kubeconfig to run against a real cluster")
        with kube.real(KUBECONFIG) as c:
            yield c
    else:
        with kube.emulated(delay=0.1, progress_deadline=0.8) as c:
            yield c


def emulated(cluster: kube.Cluster) -> kube.Cluster:
    if cluster.emulator is None:
        pytest.skip("needs the emulator's fault injection or request log")
    return cluster


@pytest.fixture
def repo(tmp_path) -> git.Repo:
    """The deployment monorepo, with two commits the DAG ref can point at."""
    r = git.Repo.init(tmp_path / "repo", initial_branch="main")
    for n in (1, 2):
        (tmp_path / "repo" / "dag.py").write_text(f"# version {n}\n")
        r.index.add(["dag.py"])
        r.index.commit(f"version {n}")
    return r


def commits(repo: git.Repo) -> tuple[str, str]:
    first, second = list(repo.iter_commits("main"))[::-1]
    return first.hexsha, second.hexsha


class Confirmations(list):
    def __call__(self, release, commit):
        self.append((release, commit))


def environment(cluster, repo, confirm=None, **settings) -> KubernetesEnvironment:
    settings.setdefault("rollout_deadline", "20s")
    target = KubernetesTarget(namespace=cluster.namespace, **settings)
    return KubernetesEnvironment("staging", target, cluster.api, GitRef(repo.working_dir, "airagent/staging"), confirm)


def rebuild(release: str, commit: str, image: str) -> Rollout:
    return Rollout(release=release, commit=commit, mode=RolloutMode.rebuild, image=image)


def templates(cluster) -> dict[str, str]:
    """Every workload's pod template as canonical JSON, to compare byte for byte."""
    out = {}
    for key in WORKLOADS:
        kind, name = key.split("/")
        apps = client.AppsV1Api(cluster.api)
        read = apps.read_namespaced_deployment if kind == "deployments" else apps.read_namespaced_stateful_set
        obj = json.loads(read(name, cluster.namespace, _preload_content=False).data)
        out[key] = json.dumps(obj["spec"]["template"], sort_keys=True)
    return out


def patches(calls) -> list[str]:
    return [f"{c.resource}/{c.name}" for c in calls if c.verb == "patch"]


def test_dags_only_moves_the_ref_and_patches_no_pod_template(cluster, repo):
    c1, _ = commits(repo)
    confirm = Confirmations()
    env = environment(cluster, repo, confirm)
    before = templates(cluster)
    mark = len(cluster.emulator.calls) if cluster.emulator else 0

    report = env.roll(Rollout(release="r1", commit=c1, mode=RolloutMode.dags_only))

    assert report.changed and report.live == "r1" and report.patched == []
    assert repo.heads["airagent/staging"].commit.hexsha == c1
    assert confirm == [("r1", c1)]
    assert templates(cluster) == before
    assert env.record().live == "r1"
    if cluster.emulator:
        assert set(patches(cluster.emulator.since(mark))) == {"configmaps/airagent-staging"}  # the record only


def test_rebuild_rolls_every_workload_and_waits_until_it_is_out(cluster, repo):
    c1, _ = commits(repo)
    env = environment(cluster, repo)
    image = cluster.image.rsplit(":", 1)[0] + ":3.1.1" if cluster.emulator else "busybox:1.37"
    mark = len(cluster.emulator.calls) if cluster.emulator else 0

    report = env.roll(rebuild("r1", c1, image))
    calls = cluster.emulator.since(mark) if cluster.emulator else []

    assert sorted(report.patched) == sorted(WORKLOADS)
    assert all(note.endswith("rolled out") for note in report.rollout), report.rollout
    apps = client.AppsV1Api(cluster.api)
    for key in WORKLOADS:
        kind, name = key.split("/")
        read = apps.read_namespaced_deployment if kind == "deployments" else apps.read_namespaced_stateful_set
        obj = json.loads(read(name, cluster.namespace, _preload_content=False).data)
        assert (deployment_progress if kind == "deployments" else statefulset_progress)(obj)[0], key
        containers = obj["spec"]["template"]["spec"]["containers"]
        assert containers[0]["image"] == image
        assert obj["spec"]["template"]["metadata"]["annotations"]["airagent.io/release"] == "r1"
        if cluster.emulator:
            assert containers[1]["image"] == kube.GIT_SYNC_IMAGE  # sidecars keep their own image
    if cluster.emulator:
        watches = sum(c.watch for c in calls)
        print(
            f"\nAPI requests per rebuild roll of a 5-workload environment: {len(calls)} "
            f"({watches} watches, {len(calls) - watches} one-shot requests: "
            f"{dict(Counter(c.verb for c in calls if not c.watch))}; 0 polls)"
        )
        # Reads happen once each, before the patches; everything after them is watched.
        assert watches == len(WORKLOADS) + 1
        assert Counter(c.verb for c in calls)["get"] == 1 + len(WORKLOADS) + 1


@pytest.mark.parametrize("fault", ["crash", "unpullable"])
def test_a_failing_pod_fails_the_roll_early_and_rollback_restores(cluster, repo, fault):
    emulated(cluster)
    c1, _ = commits(repo)
    env = environment(cluster, repo, rollout_deadline="30s")
    before = templates(cluster)
    image = "apache/airflow:3.1.1"
    if fault == "crash":
        cluster.controller.crash("airflow-scheduler")
    else:
        image = "registry.invalid/airflow:3.1.1"

    with pytest.raises(RolloutFailed) as failed:
        env.roll(rebuild("r1", c1, image))

    err = failed.value
    assert not isinstance(err, RolloutTimeout), "failed at once, not at the 30 s deadline"
    # A kubelet shows a pull that failed as ErrImagePull, then as ImagePullBackOff while it waits to try again.
    assert err.reason in ({"CrashLoopBackOff"} if fault == "crash" else {"ErrImagePull", "ImagePullBackOff"})
    assert err.pod and err.pod in str(err) and err.reason in str(err)
    if fault == "crash":
        assert err.workload == "airflow-scheduler" and err.pod.startswith("airflow-scheduler-")
    assert env.record().pending == "r1"

    cluster.controller.heal()
    report = env.rollback(None)

    assert report.changed and report.live is None
    assert templates(cluster) == before
    assert env.record().pending is None


def test_a_stuck_statefulset_hits_the_rollout_deadline(cluster, repo):
    emulated(cluster).controller.stick("airflow-worker")
    c1, _ = commits(repo)
    env = environment(cluster, repo, rollout_deadline="1.5s")

    with pytest.raises(RolloutTimeout) as timed_out:
        env.roll(rebuild("r1", c1, "apache/airflow:3.1.1"))

    assert "airflow-worker" in timed_out.value.workload
    assert "airflow-worker" in str(timed_out.value)


def test_a_stuck_deployment_fails_on_progress_deadline_exceeded(cluster, repo):
    emulated(cluster).controller.stick("airflow-triggerer")
    c1, _ = commits(repo)
    env = environment(cluster, repo, rollout_deadline="20s")

    with pytest.raises(RolloutFailed) as failed:
        env.roll(rebuild("r1", c1, "apache/airflow:3.1.1"))

    assert not isinstance(failed.value, RolloutTimeout)
    assert failed.value.reason == "ProgressDeadlineExceeded"
    assert failed.value.workload == "airflow-triggerer"


def test_rollback_restores_byte_identical_templates_config_and_ref(cluster, repo):
    c1, c2 = commits(repo)
    env = environment(cluster, repo)
    config = {"airflow.cfg": "[core]\nexecutor = CeleryExecutor\nparallelism = 64\n"}
    env.roll(Rollout(release="r1", commit=c1, mode=RolloutMode.restart, config=config))
    on_r1 = templates(cluster)
    image = "busybox:1.37" if not cluster.emulator else "apache/airflow:3.1.1"
    env.roll(
        Rollout(
            release="r2",
            commit=c2,
            mode=RolloutMode.rebuild,
            image=image,
            config={"airflow.cfg": "[core]\nparallelism = 8\n"},
        )
    )
    assert templates(cluster) != on_r1

    report = env.rollback("r1")

    assert (report.live, report.previous) == ("r1", "r2")
    assert templates(cluster) == on_r1
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map("airflow-config", cluster.namespace)
    assert cm.data == config
    assert repo.heads["airagent/staging"].commit.hexsha == c1
    assert env.rollback("r1").changed is False


def crashing_confirm(on_attempt: int):
    """A confirmation whose `on_attempt`-th call fails, as if the activity died after patching."""
    attempts = []

    def confirm(release, commit):
        attempts.append(release)
        if len(attempts) == on_attempt:
            raise ConnectionError("worker lost mid-roll")

    return confirm


def test_a_repeated_roll_does_not_patch_twice(cluster, repo):
    emulator = emulated(cluster).emulator
    c1, _ = commits(repo)
    env = environment(cluster, repo, crashing_confirm(on_attempt=1))
    with pytest.raises(ConnectionError):
        env.roll(rebuild("r1", c1, "apache/airflow:3.1.1"))
    assert env.record().pending == "r1"

    mark = len(emulator.calls)
    resumed = env.roll(rebuild("r1", c1, "apache/airflow:3.1.1"))
    assert resumed.changed and resumed.patched == []
    assert patches(emulator.since(mark)) == ["configmaps/airagent-staging"] * 2  # pending, then live

    mark = len(emulator.calls)
    again = env.roll(rebuild("r1", c1, "apache/airflow:3.1.1"))
    assert not again.changed
    assert [(c.verb, c.resource) for c in emulator.since(mark)] == [("get", "configmaps")]
    assert len(env.record().snapshots) == 1


# --- a roll names the release it replaces ----------------------------------------------


def environment_state(cluster, repo, env: KubernetesEnvironment) -> tuple:
    """What a roll could change: every pod template, the chart's config, the DAG ref and the record."""
    config = client.CoreV1Api(cluster.api).read_namespaced_config_map("airflow-config", cluster.namespace).data
    ref = next((h.commit.hexsha for h in repo.heads if h.name == "airagent/staging"), None)
    return templates(cluster), config, ref, env.record()


@pytest.mark.parametrize("expected", ["r0", None], ids=["other-release", "first-deploy"])
def test_a_roll_over_an_unexpected_release_is_refused_before_any_write(cluster, repo, expected):
    c1, c2 = commits(repo)
    env = environment(cluster, repo)
    env.roll(Rollout(release="r1", commit=c1, mode=RolloutMode.dags_only))
    before = environment_state(cluster, repo, env)
    mark = len(cluster.emulator.calls) if cluster.emulator else 0

    with pytest.raises(UnexpectedLive) as refused:
        env.roll(rebuild("r2", c2, "apache/airflow:3.1.1"), Expected(live=expected))

    if cluster.emulator:
        assert [(c.verb, c.resource) for c in cluster.emulator.since(mark)] == [("get", "configmaps")]  # the record
    err = refused.value
    assert (err.expected, err.live, err.release) == (expected, "r1", "r2")
    assert str(err).startswith(f"staging runs r1 (commit {c1[:12]}) but this train expected {expected or 'nothing'}")
    assert environment_state(cluster, repo, env) == before


def test_a_retried_roll_is_still_a_noop_though_replaces_names_the_release_before(cluster, repo):
    emulator = emulated(cluster).emulator
    c1, c2 = commits(repo)
    env = environment(cluster, repo, crashing_confirm(on_attempt=2))
    env.roll(Rollout(release="r1", commit=c1, mode=RolloutMode.dags_only), Expected(live=None))
    with pytest.raises(ConnectionError):
        env.roll(Rollout(release="r2", commit=c2, mode=RolloutMode.dags_only), Expected(live="r1"))

    resumed = env.roll(Rollout(release="r2", commit=c2, mode=RolloutMode.dags_only), Expected(live="r1"))
    assert resumed.changed and (resumed.live, resumed.previous) == ("r2", "r1")

    mark = len(emulator.calls)
    again = env.roll(Rollout(release="r2", commit=c2, mode=RolloutMode.dags_only), Expected(live="r1"))
    assert not again.changed and again.live == "r2"
    assert [(c.verb, c.resource) for c in emulator.since(mark)] == [("get", "configmaps")]
    assert [(s.release, s.replaced) for s in env.record().history] == [("r1", None), ("r2", "r1")]


@pytest.mark.parametrize("checked", [True, False], ids=["matching", "unchecked"])
def test_a_roll_whose_replaces_matches_or_is_absent_rolls_as_before(cluster, repo, checked):
    c1, c2 = commits(repo)
    env = environment(cluster, repo)
    env.roll(Rollout(release="r1", commit=c1, mode=RolloutMode.dags_only), Expected(live=None) if checked else None)

    report = env.roll(
        Rollout(release="r2", commit=c2, mode=RolloutMode.dags_only), Expected(live="r1") if checked else None
    )

    assert report.changed and (report.live, report.previous) == ("r2", "r1")
    assert repo.heads["airagent/staging"].commit.hexsha == c2


def test_the_roll_activity_fails_an_unexpected_live_release_for_good(cluster, repo, tmp_path):
    """Through the driver the worker builds from settings; the record's absence means nothing is live."""
    emulator = emulated(cluster).emulator
    c1, _ = commits(repo)
    target = KubernetesTarget(
        namespace=cluster.namespace, kubeconfig=kube.kubeconfig(tmp_path / "kubeconfig", emulator.host)
    )
    release = Release(
        id="r1",
        commit=c1,
        runtime_hash="0" * 16,
        runtime=str(tmp_path / "runtime"),
        bundle=str(tmp_path / "bundle"),
        dag_folder="dags",
        plugins_folder="plugins",
    )
    mark = len(emulator.calls)

    with pytest.raises(ApplicationError) as failed:
        ActivityEnvironment().run(
            roll,
            RollInput(
                environment=EnvironmentSettings(name="staging", target=target),
                release=release,
                mode=RolloutMode.dags_only,
                replaces=Expected(live="r0"),
            ),
        )

    assert failed.value.non_retryable and failed.value.type == "UnexpectedLive"
    assert failed.value.message.startswith("staging runs nothing but this train expected r0")
    assert {c.verb for c in emulator.since(mark)} == {"get"}  # pre-flight's and the record's reads only


def test_preflight_names_short_grace_periods_and_capacity_drops(cluster, repo):
    apps = client.AppsV1Api(cluster.api)
    env = environment(cluster, repo, worker_drain="15m")
    apps.patch_namespaced_deployment(
        "airflow-scheduler",
        cluster.namespace,
        {"spec": {"replicas": 4, "strategy": {"rollingUpdate": {"maxUnavailable": "50%", "maxSurge": 1}}}},
        _content_type="application/merge-patch+json",
    )

    warnings = env.preflight()

    assert any(w.startswith("airflow-worker: terminationGracePeriodSeconds is 600s") for w in warnings), warnings
    assert any(w.startswith("airflow-scheduler: maxUnavailable lets 2 of 4") for w in warnings), warnings
    assert len(warnings) == 2
    assert environment(cluster, repo, worker_drain="5m").preflight() == [
        w for w in warnings if not w.startswith("airflow-worker")
    ]


def test_git_ref_pushes_to_the_remote_the_bundle_clones(repo, tmp_path):
    c1, c2 = commits(repo)
    remote = git.Repo.init(tmp_path / "remote.git", bare=True)
    ref = GitRef(repo.working_dir, "airagent/prod", remote=str(tmp_path / "remote.git"))
    assert ref.read() is None
    ref.move(c1)
    ref.move(c2)
    assert ref.read() == c2 == remote.heads["airagent/prod"].commit.hexsha


@pytest.mark.parametrize(
    ("settings", "field", "hint"),
    [
        ({"namespace": "Airflow_Prod"}, "namespace", "lower-case"),
        ({"namespace": "a", "drain": "5m"}, "drain", "Extra inputs are not permitted"),
        ({"namespace": "a", "rollout_deadline": "0s"}, "rollout_deadline", "greater than"),
        ({"namespace": "a", "dag_ref": "--upload-pack=x"}, "dag_ref", "airagent/{env}"),
    ],
)
def test_bad_target_settings_name_the_field_and_the_fix(settings, field, hint):
    with pytest.raises(ValidationError) as err:
        KubernetesTarget(**settings)
    assert field in str(err.value) and hint in str(err.value)


def test_rbac_role_grants_exactly_what_the_driver_calls(repo):
    """Every request of a full life (first roll, restart, rebuild, failure, rollback, pre-flight) is allowed
    by infra/rbac.yaml's Role, and every rule of the Role is used by one of them."""
    with kube.emulated(delay=0.05, progress_deadline=0.8) as cluster:
        c1, c2 = commits(repo)
        env = environment(cluster, repo)
        mark = len(cluster.emulator.calls)
        env.preflight()
        env.roll(Rollout(release="r1", commit=c1, mode=RolloutMode.restart, config={"airflow.cfg": "x"}))
        env.roll(Rollout(release="r2", commit=c2, mode=RolloutMode.dags_only))
        cluster.controller.crash("airflow-worker")
        with pytest.raises(RolloutFailed):
            env.roll(rebuild("r3", c2, "apache/airflow:3.1.1"))
        cluster.controller.heal()
        env.rollback("r2")
        calls = cluster.emulator.since(mark)

    # the record's name depends on the environment: the Role names the one for `staging`
    assert_role_grants_exactly("airagent", calls, "the driver")


def test_rbac_jobs_role_grants_exactly_what_the_kaniko_builder_and_the_validator_call(tmp_path):
    """A build that succeeds and one that fails, each followed to its end, and validator Jobs that pass, cannot
    pull their image and fail in git-sync (reading its log), under Role airagent-jobs."""
    from tests.test_validate_job import Scripted, run_validator

    with kube.emulated(delay=0.05, progress_deadline=0.8) as cluster:
        config = kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host)
        target = KubernetesTarget(namespace=cluster.namespace, kubeconfig=config)
        pipeline = PipelineSettings(
            name="main",
            repo="https://git.example/monorepo.git",
            environments=[EnvironmentSettings(name="staging", target=target)],
        )
        mark = len(cluster.emulator.calls)
        images.kaniko(
            ImageSettings(repository="registry.example/airflow", builder="kaniko"),
            target,
            pipeline,
            "a" * 40,
            "registry.example/airflow:0123456789abcdef",
            "0123456789abcdef",
        )
        with pytest.raises(ApplicationError, match="building the image failed"):
            images.kaniko(
                ImageSettings(
                    repository="registry.example/airflow", builder="kaniko", kaniko_image="registry.invalid/kaniko:1"
                ),
                target,
                pipeline,
                "b" * 40,
                "registry.example/airflow:fedcba9876543210",
                "fedcba9876543210",
            )
        cluster.controller.kubelet = Scripted({"git-sync": (0, ""), "validate": (0, 'airagent-report: {"files": []}')})
        run_validator(cluster, files=())
        # ErrImagePull, or ImagePullBackOff once the kubelet waits to try again (a busy host)
        with pytest.raises(ApplicationError, match="ErrImagePull|ImagePullBackOff"):
            run_validator(cluster, image="registry.invalid/airflow:0123456789abcdef")
        cluster.controller.kubelet = Scripted({"git-sync": (1, "no such repository")})
        with pytest.raises(ApplicationError, match="git-sync could not fetch"):
            run_validator(cluster, files=("b.py",))
        calls = cluster.emulator.since(mark)

    assert_role_grants_exactly("airagent-jobs", calls, "the kaniko builder and the validator")


def assert_role_grants_exactly(role_name: str, calls, caller: str) -> None:
    """Every call is allowed by infra/rbac.yaml's Role `role_name`, and every grant of it is used by one."""
    docs = [d for d in yaml.safe_load_all((INFRA / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == role_name)
    grants = {
        (verb, resource, name)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [None]
    }
    used = set()
    for c in calls:
        named, anywhere = (c.verb, c.resource, c.name), (c.verb, c.resource, None)
        # create carries no name to RBAC; everything else is checked against resourceNames when the Role has them
        grant = anywhere if anywhere in grants or c.verb == "create" else named
        assert grant in grants, f"{caller} calls {c.verb} {c.resource}/{c.name} but Role {role_name} does not grant it"
        used.add(grant)
    assert grants - used == set(), f"Role {role_name} grants more than {caller} uses: {sorted(grants - used, key=str)}"


def test_missing_api_credentials_name_the_kubernetes_settings(tmp_path, monkeypatch):
    from activities.targets.kube_airflow import KubernetesAirflow

    monkeypatch.delenv("AIRAGENT_AIRFLOW_PASSWORD", raising=False)
    config = kube.kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    target = KubernetesTarget(namespace="airflow", kubeconfig=config, api_url="http://airflow-api-server:8080")
    with pytest.raises(FileNotFoundError) as err:
        KubernetesAirflow(EnvironmentSettings(name="staging", target=target)).api()
    message = str(err.value)
    assert "AIRAGENT_AIRFLOW_PASSWORD" in message and "credentials_file" in message and "staging" in message
    assert "env up" not in message
