"""A test controller: moves Deployment and StatefulSet status the way kube-controller-manager does.

It writes straight into the emulator's store (as the real controllers write through
their own connection), so its writes are not counted as the driver's requests, but
every one of them is a watch event the driver sees.

- A Deployment whose template changed gets a new ReplicaSet (named by the template's
  hash) with all its pods at once; old pods go when the new ones are all ready
  (maxUnavailable 0). Past `progress_deadline` without finishing it reports
  Progressing=False, reason ProgressDeadlineExceeded.
- A StatefulSet replaces pods one at a time from the highest ordinal, each only once
  the others are ready, and moves currentRevision to updateRevision at the end.
- A Job succeeds `delay` seconds after it is made (its image on a `.invalid` registry: it fails),
  unless `kubelet` (a `Kubelet`) can run its pod: then the Job gets a pod, which the
  kubelet stand-in runs on this host, and the Job ends as that pod does.
- A pod becomes ready `delay` seconds after it is made, unless a fault says otherwise:
  `crash(name)` (CrashLoopBackOff), an image on a `.invalid` registry (ErrImagePull,
  then ImagePullBackOff), `stick(name)` (ContainerCreating forever).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import git

from tests.kube.emulator import ApiError, Store


def template_hash(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class Controller:
    def __init__(self, store: Store, delay: float = 0.1, progress_deadline: float = 2.0):
        self.store = store
        self.delay = delay
        self.progress_deadline = progress_deadline
        self.crashing: set[str] = set()
        self.stuck: set[str] = set()
        self._born: dict[tuple[str, str], tuple[float, str]] = {}  # pod -> (made at, fate)
        self._progress: dict[tuple[str, str], tuple[int, float]] = {}  # deployment -> (generation, since)
        self.kubelet: Kubelet | None = None
        self._running: list[threading.Thread] = []  # Job pods the kubelet stand-in runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-controller", daemon=True)

    def crash(self, workload: str) -> None:
        """Pods made for `workload` from now on crash-loop."""
        self.crashing.add(workload)

    def stick(self, workload: str) -> None:
        """Pods made for `workload` from now on never start."""
        self.stuck.add(workload)

    def heal(self) -> None:
        self.crashing.clear()
        self.stuck.clear()

    def __enter__(self) -> Controller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for thread in self._running:
            thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.store.changed:
                # Woken by every change; between changes, often enough for the timed moves (readiness after
                # `delay`, the progress deadline), not 33 times a second, each pass copying every object.
                self.store.changed.wait(timeout=min(self.delay, 0.1))
            try:
                for d in self.store.list("deployments")[0]:
                    self._deployment(d)
                for s in self.store.list("statefulsets")[0]:
                    self._statefulset(s)
                for j in self.store.list("jobs")[0]:
                    self._job(j)
                self._pods()
            except ApiError:
                continue  # raced with a client write; the next pass sees the new version

    # --- deployments ---------------------------------------------------------------------

    def _deployment(self, d: dict) -> None:
        meta, spec = d["metadata"], d["spec"]
        ns, name, replicas = meta["namespace"], meta["name"], spec.get("replicas", 1)
        h = template_hash(spec["template"])
        sets = [rs for rs in self.store.list("replicasets", ns)[0] if _owned(rs, d)]
        new = next((rs for rs in sets if rs["metadata"]["labels"].get("pod-template-hash") == h), None)
        if new is None:
            template = copy.deepcopy(spec["template"])
            template["metadata"].setdefault("labels", {})["pod-template-hash"] = h
            new = self.store.create(
                "replicasets",
                {
                    "metadata": {
                        "name": f"{name}-{h}",
                        "namespace": ns,
                        "labels": template["metadata"]["labels"],
                        "ownerReferences": [_owner(d)],
                    },
                    "spec": {"replicas": replicas, "selector": spec["selector"], "template": template},
                },
            )
            sets.append(new)
        pods = self.store.list("pods", ns)[0]
        owned = {rs["metadata"]["name"]: [p for p in pods if _owned(p, rs)] for rs in sets}
        fresh = owned[new["metadata"]["name"]]
        for _ in range(replicas - len(fresh)):
            fresh.append(
                self._make_pod(
                    ns, f"{new['metadata']['name']}-{uuid.uuid4().hex[:5]}", new, new["spec"]["template"], name, {}
                )
            )
        ready = [p for p in fresh if _ready(p)]
        if len(ready) >= replicas:  # the new set is up: retire the old ones
            for rs in sets:
                if rs is not new:
                    for p in owned[rs["metadata"]["name"]]:
                        self._delete_pod(p)
                    if rs["spec"]["replicas"]:
                        self.store.replace("replicasets", {**rs, "spec": {**rs["spec"], "replicas": 0}})
        alive = [p for ps in owned.values() for p in ps if self.store.get("pods", ns, p["metadata"]["name"])]
        generation = meta.get("generation", 1)
        since = self._progress.setdefault((ns, name), (generation, time.monotonic()))
        if since[0] != generation:
            since = self._progress[(ns, name)] = (generation, time.monotonic())
        complete = len(ready) >= replicas and len(alive) == replicas
        if complete:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.',
            }
        elif time.monotonic() - since[1] > self.progress_deadline:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{new["metadata"]["name"]}" has timed out progressing.',
            }
        else:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": f'ReplicaSet "{new["metadata"]["name"]}" is progressing.',
            }
        available = sum(_ready(p) for p in alive)
        status = {
            "observedGeneration": generation,
            "replicas": len(alive),
            "updatedReplicas": len(fresh),
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas - available),
            "conditions": [{"type": "Available", "status": "True" if available >= replicas else "False"}, progressing],
        }
        self._set_status("deployments", d, status)

    # --- statefulsets --------------------------------------------------------------------

    def _statefulset(self, s: dict) -> None:
        meta, spec = s["metadata"], s["spec"]
        ns, name, replicas = meta["namespace"], meta["name"], spec.get("replicas", 1)
        revision = f"{name}-{template_hash(spec['template'])}"
        pods = {p["metadata"]["name"]: p for p in self.store.list("pods", ns)[0] if _owned(p, s)}
        for i in range(replicas):
            if f"{name}-{i}" not in pods:
                pods[f"{name}-{i}"] = self._make_pod(
                    ns,
                    f"{name}-{i}",
                    s,
                    spec["template"],
                    name,
                    {"controller-revision-hash": revision, "statefulset.kubernetes.io/pod-name": f"{name}-{i}"},
                )
        ordered = [pods[f"{name}-{i}"] for i in range(replicas)]
        stale = [p for p in ordered if p["metadata"]["labels"]["controller-revision-hash"] != revision]
        if stale and all(_ready(p) for p in ordered):
            self._delete_pod(stale[-1])  # highest ordinal first; recreated with the new revision next pass
            ordered.remove(stale.pop())
        ready = sum(_ready(p) for p in ordered)
        updated = len(ordered) - len(stale)
        current = s.get("status", {}).get("currentRevision")
        if (updated == replicas and ready == replicas) or current is None:
            current = revision if not stale else current
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(ordered),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": updated,
            "currentReplicas": sum(p["metadata"]["labels"]["controller-revision-hash"] == current for p in ordered),
            "updateRevision": revision,
        }
        if current:
            status["currentRevision"] = current
        self._set_status("statefulsets", s, status)

    # --- jobs ----------------------------------------------------------------------------

    def _job(self, j: dict) -> None:
        if self.kubelet is not None and self.kubelet.runs(j["spec"]["template"]["spec"]):
            return self._job_with_pod(j)
        key = (j["metadata"]["namespace"], f"job/{j['metadata']['name']}")
        born = self._born.setdefault(key, (time.monotonic(), "ok"))[0]
        if j.get("status") or time.monotonic() - born < self.delay:
            return
        images = [c["image"] for c in j["spec"]["template"]["spec"]["containers"]]
        if any(".invalid/" in i for i in images):
            status = {
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ],
            }
        else:
            status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        self._set_status("jobs", j, status)

    def _job_with_pod(self, j: dict) -> None:
        """As the Job controller does: one pod (backoffLimit 0); the Job ends when the pod does."""
        ns, name = j["metadata"]["namespace"], j["metadata"]["name"]
        if (ns, f"job/{name}") in self._born:
            return
        self._born[(ns, f"job/{name}")] = (time.monotonic(), "pod")
        pod = self._make_pod(ns, f"{name}-{uuid.uuid4().hex[:5]}", j, j["spec"]["template"], name, {"job-name": name})
        key = (ns, pod["metadata"]["name"])
        if self._born[key][1] == "pull":
            return  # ErrImagePull, then ImagePullBackOff, until the Job's deadline: as in a cluster
        self._born[key] = (self._born[key][0], "kubelet")
        thread = threading.Thread(target=self._run_pod, args=(j, pod), name=f"kubelet {key[1]}", daemon=True)
        self._running.append(thread)
        thread.start()

    def _run_pod(self, job: dict, pod: dict) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        with TemporaryDirectory(prefix="kubelet-") as scratch:
            ran = self.kubelet.run(self.store, ns, pod["spec"], Path(scratch))
        for container, (_, output) in ran.items():
            self.store.logs[(ns, name, container)] = output
        ok = all(code == 0 for code, _ in ran.values())

        def state(container: dict) -> dict:
            if container["name"] not in ran:
                return {"waiting": {"reason": "PodInitializing"}}
            code = ran[container["name"]][0]
            return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}

        def statuses(kind: str) -> list[dict]:
            return [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": state(c),
                }
                for c in pod["spec"].get(kind, [])
            ]

        current = self.store.get("pods", ns, name)
        if current is not None:
            self.store.replace(
                "pods",
                {
                    **current,
                    "status": {
                        "phase": "Succeeded" if ok else "Failed",
                        "conditions": [{"type": "Ready", "status": "False"}],
                        "initContainerStatuses": statuses("initContainers"),
                        "containerStatuses": statuses("containers"),
                    },
                },
            )
        done = (
            {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
            if ok
            else {
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ],
            }
        )
        current = self.store.get("jobs", job["metadata"]["namespace"], job["metadata"]["name"])
        if current is not None:
            self.store.replace("jobs", {**current, "status": done})

    # --- pods ----------------------------------------------------------------------------

    def _make_pod(self, ns, name, owner, template, workload, labels) -> dict:
        spec = copy.deepcopy(template["spec"])
        images = [c["image"] for c in spec["containers"]]
        fate = (
            "crash"
            if workload in self.crashing
            else "pull"
            if any(".invalid/" in i for i in images)
            else "stuck"
            if workload in self.stuck
            else "ok"
        )
        pod = self.store.create(
            "pods",
            {
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {**template["metadata"].get("labels", {}), **labels},
                    "annotations": dict(template["metadata"].get("annotations", {})),
                    "ownerReferences": [_owner(owner)],
                },
                "spec": spec,
                "status": _pod_status(spec, "ContainerCreating", 0),
            },
        )
        self._born[(ns, name)] = (time.monotonic(), fate)
        return pod

    def _delete_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        self._born.pop((meta["namespace"], meta["name"]), None)
        try:
            self.store.delete("pods", meta["namespace"], meta["name"])
        except ApiError:
            pass  # already gone

    def _pods(self) -> None:
        now = time.monotonic()
        for pod in self.store.list("pods")[0]:
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            born, fate = self._born.get(key, (now, "ok"))
            if now - born < self.delay or fate in ("stuck", "kubelet"):
                continue
            waiting = {
                "ok": None,
                "crash": "CrashLoopBackOff",
                "pull": "ErrImagePull" if now - born < 3 * self.delay else "ImagePullBackOff",
            }[fate]
            status = _pod_status(pod["spec"], waiting, 3 if fate == "crash" else 0)
            if pod.get("status") != status:
                self.store.replace("pods", {**pod, "status": status})

    def _set_status(self, resource: str, obj: dict, status: dict) -> None:
        if obj.get("status") != status:
            self.store.replace(resource, {**obj, "status": status}, obj["metadata"]["resourceVersion"])


def _pod_status(spec: dict, waiting: str | None, restarts: int) -> dict:
    state = (
        {"waiting": {"reason": waiting, "message": f"{waiting} (emulated)"}}
        if waiting
        else {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
    )
    ready = waiting is None
    return {
        "phase": "Running" if ready or waiting == "CrashLoopBackOff" else "Pending",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": ready,
                "restartCount": restarts,
                "state": state,
            }
            for c in spec["containers"]
        ],
    }


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _owner(obj: dict) -> dict:
    return {
        "apiVersion": obj.get("apiVersion", "apps/v1"),
        "kind": obj.get("kind"),
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
    }


def _owned(child: dict, parent: dict) -> bool:
    return any(o["uid"] == parent["metadata"]["uid"] for o in child["metadata"].get("ownerReferences", []))


class Kubelet:
    """Stands in for the kubelet, which would pull a pod's images and run its containers; none can run here.

    It runs a pod whose main container's command is `python ...` (the validator Job) on this
    host, container by container: `python` is the given runtime's interpreter, each volume a
    folder (a ConfigMap's keys as files), each mount path in commands, env and workingDir that
    folder; git-sync is an export of the commit from the local repository its `--repo` URL
    maps to. Output goes to the pod's log.
    """

    def __init__(self, runtime: Path, repos: dict[str, Path]):
        self.runtime, self.repos = runtime, repos

    @staticmethod
    def runs(spec: dict) -> bool:
        return (spec["containers"][0].get("command") or [None])[0] == "python"

    def run(self, store: Store, namespace: str, spec: dict, scratch: Path) -> dict[str, tuple[int, str]]:
        """Container name -> (exit code, output), for the containers that ran; the first failure ends the pod."""
        volumes = {}
        for volume in spec.get("volumes", []):
            folder = volumes[volume["name"]] = scratch / volume["name"]
            folder.mkdir()
            if "configMap" in volume:
                # As the kubelet: the pod waits for its ConfigMap (a worker may die between making the Job
                # and it, and the retry on another makes it); the Job's deadline ends the wait.
                name, deadline = volume["configMap"]["name"], spec.get("activeDeadlineSeconds") or 600
                try:
                    data = self._config_map(store, namespace, name, wait=deadline)
                except LookupError as err:
                    return {spec["containers"][0]["name"]: (1, f"{err}\n")}
                for key, content in data.items():
                    (folder / key).write_bytes(content)
        ran = {}
        for container in spec.get("initContainers", []) + spec["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
            local = _mapper(mounts)
            if "git-sync" in container["image"]:
                ran[container["name"]] = self._git_sync(container["args"], local)
            else:
                ran[container["name"]] = self._python(container, local, scratch, spec.get("activeDeadlineSeconds"))
            if ran[container["name"]][0]:
                break
        return ran

    @staticmethod
    def _config_map(store: Store, namespace: str, name: str, wait: float = 30) -> dict[str, bytes]:
        """As the kubelet does for a ConfigMap volume: wait until it exists; its keys' contents, text or binary."""
        deadline = time.monotonic() + wait
        while (found := store.get("configmaps", namespace, name)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if found is None:
            raise LookupError(f"configmap {name} never appeared")
        text = {key: value.encode() for key, value in (found.get("data") or {}).items()}
        return text | {key: base64.b64decode(value) for key, value in (found.get("binaryData") or {}).items()}

    def _git_sync(self, args: list[str], local) -> tuple[int, str]:
        flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        root = Path(local(flags["root"]))
        checkout = root / ".worktrees" / flags["ref"]
        buffer = io.BytesIO()
        try:
            git.Repo(self.repos[flags["repo"]]).archive(buffer, treeish=flags["ref"], format="tar")
        except (KeyError, git.GitCommandError) as err:
            return 1, f"git-sync (stand-in): cannot fetch {flags['ref']} from {flags['repo']}: {err}\n"
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            tar.extractall(checkout, filter="data")
        (root / flags["link"]).symlink_to(checkout)
        return 0, f"git-sync (stand-in): {flags['ref']} from {flags['repo']}\n"

    def _python(self, container: dict, local, scratch: Path, deadline: int | None) -> tuple[int, str]:
        argv = [local(a) for a in container.get("command", []) + container.get("args", [])]
        argv[0] = str(self.runtime / "bin" / "python")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(scratch),
            "AIRFLOW_HOME": str(scratch / "airflow"),
            **{e["name"]: local(e["value"]) for e in container.get("env", [])},
        }
        try:
            done = subprocess.run(
                argv,
                env=env,
                cwd=local(container.get("workingDir") or str(scratch)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=deadline,
            )
        except subprocess.TimeoutExpired as err:
            return 137, (err.output or b"").decode(errors="replace")
        return done.returncode, done.stdout.decode(errors="replace")


def _mapper(mounts: dict[str, Path]):
    """Path in the container -> path on this host, by the longest mount path it lies under."""

    def local(value: str) -> str:
        for mount in sorted(mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(mounts[mount]) + value[len(mount.rstrip("/")) :]
        return value

    return local
