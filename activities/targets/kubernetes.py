"""The `kubernetes` target: an environment that is a namespace running the official Airflow chart.

The cluster is the truth about what runs. A ConfigMap `airagent-<env>` records the live
release, the one before it, a roll in progress, and snapshots: for each release that
was live when a roll started, the pod templates of every workload, the chart's
ConfigMap data and the commit the DAG ref pointed at, exactly as read from the API.
Rollback writes those back whole, so the templates are byte-for-byte what they were.
Pods made by airagent carry the template annotation `airagent.io/release`.

How much moves depends on the rollout mode:

- `dags-only`: no pod template is touched. Airflow 3's GitDagBundle tracks a ref per
  environment (say `airagent/<env>`); airagent moves that ref to the train's commit
  (`DagRef`) and asks `confirm` whether Airflow serves it.
- `restart`: the chart's ConfigMap gets the release's config and every template gets
  the release annotation, so every pod restarts on the same image.
- `rebuild`: as restart, plus the release's image on every container that ran the old
  Airflow image (sidecars such as git-sync keep theirs).

Every method first reads the record: rolling to the live release does nothing, and a
roll cut short (a worker crash) resumes without taking a second snapshot or sending a
patch that is already in place. All writes are JSON patches guarded by a `test` of the
resourceVersion they were computed from, so a concurrent change fails loudly instead
of being overwritten.

Against a real cluster the same tests run when AIRAGENT_KUBECONFIG names a kubeconfig
(a kind cluster, say): see infra/README.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from activities.targets import kube_rollout
from activities.targets.base import Swap, check_live
from activities.targets.kube_git import DagRef
from activities.targets.kube_record import KEEP_SNAPSHOTS, RECORD_KEY, Record, Rollout, RollReport, Snapshot
from activities.targets.kube_rollout import RELEASE_ANNOTATION, Workload
from airagent.config import KubernetesTarget
from airagent.models import Baseline, Expected, RolloutMode

# Asked, once the release should be live, whether Airflow serves it: (release id, commit) -> raises if not.
Confirm = Callable[[str | None, str | None], None]
# Asked once per roll, before anything changes: how the environment is, for soak to compare against.
Observe = Callable[[], Baseline]


class KubernetesEnvironment:
    """One environment in a namespace. Knows nothing of Temporal: a test drives it directly."""

    def __init__(
        self,
        name: str,
        target: KubernetesTarget,
        api: client.ApiClient,
        ref: DagRef,
        confirm: Confirm | None = None,
        observe: Observe | None = None,
    ):
        self.name, self.target, self.api, self.ref, self.confirm = name, target, api, ref, confirm
        self.observe = observe
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.record_name = f"airagent-{name}"

    # --- the record ----------------------------------------------------------------------

    def record(self) -> Record:
        return self._read_record()[0]

    def _read_record(self) -> tuple[Record, str | None]:
        """The record and the resourceVersion to guard the next write with (None: no record yet)."""
        try:
            cm = self._raw(self.core.read_namespaced_config_map, self.record_name, self.target.namespace)
        except ApiException as err:
            if err.status == 404:
                return Record(), None
            raise
        return Record.model_validate_json((cm.get("data") or {}).get(RECORD_KEY, "{}")), cm["metadata"][
            "resourceVersion"
        ]

    def _write_record(self, record: Record, rv: str | None) -> str:
        data = {RECORD_KEY: record.model_dump_json()}
        if rv is None:
            body = {
                "metadata": {"name": self.record_name, "labels": {"app.kubernetes.io/managed-by": "airagent"}},
                "data": data,
            }
            cm = self._raw(self.core.create_namespaced_config_map, self.target.namespace, body)
        else:
            cm = self._raw(
                self.core.patch_namespaced_config_map,
                self.record_name,
                self.target.namespace,
                [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                    {"op": "replace", "path": "/data", "value": data},
                ],
            )
        return cm["metadata"]["resourceVersion"]

    # --- roll and rollback ---------------------------------------------------------------

    def roll(self, rollout: Rollout, replaces: Expected | None = None) -> RollReport:
        """Make `rollout.release` live and wait until it runs; raises RolloutFailed when it does not.

        Refuses (UnexpectedLive), before any write, when the record names another live release than `replaces`.
        """
        if rollout.mode == RolloutMode.rebuild and not rollout.image:
            raise ValueError(f"release {rollout.release}: a rebuild needs `image`, the new runtime's image reference")
        record, rv = self._read_record()
        if record.live == rollout.release and record.pending is None:
            return RollReport(live=record.live, previous=record.previous, changed=False)
        check_live(self.name, replaces, record.live, record.live_commit, rollout.release)
        workloads = self.read_workloads()
        config_cm = self.read_config()
        if record.pending is None:  # a fresh roll: remember how things are before touching them
            record.snapshots = [*record.snapshots, self._snapshot(record.live, workloads, config_cm)][-KEEP_SNAPSHOTS:]
            record.baseline = self.observe() if self.observe else None
        record.pending = rollout.release
        rv = self._write_record(record, rv)
        patched: list[str] = []
        notes: list[str] = []
        if rollout.mode != RolloutMode.dags_only:
            if rollout.config is not None and config_cm is not None:
                patched += self._patch_config(config_cm, rollout.config)
            before = record.snapshot(record.live)  # a resumed roll must not mistake its own new image for the old
            old_image = _main_image(
                before.templates if before else {key: obj["spec"]["template"] for key, obj in workloads.items()}
            )
            desired = {key: _desired(obj["spec"]["template"], rollout, old_image) for key, obj in workloads.items()}
            patched += self._patch_templates(workloads, desired)
            notes = self._wait(workloads)
        self.ref.move(rollout.commit)
        if self.confirm is not None:
            self.confirm(rollout.release, rollout.commit)
        record.previous, record.live, record.live_commit = record.live, rollout.release, rollout.commit
        record.pending = None
        record.history = [
            *record.history,
            Swap(at=datetime.now(UTC), action="roll", release=rollout.release, replaced=record.previous),
        ][-100:]
        self._write_record(record, rv)
        return RollReport(live=record.live, previous=record.previous, changed=True, patched=patched, rollout=notes)

    def rollback(self, to: str | None) -> RollReport:
        """Put back the templates, config and DAG commit recorded while `to` was live (None: before airagent)."""
        record, rv = self._read_record()
        if record.live == to and record.pending is None:
            return RollReport(live=record.live, previous=record.previous, changed=False)
        target = record.snapshot(to)
        if target is None:
            known = [s.release for s in record.snapshots]
            raise LookupError(
                f"environment {self.name} has no snapshot of release {to!r} to roll back to; "
                f"it has snapshots of {known}"
            )
        workloads = self.read_workloads()
        config_cm = self.read_config()
        if record.pending is None and record.snapshot(record.live) is None:
            record.snapshots = [*record.snapshots, self._snapshot(record.live, workloads, config_cm)][-KEEP_SNAPSHOTS:]
        record.pending = to or ""
        rv = self._write_record(record, rv)
        patched: list[str] = []
        if target.config is not None and config_cm is not None:
            patched += self._patch_config(config_cm, target.config)
        missing = set(workloads) - set(target.templates)
        if missing:
            raise LookupError(
                f"the snapshot of {to!r} has no template for {sorted(missing)}; "
                "they were added to the target after it was taken"
            )
        patched += self._patch_templates(workloads, {key: target.templates[key] for key in workloads})
        self._unstick(workloads)
        notes = self._wait(workloads)
        if target.commit:
            self.ref.move(target.commit)
        if self.confirm is not None:
            self.confirm(to, target.commit)
        replaced = record.live
        record.previous, record.live, record.live_commit, record.pending = replaced, to, target.commit, None
        record.history = [
            *record.history,
            Swap(at=datetime.now(UTC), action="rollback", release=to, replaced=replaced),
        ][-100:]
        self._write_record(record, rv)
        return RollReport(live=to, previous=replaced, changed=True, patched=patched, rollout=notes)

    # --- pre-flight ----------------------------------------------------------------------

    def preflight(self) -> list[str]:
        """What would make a roll drop work or capacity, as sentences naming the workload and the fix."""
        warnings = []
        drain = self.target.worker_drain.total_seconds()
        for key, obj in self.read_workloads().items():
            kind, name = key.split("/")
            spec = obj["spec"]
            replicas = spec.get("replicas", 1)
            grace = spec["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            if name in self.target.drained and grace < drain:
                warnings.append(
                    f"{name}: terminationGracePeriodSeconds is {grace}s, shorter than the {drain:.0f}s "
                    f"worker drain; running tasks are killed on a roll. Raise it to at least {drain:.0f}"
                )
            if kind == "deployments":
                strategy = spec.get("strategy") or {}
                if strategy.get("type") == "Recreate":
                    warnings.append(
                        f"{name}: strategy Recreate stops every pod before starting new ones; "
                        "use RollingUpdate with maxUnavailable: 0"
                    )
                    continue
                unavailable = _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"), replicas)
                if unavailable > 0:
                    warnings.append(
                        f"{name}: maxUnavailable lets {unavailable} of {replicas} running pods go before "
                        "their replacements are ready; set maxUnavailable: 0 and maxSurge: 1"
                    )
            else:
                strategy = spec.get("updateStrategy") or {}
                if strategy.get("type") == "OnDelete":
                    warnings.append(f"{name}: updateStrategy OnDelete never restarts pods on a roll; use RollingUpdate")
                elif replicas == 1:
                    warnings.append(
                        f"{name}: a StatefulSet replaces its pods one at a time, stopping each first; "
                        "with 1 replica it has none running during a roll. Run at least 2"
                    )
        return warnings

    # --- helpers -------------------------------------------------------------------------

    def _raw(self, method, *args, **kwargs) -> dict:
        """Call the client without its models, so templates round-trip exactly as the server holds them."""
        return json.loads(method(*args, _preload_content=False, **kwargs).data)

    def read_workloads(self) -> dict[str, dict]:
        """Every rolled workload as the server holds it, by `<plural>/<name>`: what rolls, probes and records read."""
        readers = {
            "deployments": self.apps.read_namespaced_deployment,
            "statefulsets": self.apps.read_namespaced_stateful_set,
        }
        out = {}
        for kind, name in self.target.workloads():
            try:
                out[f"{kind}/{name}"] = self._raw(readers[kind], name, self.target.namespace)
            except ApiException as err:
                if err.status == 404:
                    raise LookupError(
                        f"{kind[:-1]} {name} not found in namespace {self.target.namespace}; fix the "
                        f"target's `release`, `deployments` or `statefulsets`"
                    ) from None
                raise
        return out

    def read_config(self) -> dict | None:
        """The chart's Airflow config ConfigMap as the server holds it; None when the target has none."""
        name = self.target.chart_config
        if not name:
            return None
        try:
            return self._raw(self.core.read_namespaced_config_map, name, self.target.namespace)
        except ApiException as err:
            if err.status == 404:
                raise LookupError(
                    f"configmap {name} not found in namespace {self.target.namespace}; set the "
                    "target's `config_map` to the chart's, or null"
                ) from None
            raise

    def _snapshot(self, release: str | None, workloads: dict[str, dict], config_cm: dict | None) -> Snapshot:
        return Snapshot(
            release=release,
            commit=self.ref.read(),
            templates={key: obj["spec"]["template"] for key, obj in workloads.items()},
            config=(config_cm.get("data") or {}) if config_cm is not None else None,
            taken=datetime.now(UTC),
        )

    def _patch_config(self, cm: dict, data: dict[str, str]) -> list[str]:
        if (cm.get("data") or {}) == data:
            return []
        self._raw(
            self.core.patch_namespaced_config_map,
            cm["metadata"]["name"],
            self.target.namespace,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": cm["metadata"]["resourceVersion"]},
                {"op": "add", "path": "/data", "value": data},
            ],
        )
        return [f"configmaps/{cm['metadata']['name']}"]

    def _patch_templates(self, workloads: dict[str, dict], desired: dict[str, dict]) -> list[str]:
        """Replace each template that differs; updates `workloads` in place with what the server returned."""
        patchers = {
            "deployments": self.apps.patch_namespaced_deployment,
            "statefulsets": self.apps.patch_namespaced_stateful_set,
        }
        patched = []
        for key, obj in workloads.items():
            if obj["spec"]["template"] == desired[key]:
                continue
            kind, name = key.split("/")
            workloads[key] = self._raw(
                patchers[kind],
                name,
                self.target.namespace,
                [
                    # generation, not resourceVersion: status moves all the time, the spec only when someone changes it
                    {"op": "test", "path": "/metadata/generation", "value": obj["metadata"]["generation"]},
                    {"op": "replace", "path": "/spec/template", "value": desired[key]},
                ],
            )
            patched.append(key)
        return patched

    def _unstick(self, workloads: dict[str, dict]) -> None:
        """Delete StatefulSet pods of a bad template that never became ready.

        A StatefulSet replaces a pod only once all the others are ready, so a pod of the
        broken template would block its own rollback forever (Kubernetes' "forced rollback").
        """
        for key, obj in workloads.items():
            if not key.startswith("statefulsets/"):
                continue
            restored = Workload("statefulsets", obj)
            selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"].get("matchLabels", {}).items())
            pods = self._raw(self.core.list_namespaced_pod, self.target.namespace, label_selector=selector)
            for pod in pods["items"]:
                if not restored.owns(pod) and not kube_rollout.pod_ready(pod):
                    self.core.delete_namespaced_pod(
                        pod["metadata"]["name"], self.target.namespace, _preload_content=False
                    )

    def _wait(self, workloads: dict[str, dict]) -> list[str]:
        return kube_rollout.wait(
            self.api,
            self.target.namespace,
            [Workload(key.split("/")[0], obj) for key, obj in workloads.items()],
            self.target.rollout_deadline.total_seconds(),
        )


def _desired(template: dict, rollout: Rollout, old_image: str | None) -> dict:
    """The template `rollout` asks for; applying it twice gives the same template."""
    out = copy.deepcopy(template)
    out.setdefault("metadata", {}).setdefault("annotations", {})[RELEASE_ANNOTATION] = rollout.release
    if rollout.mode == RolloutMode.rebuild and old_image:
        assert rollout.image is not None  # roll() refuses a rebuild without one
        for container in out["spec"].get("initContainers", []) + out["spec"]["containers"]:
            if _repository(container["image"]) in (_repository(old_image), _repository(rollout.image)):
                container["image"] = rollout.image
    return out


def _main_image(templates: dict[str, dict]) -> str | None:
    """The Airflow image: the first container of the first workload, where the chart puts Airflow."""
    for template in templates.values():
        return template["spec"]["containers"][0]["image"]
    return None


def _repository(image: str) -> str:
    """`registry/repo` of an image reference, without tag or digest."""
    name = image.split("@")[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def _scaled(value: int | str, replicas: int) -> int:
    """maxUnavailable as a pod count; percentages round down, as the Deployment controller does."""
    if isinstance(value, str) and value.endswith("%"):
        return int(replicas * int(value[:-1]) / 100)
    return int(value)
