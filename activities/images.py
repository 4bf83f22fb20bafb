"""Runtime images for kubernetes environments: `<repository>:<runtime hash>`, so an unchanged runtime is never rebuilt.

For a pipeline with `image:` settings the runtime hash also covers the Dockerfile, so
changing it makes a new tag. Two builders:

- `external`: CI built and pushed the image and passed it with deploy/notify; the build
  stage only checks that its tag is the runtime hash of the commit.
- `kaniko`: a Job in the cluster clones the commit and pushes the image. A tag built
  once is recorded under AIRAGENT_HOME and never built again; the Job is named by the
  tag, so a retried activity finds the Job it started instead of starting another.
  The Dockerfile's RUN steps are repository code: the pod gets no API token, only the
  capabilities kaniko needs, and resource limits.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities.heartbeat import keep_alive
from activities.targets.kube_client import connect
from airagent.config import ImageSettings, KubernetesTarget, PipelineSettings, home
from airagent.repo import cluster_url

# kaniko unpacks the base image into its own root filesystem, giving each file the owner, mode and file
# capabilities the image records, and runs RUN steps as the Dockerfile's USER: so it runs as root on a
# writable root, but keeps only the capabilities that takes (kaniko issues #778, #1171, #2201; FSETID keeps
# setgid bits) and can never gain more.
KANIKO_SECURITY = {
    "runAsUser": 0,
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": False,
    "capabilities": {
        "drop": ["ALL"],
        "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "SETFCAP"],
    },
}
# The base image's layers are unpacked into the container's writable layer: ephemeral-storage.
KANIKO_RESOURCES = {
    "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "4Gi"},
    "limits": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "20Gi"},
}


def image_hash(runtime_digest: str, dockerfile: bytes) -> str:
    """The runtime hash of an image: the venv's inputs plus the Dockerfile that builds it."""
    return hashlib.sha256(f"{runtime_digest}\n".encode() + dockerfile).hexdigest()[:16]


def image_for(
    pipeline: PipelineSettings, digest: str, commit: str, given: str | None, ref: str | None = None
) -> str | None:
    """The image of this runtime for the pipeline's kubernetes environments; None when there are none.
    `ref` is where a clone finds the commit (default: the pipeline's branch)."""
    settings = pipeline.image
    targets = [e.target for e in pipeline.environments if isinstance(e.target, KubernetesTarget)]
    if settings is None or not targets:
        return None
    wanted = f"{settings.repository}:{digest}"
    if settings.builder == "external":
        if given is None:
            return None  # a roll that needs it says so, naming the tag
        if given != wanted:
            raise ApplicationError(
                f"image {given!r} is not this commit's runtime: expected {wanted!r} (the tag is the runtime hash of "
                f"commit {commit[:12]}); build and push that tag in CI, then deploy with it",
                type="BadInput",
                non_retryable=True,
            )
        return given
    if not _built(wanted):
        with keep_alive(f"kaniko {wanted}"):
            kaniko(settings, targets[0], pipeline, commit, wanted, digest, ref)
        _record(wanted)
    return wanted


def kaniko_job(settings: ImageSettings, context: str, ref: str, commit: str, image: str, digest: str) -> dict:
    """A Job that builds `image` from `commit` with kaniko and pushes it; arguments, never a shell line."""
    container: dict[str, Any] = {
        "name": "kaniko",
        "image": settings.kaniko_image,
        "args": [
            f"--context={context}#{ref}#{commit}",
            f"--dockerfile={settings.dockerfile}",
            f"--destination={image}",
        ],
        "securityContext": KANIKO_SECURITY,
        "resources": KANIKO_RESOURCES,
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # kaniko pushes with the push Secret, never as a Kubernetes user: the namespace's default
        # account (named so that infra/policies.yaml can pin it), without a token.
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if settings.git_secret:  # a private repository: kaniko's git context reads these, as git-sync reads its own
        container["env"] = [
            {
                "name": f"GIT_{key}",
                "valueFrom": {"secretKeyRef": {"name": settings.git_secret, "key": f"GITSYNC_{key}"}},
            }
            for key in ("USERNAME", "PASSWORD")
        ]
    if settings.push_secret:
        container["volumeMounts"] = [{"name": "push", "mountPath": "/kaniko/.docker"}]
        spec["volumes"] = [
            {
                "name": "push",
                "secret": {
                    "secretName": settings.push_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"airagent-build-{digest[:16]}", "labels": {"app.kubernetes.io/managed-by": "airagent"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(settings.build_deadline.total_seconds()),
            "ttlSecondsAfterFinished": 86400,
            "template": {"spec": spec},
        },
    }


def kaniko(
    settings: ImageSettings,
    target: KubernetesTarget,
    pipeline: PipelineSettings,
    commit: str,
    image: str,
    digest: str,
    ref: str | None = None,
) -> None:
    context = cluster_url(pipeline, settings)
    if context is None:
        raise ApplicationError(
            f"pipeline {pipeline.name!r}: kaniko clones the commit from a URL, and `repo` is a "
            "local path; set image.context to the repository's git URL",
            type="BadInput",
            non_retryable=True,
        )
    context = "git://" + context.split("://", 1)[-1]  # kaniko's spelling of a git context, cloned over https
    namespace = settings.namespace or target.namespace
    job = kaniko_job(settings, context, ref or f"refs/heads/{pipeline.branch}", commit, image, digest)
    with connect(target) as api:
        batch = client.BatchV1Api(api)
        try:
            # The client's types want a V1Job body; it sends a dict as it is.
            batch.create_namespaced_job(namespace, job, _preload_content=False)  # type: ignore[arg-type]
        except ApiException as err:
            if err.status != 409:  # 409: this tag's Job exists already, started by an earlier attempt
                raise
        _wait(batch, namespace, job["metadata"]["name"], settings.build_deadline.total_seconds() + 60)


def _wait(batch: client.BatchV1Api, namespace: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stream = watch.Watch().stream(
            batch.list_namespaced_job,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=min(60, max(1, int(deadline - time.monotonic()))),
        )
        for event in stream:
            status = event["raw_object"].get("status") or {}
            if status.get("succeeded"):
                return
            failed = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Failed" and c.get("status") == "True"),
                None,
            )
            if failed:
                raise ApplicationError(
                    f"building the image failed ({failed.get('reason')}: {failed.get('message')}); "
                    f"see `kubectl logs -n {namespace} job/{name}`",
                    type="ImageBuildFailed",
                    non_retryable=True,
                )
    raise TimeoutError(f"image build job {name} still running after {timeout:.0f}s")


def _marker(image: str):
    return home() / "images" / f"{hashlib.sha256(image.encode()).hexdigest()[:24]}.json"


def _built(image: str) -> bool:
    return _marker(image).exists()


def _record(image: str) -> None:
    path = _marker(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"image": image}))
