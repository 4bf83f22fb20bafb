"""The validate stage for kubernetes environments: the DAG parser runs as a Job in the release image.

The runtime venv on the worker is built from the same inputs as the image, but it is not
the image: a Dockerfile adds system libraries, providers and settings the venv lacks. So a
release that will run an image is parsed in that image, and passes only if it parses there.

- The DAG files: the image is keyed by the runtime hash, not the commit, so it holds no
  commit's DAGs. A git-sync init container (the chart's own way to get DAGs) clones the
  commit into an emptyDir, from the URL kaniko builds from (`image.context`, default the
  pipeline's repo), with the credentials Secret `image.git_secret` if set.
- The parser (one zipapp, see `parser_app`: standard library and Airflow only) and its
  settings (the files to parse, placeholders) come from a ConfigMap owned by the Job, so
  both go when the Job's TTL removes it.
- The report comes back in the pod's log, one marked line; the deployer applies the
  pipeline's rules to it exactly as for a local parse (`parse.parse_changed`), and files
  parsed once in an image are cached under that image.
- DAG code runs in the pod, so the pod gets no API token and no git credentials (only
  git-sync sees the Secret, and its /tmp is its own), runs as a fixed non-root user with
  no capabilities and a read-only root, writes only to emptyDirs, and has resource limits.
  The pods carry the label `LABEL`, which infra/policies.yaml's NetworkPolicy selects.

The Job's name is a hash of everything in its spec (commit, image, parser, settings), so a
retried activity finds the Job it started and reads its result instead of starting another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from activities.heartbeat import keep_alive
from activities.targets.kube_client import connect
from activities.targets.kube_rollout import FATAL_WAITING, WATCH_SECONDS
from activities.validation import parser_app
from activities.validation.parse import parse_changed
from activities.validation.parser.report import REPORT_MARKER
from airagent.config import ImageSettings, KubernetesTarget, PipelineSettings
from airagent.models import Release, ValidationReport
from airagent.repo import cluster_url

LABEL = "airagent.io/validate"
CONTAINER = "validate"
PARSER_DIR = "/airagent"
GIT_ROOT = "/git"
CHECKOUT = f"{GIT_ROOT}/release"  # git-sync's --link: a stable path to the checked-out commit
# Parallel parses in the pod: os.cpu_count() there is the node's, not the pod's share.
WORKERS = 2
# Past the pod's own deadline: the pod then ends Failed with reason DeadlineExceeded, which says more
# than a Job that deleted its pod.
JOB_GRACE = 60
TTL = 3600
LOG_TAIL = 3000
# The official Airflow image's user, which owns its venv; any non-root uid can read the rest of it.
RUN_AS = 50000
HOME = "/home/airagent"
SERVICE_ACCOUNT = "default"
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# Two parse workers forked from one warmed-up Airflow; the pod's emptyDirs (checkout, /tmp, HOME) count
# against ephemeral-storage.
VALIDATOR_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "4Gi"},
}
GIT_SYNC_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
    "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "4Gi"},
}


class ValidatorJob(BaseModel):
    """One run of the parser in a release image, and what its failures must name."""

    name: str
    namespace: str
    commit: str
    image: str
    url: str
    deadline: float = Field(description="seconds the pod may run, image pull included")

    def failed(self, message: str) -> ApplicationError:
        # Same spec, same name: a retry would find this very Job failed again.
        return ApplicationError(f"validator job {self.name}: {message}", type="ValidatorJobFailed", non_retryable=True)


def parse_in_image(release: Release, pipeline: PipelineSettings) -> ValidationReport:
    """The validate stage's parse, in `release.image`; the same report a local parse gives."""
    assert release.image and pipeline.image is not None
    image_settings = pipeline.image  # for `parse`: the narrowing above does not reach into it
    target = next(e.target for e in pipeline.environments if isinstance(e.target, KubernetesTarget))
    url = clone_url(pipeline)
    namespace = pipeline.image.namespace or target.namespace

    def parse(files: list[str]) -> list[dict]:
        job, config_map, ref = manifests(
            image_settings,
            namespace,
            release,
            url,
            {"files": files, "placeholders": pipeline.validation.placeholders.model_dump(mode="json")},
        )
        with keep_alive(f"validator job {ref.name}"), connect(target) as api:
            return run(api, ref, job, config_map, files)

    return parse_changed(
        {"image": release.image},
        Path(release.bundle),
        release.dag_folder,
        release.plugins_folder,
        pipeline,
        None,
        parse,
    )


def clone_url(pipeline: PipelineSettings) -> str:
    url = cluster_url(pipeline)
    if url is None:
        raise ApplicationError(
            f"pipeline {pipeline.name!r}: the validator Job clones the commit from a git URL, "
            "and `repo` is a local path; set image.context to the repository's git URL",
            type="BadInput",
            non_retryable=True,
        )
    return url


def manifests(
    settings: ImageSettings, namespace: str, release: Release, url: str, parse_settings: dict
) -> tuple[dict, dict, ValidatorJob]:
    """The Job and its ConfigMap (owner set once the Job exists); argument lists, never a shell line."""
    assert release.image is not None  # the validator runs in the release's image
    settings_json = json.dumps(parse_settings, sort_keys=True)
    deadline = int(settings.validate_deadline.total_seconds())
    key = json.dumps(
        [
            release.commit,
            release.image,
            parser_app.digest(),
            settings_json,
            url,
            release.dag_folder,
            release.plugins_folder,
            settings.git_sync_image,
            settings.git_secret,
            deadline,
        ]
    )
    name = f"airagent-validate-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    labels = {"app.kubernetes.io/managed-by": "airagent", LABEL: name}
    git_sync = {
        "name": "git-sync",
        "image": settings.git_sync_image,
        "args": [
            f"--repo={url}",
            f"--ref={release.commit}",
            f"--root={GIT_ROOT}",
            f"--link={Path(CHECKOUT).name}",
            "--one-time",
            "--depth=1",
        ],
        # git-sync keeps its git config and credentials under HOME: a /tmp the validator does not mount.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "checkout", "mountPath": GIT_ROOT}, {"name": "git-tmp", "mountPath": "/tmp"}],
        "securityContext": CONTAINER_SECURITY,
        "resources": GIT_SYNC_RESOURCES,
    }
    if settings.git_secret:
        git_sync["envFrom"] = [{"secretRef": {"name": settings.git_secret}}]
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": f"{CHECKOUT}/{release.dag_folder}",
        "AIRFLOW__CORE__PLUGINS_FOLDER": f"{CHECKOUT}/{release.plugins_folder}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": HOME,
    }  # the checkout is mounted read-only; HOME and /tmp are the only writable places
    validator = {
        "name": CONTAINER,
        "image": release.image,
        "workingDir": CHECKOUT,
        "command": [
            "python",
            f"{PARSER_DIR}/parser.pyz",
            f"{CHECKOUT}/{release.dag_folder}",
            "-",
            str(WORKERS),
            "--settings",
            f"{PARSER_DIR}/settings.json",
        ],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumeMounts": [
            {"name": "checkout", "mountPath": GIT_ROOT, "readOnly": True},
            {"name": "parser", "mountPath": PARSER_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "home", "mountPath": HOME},
        ],
        "securityContext": CONTAINER_SECURITY,
        "resources": VALIDATOR_RESOURCES,
    }
    pod = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        # DAG code runs here: it gets no API token. The namespace's default account, named so that
        # infra/policies.yaml can pin it, lends only its imagePullSecrets.
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "initContainers": [git_sync],
        "containers": [validator],
        "volumes": [
            {"name": "checkout", "emptyDir": {}},
            {"name": "parser", "configMap": {"name": name}},
            {"name": "git-tmp", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "home", "emptyDir": {}},
        ],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline + JOB_GRACE,
            "ttlSecondsAfterFinished": TTL,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"settings.json": settings_json},
        "binaryData": {"parser.pyz": base64.b64encode(parser_app.archive()).decode()},
    }
    ref = ValidatorJob(
        name=name, namespace=namespace, commit=release.commit, image=release.image, url=url, deadline=deadline
    )
    return job, config_map, ref


def run(api: client.ApiClient, ref: ValidatorJob, job: dict, config_map: dict, files: list[str]) -> list[dict]:
    """Start the Job (or find it), follow its pod to the end, and return the parser's file reports."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    owner = None
    try:
        # The client's types want a V1Job body and promise a V1Job: it sends a dict as it is and, with
        # _preload_content=False, returns the HTTP response.
        response = batch.create_namespaced_job(ref.namespace, job, _preload_content=False)  # type: ignore[arg-type]
        created = json.loads(response.data)  # type: ignore[attr-defined]
        owner = created["metadata"]["uid"]
    except ApiException as err:
        if err.status != 409:  # 409: an earlier attempt started it; its pod names the Job's uid
            raise
    if owner:
        _create_config_map(core, ref.namespace, config_map, owner)
    pod = _finished_pod(core, ref, config_map if owner is None else None)
    log = _log(core, ref.namespace, pod["metadata"]["name"], CONTAINER)
    return _report(ref, pod["metadata"]["name"], log, files)


def _create_config_map(core: client.CoreV1Api, namespace: str, config_map: dict, job_uid: str) -> None:
    """Owned by the Job, so the garbage collector removes it with the Job."""
    owned = {
        **config_map,
        "metadata": {
            **config_map["metadata"],
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": config_map["metadata"]["name"], "uid": job_uid}
            ],
        },
    }
    try:
        # The client's types want a V1ConfigMap body; it sends a dict as it is.
        core.create_namespaced_config_map(namespace, owned, _preload_content=False)  # type: ignore[arg-type]
    except ApiException as err:
        if err.status != 409:  # made by the attempt that made the Job
            raise


def _finished_pod(core: client.CoreV1Api, ref: ValidatorJob, missing_config: dict | None) -> dict:
    """The Job's pod once it succeeded; a failure that cannot heal raises at once, naming the pod and reason."""
    patience = ref.deadline + 2 * JOB_GRACE  # past the Job's own deadline, which ends it for sure
    deadline = time.monotonic() + patience
    while (left := deadline - time.monotonic()) > 0:
        for event in watch.Watch().stream(
            core.list_namespaced_pod,
            ref.namespace,
            label_selector=f"{LABEL}={ref.name}",
            timeout_seconds=max(1, int(min(WATCH_SECONDS, left))),
        ):
            pod, name = event["raw_object"], event["raw_object"]["metadata"]["name"]
            if missing_config is not None:
                uid = next(
                    (o["uid"] for o in pod["metadata"].get("ownerReferences") or [] if o.get("kind") == "Job"), None
                )
                if uid:
                    _create_config_map(core, ref.namespace, missing_config, uid)
                    missing_config = None
            if event["type"] == "DELETED":
                raise ref.failed(
                    f"pod {name} was deleted before it finished (past the Job's deadline, or by "
                    f"someone); see `kubectl describe job -n {ref.namespace} {ref.name}`"
                )
            status = pod.get("status") or {}
            if status.get("phase") == "Succeeded":
                return pod
            if status.get("phase") == "Failed":
                raise ref.failed(_why_failed(core, ref, pod))
            if stuck := _stuck(name, status):
                raise ref.failed(stuck)
    raise TimeoutError(
        f"validator job {ref.name}: no pod finished within {patience:.0f}s; "
        f"see `kubectl describe job -n {ref.namespace} {ref.name}`"
    )


def _statuses(status: dict) -> list[dict]:
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def _stuck(pod: str, status: dict) -> str | None:
    """A container that will not start by waiting longer (the image cannot be pulled, a Secret is missing)."""
    for c in _statuses(status):
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            fix = (
                "check image.git_sync_image, and that image.git_secret names a Secret in this namespace"
                if c["name"] == "git-sync"
                else f"check that image {c.get('image')} was pushed and that this namespace may pull it"
            )
            return f"pod {pod} container {c['name']}: {waiting['reason']}: {waiting.get('message', '')}; {fix}"
    return None


def _why_failed(core: client.CoreV1Api, ref: ValidatorJob, pod: dict) -> str:
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    if status.get("reason") == "DeadlineExceeded":
        return (
            f"pod {name} ran past its deadline ({ref.deadline:.0f}s, image pull included) and was "
            "stopped (DeadlineExceeded); raise image.validate_deadline, or look for a DAG file that is slow "
            "to import"
        )
    for c in _statuses(status):
        ended = (c.get("state") or {}).get("terminated") or {}
        if not ended or ended.get("exitCode", 0) == 0:
            continue
        reason, code = ended.get("reason") or "Error", ended.get("exitCode")
        if reason == "OOMKilled" and c["name"] == CONTAINER:
            return (
                f"pod {name} container {c['name']} was OOMKilled parsing the DAG files (its memory limit is "
                f"{VALIDATOR_RESOURCES['limits']['memory']}); look for a DAG file that loads large data at import"
            )
        tail = _log(core, ref.namespace, name, c["name"])[-LOG_TAIL:]
        if c["name"] == "git-sync":
            return (
                f"pod {name}: git-sync could not fetch commit {ref.commit[:12]} from {_without_password(ref.url)} "
                f"(exit {code}); check image.context and image.git_secret. Its log:\n{tail}"
            )
        return f"pod {name} container {c['name']} ended {reason} (exit {code}). Its log:\n{tail}"
    return f"pod {name} failed ({status.get('reason') or 'no reason given'}: {status.get('message', '')})"


def _log(core: client.CoreV1Api, namespace: str, pod: str, container: str) -> str:
    try:
        # The client's types promise str; with _preload_content=False it returns the HTTP response.
        response = core.read_namespaced_pod_log(pod, namespace, container=container, _preload_content=False)
        return response.data.decode(errors="replace")  # type: ignore[attr-defined]
    except ApiException as err:
        return f"(log unavailable: {err.status} {err.reason})"


def _report(ref: ValidatorJob, pod: str, log: str, files: list[str]) -> list[dict]:
    """The parser's file reports from the log's marked line, covering exactly the files asked for."""
    line = next((line for line in reversed(log.splitlines()) if line.startswith(REPORT_MARKER)), None)
    try:
        results = json.loads(line[len(REPORT_MARKER) :])["files"] if line else None
        paths = sorted(r["path"] for r in results) if isinstance(results, list) else None
    except (ValueError, KeyError, TypeError):
        paths = None
    if paths != sorted(files):
        raise ref.failed(
            f"pod {pod} finished without a report of the {len(files)} files asked for (a log line "
            f"starting {REPORT_MARKER.strip()!r}); the image's Python may lack Airflow. The end of its "
            f"log:\n{log[-LOG_TAIL:]}"
        )
    assert results is not None  # `paths` came from it
    return results


def _without_password(url: str) -> str:
    """A URL for a message: credentials someone put in it stay out of logs and history."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
