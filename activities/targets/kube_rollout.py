"""Waiting for Deployments and StatefulSets to finish rolling, the way `kubectl rollout status` decides.

A Deployment is rolled out when its controller has seen the new spec (observedGeneration),
every replica is updated and available and no old replica is left; a Progressing
condition with reason ProgressDeadlineExceeded is a failure. A StatefulSet is rolled out
when every replica is ready and currentRevision has caught up with updateRevision; it has
no deadline of its own, so the caller's deadline is the one that counts.

A pod of the new template stuck in CrashLoopBackOff, ImagePullBackOff, ErrImagePull or
CreateContainerConfigError will not get better by waiting, so it fails the roll at once,
named with its reason.

State arrives by watches (one per workload, by name, so RBAC can name the workloads,
plus one on the namespace's pods), each resumed from the resourceVersion it stopped at;
nothing is polled.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from activities.targets.base import RolloutFailed, RolloutTimeout

RELEASE_ANNOTATION = "airagent.io/release"
FATAL_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"}
# A watch is re-opened this often even when quiet, so a dropped connection cannot hang a roll.
WATCH_SECONDS = 60


@dataclass
class Workload:
    """One workload to wait for: `kind` is the API's plural (deployments, statefulsets)."""

    kind: str
    obj: dict

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    def progress(self) -> tuple[bool, str]:
        return (deployment_progress if self.kind == "deployments" else statefulset_progress)(self.obj)

    def owns(self, pod: dict) -> bool:
        """Whether `pod` was made from this workload's current template (not an old one on its way out)."""
        labels = pod["metadata"].get("labels") or {}
        wanted = self.obj["spec"]["selector"].get("matchLabels") or {}
        release = (self.obj["spec"]["template"]["metadata"].get("annotations") or {}).get(RELEASE_ANNOTATION)
        pod_release = (pod["metadata"].get("annotations") or {}).get(RELEASE_ANNOTATION)
        return all(labels.get(k) == v for k, v in wanted.items()) and pod_release == release


def deployment_progress(d: dict) -> tuple[bool, str]:
    name, spec, status = d["metadata"]["name"], d["spec"], d.get("status") or {}
    if d["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return False, f"{name}: waiting for the new spec to be observed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise RolloutFailed(
                f"deployment {name} exceeded its progress deadline "
                f"(progressDeadlineSeconds={spec.get('progressDeadlineSeconds', 600)})",
                workload=name,
                reason="ProgressDeadlineExceeded",
            )
    want, updated = spec.get("replicas", 1), status.get("updatedReplicas", 0)
    if updated < want:
        return False, f"{name}: {updated} of {want} new replicas updated"
    if status.get("replicas", 0) > updated:
        return False, f"{name}: {status['replicas'] - updated} old replicas pending termination"
    if status.get("availableReplicas", 0) < updated:
        return False, f"{name}: {status.get('availableReplicas', 0)} of {updated} updated replicas available"
    return True, f"{name}: rolled out"


def statefulset_progress(s: dict) -> tuple[bool, str]:
    name, spec, status = s["metadata"]["name"], s["spec"], s.get("status") or {}
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy != "RollingUpdate":
        raise RolloutFailed(
            f"statefulset {name} uses updateStrategy {strategy}: its pods never roll on their own; "
            "set updateStrategy.type: RollingUpdate",
            workload=name,
            reason=strategy,
        )
    if not status.get("observedGeneration") or s["metadata"].get("generation", 0) > status["observedGeneration"]:
        return False, f"{name}: waiting for the new spec to be observed"
    want = spec.get("replicas", 1)
    if status.get("readyReplicas", 0) < want:
        return False, f"{name}: {status.get('readyReplicas', 0)} of {want} pods ready"
    partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0
    if partition:
        if status.get("updatedReplicas", 0) < want - partition:
            return False, f"{name}: {status.get('updatedReplicas', 0)} of {want - partition} partitioned pods updated"
        return True, f"{name}: partitioned roll complete"
    if status.get("updateRevision") != status.get("currentRevision"):
        return (
            False,
            f"{name}: {status.get('updatedReplicas', 0)} of {want} pods at revision {status.get('updateRevision')}",
        )
    return True, f"{name}: rolled out"


def pod_failure(pod: dict) -> str | None:
    """The waiting reason that dooms this pod, if any."""
    status = pod.get("status") or {}
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        reason = ((c.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in FATAL_WAITING:
            return reason
    return None


def pod_ready(pod: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def wait(api: client.ApiClient, namespace: str, workloads: list[Workload], timeout: float) -> list[str]:
    """Block until every workload is rolled out; returns the last word on each. Raises RolloutFailed."""
    deadline = time.monotonic() + timeout
    pending = {w.name: w for w in workloads}
    notes = {}

    def settle(w: Workload) -> None:
        done, notes[w.name] = w.progress()
        if done:
            pending.pop(w.name, None)

    for w in workloads:
        settle(w)
    if not pending:
        return [notes[w.name] for w in workloads]
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    # The client's types promise a V1PodList; with _preload_content=False it returns the HTTP response.
    pods = json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)  # type: ignore[attr-defined]
    for pod in pods["items"]:
        _check_pod(pod, workloads)
    events: queue.Queue = queue.Queue()
    listers = {"deployments": apps.list_namespaced_deployment, "statefulsets": apps.list_namespaced_stateful_set}
    streams = [
        _Stream(
            listers[w.kind],
            namespace,
            w.obj["metadata"]["resourceVersion"],
            events,
            w.name,
            field_selector=f"metadata.name={w.name}",
        )
        for w in pending.values()
    ]
    streams.append(_Stream(core.list_namespaced_pod, namespace, pods["metadata"]["resourceVersion"], events, None))
    for s in streams:
        s.start()
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RolloutTimeout(
                    "rollout deadline passed: " + "; ".join(notes[n] for n in pending),
                    workload=", ".join(pending),
                    reason="DeadlineExceeded",
                )
            try:
                name, kind, obj = events.get(timeout=left)
            except queue.Empty:
                continue
            if kind == "ERROR":
                raise obj
            if name is None:
                if kind != "DELETED":
                    _check_pod(obj, workloads)
            elif name in pending:
                pending[name].obj = obj
                settle(pending[name])
    finally:
        for s in streams:
            s.stop()
        for s in streams:
            s.join(timeout=5)
    return [notes[w.name] for w in workloads]


def _check_pod(pod: dict, workloads: list[Workload]) -> None:
    reason = pod_failure(pod)
    if reason is None:
        return
    for w in workloads:
        if w.owns(pod):
            name = pod["metadata"]["name"]
            raise RolloutFailed(f"{w.name}: pod {name} is in {reason}", workload=w.name, pod=name, reason=reason)


class _Stream(threading.Thread):
    """One watch, resumed from where it stopped, feeding (key, event type, object) into a queue."""

    def __init__(
        self, lister, namespace: str, resource_version: str | None, out: queue.Queue, key: str | None, **selectors
    ):
        super().__init__(name=f"watch-{key or 'pods'}", daemon=True)
        self.lister, self.namespace, self.rv, self.out, self.key = lister, namespace, resource_version, out, key
        self.selectors = selectors
        self.stopped = False
        self.watch = watch.Watch()

    def stop(self) -> None:
        self.stopped = True
        self.watch.stop()

    def run(self) -> None:
        while not self.stopped:
            try:
                for event in self.watch.stream(
                    self.lister,
                    self.namespace,
                    resource_version=self.rv,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    **self.selectors,
                ):
                    obj = event["raw_object"]
                    self.rv = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self.out.put((self.key, event["type"], obj))
                    if self.stopped:
                        return
            except ApiException as err:
                if self.stopped:
                    return
                if err.status == 410:  # history compacted past our resourceVersion: a watch without one
                    self.rv = None  # starts with the current state, and needs no `list` right
                    continue
                self.out.put((self.key, "ERROR", err))
                return
            except Exception as err:  # the connection dropped: stop() does that on purpose
                if self.stopped:
                    return
                self.out.put((self.key, "ERROR", err))
                return
