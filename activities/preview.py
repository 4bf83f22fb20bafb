"""A preview's own side effects: its environment's place, its first start, its branch, its teardown.

Updates after the first start go through the stages trains use (`build`, `validate`,
`diff`, `roll`): a preview is an environment like any other, made for one branch. Its
folder is on the host of the worker that made it, and every activity after that runs
there (the target's `host`).

    AIRAGENT_HOME/previews/<pipeline>/<branch slug>/   the environment (targets/local*.py)
                                            .../port   its first port, claimed while the folder exists

A pipeline whose first environment is `kubernetes` gets a namespace instead, named from the
pipeline and branch (`namespace()`), holding a copy of the first environment's chart objects
(targets/kube_preview.py); any worker runs its activities, and deleting the namespace ends it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import keep_alive
from activities.release import present
from activities.targets.base import EnvironmentDown, NotLive, RolloutFailed
from activities.targets.local_airflow import LocalAirflow
from activities.validation import reports
from airagent.config import ConfigError, EnvironmentSettings, KubernetesTarget, LocalTarget, home
from airagent.connection import host_name
from airagent.models import BranchCheck, BranchState, PreviewPlace, PreviewRef, PreviewStart, RolloutMode
from airagent.models.preview import namespace, slug
from airagent.repo import RepoError, commit_exists, open_repository, resolve

PORTS = 5  # an environment's port and the four after it (LocalTarget.ports)
# A preview is thrown away, not drained: its scheduler gets this long to let running tasks finish.
DRAIN = timedelta(seconds=10)
# A loaded host starts Airflow slowly; a preview waits for it longer than an environment's default.
LIVE = timedelta(minutes=4)
LAST_PORT = 65535
PORTS_FREED = 30.0  # seconds a teardown waits for the kernel to let go of the ports
NAMESPACE_GONE = 300.0  # seconds a teardown waits for the cluster to delete a preview's namespace


def previews() -> Path:
    return home() / "previews"


@activity.defn(name="preview_environment")
def preview_environment(input: PreviewPlace) -> EnvironmentSettings:
    """The preview's environment: its folder on this host, and five ports no other preview holds. Asked again (a
    retry, a new run of the workflow) it answers the same. On kubernetes: its namespace, the first environment's
    target moved there, with a DAG ref of its own and no API login (a roll is confirmed by its pods)."""
    first = input.pipeline.environments[0].target
    if isinstance(first, KubernetesTarget):
        name = namespace(input.pipeline.previews.kubernetes.namespace_prefix, input.pipeline.name, input.branch)
        target = first.model_copy(
            update={
                "namespace": name,
                "dag_ref": f"airagent/previews/{name}",
                "api_url": None,
                "credentials_file": None,
                "credentials_env": None,
            }
        )
        return EnvironmentSettings(name="preview", target=target)
    path = previews() / input.pipeline.name / slug(input.branch)
    with _ports_locked():
        port_file = path / "port"
        if port_file.exists():
            port = int(port_file.read_text())
        else:
            port = _free(input.pipeline.previews.first_port, _claimed())
            path.mkdir(parents=True, exist_ok=True)
            port_file.write_text(str(port))
    return EnvironmentSettings(
        name="preview",
        target=LocalTarget(path=path, host=host_name(), port=port, drain_timeout=DRAIN, live_timeout=LIVE),
    )


@activity.defn(name="start_preview")
def start_preview(input: PreviewStart) -> str:
    """Put the release in the preview's folder, start Airflow on it, and wait until it serves the release's DAGs:
    one start, where a roll onto an empty environment would start it twice."""
    settings = input.environment
    if isinstance(settings.target, KubernetesTarget):
        return _start_namespace(input)
    assert isinstance(settings.target, LocalTarget)
    env = LocalAirflow(settings.name, settings.target, settings.probes)
    release = present(input.release, input.pipeline)
    try:
        with keep_alive("start preview"):
            swapped = datetime.now(UTC)
            record, _ = env.files.roll(release)
            assert record.live is not None  # the release, just rolled
            started = env.up()
            dags = reports.dag_ids(reports.recall(input.report, release, input.pipeline)) if input.report else {}
            served = env.confirm_dags(record.live, dags, None, swapped)
    except (NotLive, EnvironmentDown) as err:
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
    return f"{started}; {served}"


def _start_namespace(input: PreviewStart) -> str:
    """Make the preview's namespace from the first environment's, then roll the release there as a train would."""
    from kubernetes.client.exceptions import ApiException  # the kubernetes client loads only when used

    from activities.targets.kube_airflow import KubernetesAirflow
    from activities.targets.kube_client import connect
    from activities.targets.kube_preview import PreviewNamespace, PreviewValues

    settings, pipeline = input.environment, input.pipeline
    assert isinstance(settings.target, KubernetesTarget) and input.source is not None
    assert isinstance(input.source.target, KubernetesTarget)
    release = present(input.release, pipeline)
    values_file = pipeline.previews.kubernetes.values
    try:
        values = PreviewValues.read(Path(release.bundle) / values_file if values_file else None, str(values_file))
        with keep_alive("start preview"):
            made = PreviewNamespace(connect(settings.target), input.source.target, settings.target.namespace).create(
                pipeline.name, pipeline.branch, values, settings.target.dag_ref, _service_account()
            )
            dags = reports.dag_ids(reports.recall(input.report, release, pipeline)) if input.report else {}
            mode = RolloutMode.rebuild if release.image else RolloutMode.restart
            rolled = KubernetesAirflow(settings, pipeline).roll(release, mode, dags)
    except ConfigError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    except (RolloutFailed, LookupError) as err:
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
    except ApiException as err:
        if err.status not in (401, 403, 422):
            raise
        raise ApplicationError(
            f"the cluster refused the preview's namespace {settings.target.namespace} ({err.status} {err.reason}): "
            "the worker needs the rights of infra/previews.yaml, which a cluster admin applies",
            type="Forbidden",
            non_retryable=True,
        ) from None
    return f"namespace {settings.target.namespace}: made {len(made)} objects; {rolled.detail}"


def _service_account() -> tuple[str, str] | None:
    """The worker's own ServiceAccount, which infra/worker.yaml passes down; None outside a cluster."""
    name, home_namespace = os.environ.get("AIRAGENT_SERVICE_ACCOUNT"), os.environ.get("AIRAGENT_POD_NAMESPACE")
    return (home_namespace, name) if name and home_namespace else None


@activity.defn(name="check_branch")
def check_branch(input: BranchCheck) -> BranchState:
    """Whether the branch still exists and whether its head is in the pipeline's branch (merged). The poll that
    came just before fetched."""
    try:
        repo = open_repository(input.pipeline, fetch=False)
        main = resolve(repo, input.pipeline)
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
    if not commit_exists(repo, f"refs/heads/{input.branch}"):
        return BranchState(exists=False, merged=False)
    head = input.head or resolve(repo, input.pipeline.model_copy(update={"branch": input.branch}))
    # GitPython types the revs as Commit; git takes any rev, a sha too
    return BranchState(exists=True, merged=repo.is_ancestor(head, main))  # type: ignore[arg-type]


@activity.defn(name="teardown_preview")
def teardown_preview(settings: EnvironmentSettings) -> str:
    """Stop every component, free the ports and remove the folder (on kubernetes: delete the namespace, and so
    everything in it); what is already gone is skipped."""
    if isinstance(settings.target, KubernetesTarget):
        from activities.targets.kube_client import connect
        from activities.targets.kube_preview import PreviewNamespace

        with keep_alive("teardown preview"):
            return PreviewNamespace(connect(settings.target), settings.target, settings.target.namespace).delete(
                NAMESPACE_GONE
            )
    assert isinstance(settings.target, LocalTarget)
    target = settings.target
    said = "nothing ran"
    with keep_alive("teardown preview"):
        if (target.path / "run").exists():
            said = LocalAirflow(settings.name, target, settings.probes).down()
        shutil.rmtree(target.path, ignore_errors=True)
        busy = _wait_freed(target.ports)
    if busy:
        raise ApplicationError(f"ports {busy} still in use after the preview's components stopped")
    return f"{said}; removed {target.path}"


@activity.defn(name="drop_preview_dag_ref")
def drop_preview_dag_ref(input: PreviewRef) -> str:
    """Delete a kubernetes preview's DAG ref, here and where GitDagBundle cloned it from: its namespace is gone,
    and a branch per preview would pile up in the repository."""
    from activities.targets.kube_airflow import KubernetesAirflow

    assert isinstance(input.environment.target, KubernetesTarget)
    ref = input.environment.target.dag_ref
    with keep_alive("drop preview DAG ref"):
        dropped = KubernetesAirflow(input.environment, input.pipeline).drop_dag_ref()
    return f"deleted the DAG ref {ref}" if dropped else f"the DAG ref {ref} was already gone"


def _claimed() -> set[int]:
    """The ports of every preview folder on this host, whichever pipeline it is of."""
    claimed: set[int] = set()
    for port_file in previews().glob("*/*/port"):
        try:
            first = int(port_file.read_text())
        except (OSError, ValueError):  # a folder being removed
            continue
        claimed.update(range(first, first + PORTS))
    return claimed


def _free(first: int, claimed: set[int]) -> int:
    """The first of PORTS consecutive ports from `first` up that no preview claims and nothing listens on."""
    for port in range(first, LAST_PORT - PORTS, PORTS):
        ports = range(port, port + PORTS)
        if not claimed & set(ports) and all(_bindable(p) for p in ports):
            return port
    raise ApplicationError(f"no {PORTS} consecutive free ports from {first} up; take a preview down or move first_port")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def _ports_locked() -> Iterator[None]:
    """One preview at a time picks its ports, so two starting at once never take the same."""
    previews().mkdir(parents=True, exist_ok=True)
    with open(previews() / ".ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _wait_freed(ports: range) -> list[int]:
    """The ports still listened on once PORTS_FREED has passed (none, once the components are gone)."""
    deadline = time.monotonic() + PORTS_FREED
    while True:
        busy = [p for p in ports if _listened(p)]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.5)


def _listened(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
