"""A preview's namespace: a copy of the chart's objects in the first environment's namespace, made small.

No Helm runs on the worker, and a chart's templates cannot be rendered without it; what
Helm made from the pipeline's values is in the cluster already, in the first environment's
namespace. A preview copies from there the workloads the target rolls, the chart's Airflow
ConfigMap and the release's Services (label `release=<release>`, as the chart sets it),
then applies the preview values: replicas per component (1 unless set), Airflow config
sections merged into `airflow.cfg`, extra env on every Airflow container, and the
GitDagBundle's `tracking_ref` moved to the preview's own DAG ref. The config options are
also kept on the ConfigMap (annotation `airagent.io/airflow-cfg`), so a roll that brings the
release's own airflow.cfg sets them again over it. Secrets are not copied:
the staging database's connection must not reach a preview (infra/README.md).

Everything made carries the preview labels, the namespace first of all, so deleting the
namespace deletes the preview, and the admission policy can tell a preview namespace from
any other.
"""

from __future__ import annotations

import configparser
import copy
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airagent.config import ConfigError, KubernetesTarget

PREVIEW_LABEL = "airagent.io/preview"
PIPELINE_LABEL = "airagent.io/pipeline"
BRANCH_ANNOTATION = "airagent.io/branch"
# On a chart ConfigMap: airflow.cfg options ({section: {key: value}}) every roll sets over the release's airflow.cfg.
CFG_OVERLAY = "airagent.io/airflow-cfg"
# The chart's values key of each component -> the suffix of its workload's name (<release>-<suffix>).
COMPONENTS = {
    "scheduler": "scheduler",
    "apiServer": "api-server",
    "dagProcessor": "dag-processor",
    "triggerer": "triggerer",
    "workers": "worker",
}
# Set by the API server; a copy carries none of it.
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences")


class Component(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(1, ge=0)


class EnvVar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    value: str


class PreviewValues(BaseModel):
    """The values file `previews.kubernetes.values` names: keys as the official chart spells them, and only these."""

    model_config = ConfigDict(extra="forbid")
    scheduler: Component = Component()
    apiServer: Component = Component()  # the chart's key
    dagProcessor: Component = Component()  # the chart's key
    triggerer: Component = Component()
    workers: Component = Component()
    config: dict[str, dict[str, str | int | float | bool]] = Field({}, description="airflow.cfg sections to merge")
    env: list[EnvVar] = Field([], description="added to every Airflow container")

    @classmethod
    def read(cls, path: Path | None, shown: str) -> PreviewValues:
        """The values in `path` (None: the defaults); a mistake names the file `shown` and the field."""
        if path is None:
            return cls()
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except FileNotFoundError:
            missing = f"{shown}: not in the branch's commit; add it or unset previews.kubernetes.values"
            raise ConfigError(missing) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{shown}: not YAML: {err}") from None
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"{shown}: {where}: {first['msg']}; a preview's values take {', '.join(cls.model_fields)} "
                "(airagent copies the chart's objects, it does not run Helm)"
            ) from None


class PreviewNamespace:
    """One preview's namespace on the cluster `api` reaches, copied from `source`'s namespace."""

    def __init__(self, api: client.ApiClient, source: KubernetesTarget, namespace: str):
        self.api, self.source, self.namespace = api, source, namespace
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)

    def create(
        self, pipeline: str, branch: str, values: PreviewValues, dag_ref: str, account: tuple[str, str] | None = None
    ) -> list[str]:
        """Make the namespace and copy the chart's objects into it; what exists already is kept (a retry).

        `account` (namespace, name): the worker's ServiceAccount, bound in the new namespace to the ClusterRole
        `airagent-preview` (infra/previews.yaml) before anything else is made there; None for a kubeconfig's user.
        """
        # A label value ends with a letter or digit, in 63 characters; a pipeline's name may end with '-' or '_'.
        labels = {
            "app.kubernetes.io/managed-by": "airagent",
            PREVIEW_LABEL: "true",
            PIPELINE_LABEL: pipeline[:63].rstrip("-_"),
        }
        made = []
        try:
            self._raw(
                self.core.create_namespace,
                {"metadata": {"name": self.namespace, "labels": labels, "annotations": {BRANCH_ANNOTATION: branch}}},
            )
            made.append(f"namespaces/{self.namespace}")
        except ApiException as err:
            if err.status != 409:
                raise
            if self._raw(self.core.read_namespace, self.namespace)["status"].get("phase") == "Terminating":
                raise RuntimeError(f"namespace {self.namespace} is still being deleted; trying again") from None
        if account is not None:
            binding = {
                "metadata": {"name": "airagent-preview", "labels": labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "airagent-preview"},
                "subjects": [{"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}],
            }
            if self._create("rolebindings", binding):
                made.append("rolebindings/airagent-preview")
        for plural, obj in self._objects(values, dag_ref):
            obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), **labels}
            if self._create(plural, obj):
                made.append(f"{plural}/{obj['metadata']['name']}")
        return made

    def delete(self, timeout: float) -> str:
        """Delete the namespace, and with it everything in it; returns once the API no longer has it."""
        try:
            self.core.delete_namespace(self.namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return f"namespace {self.namespace} was gone already"
            raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.core.read_namespace(self.namespace, _preload_content=False)
            except ApiException as err:
                if err.status == 404:
                    return f"deleted namespace {self.namespace}"
                raise
            time.sleep(0.5)
        raise TimeoutError(f"namespace {self.namespace} still terminating after {timeout:.0f}s")

    # --- the copy --------------------------------------------------------------------------

    def _objects(self, values: PreviewValues, dag_ref: str) -> list[tuple[str, dict]]:
        """The chart's objects as the preview gets them: config first, so pods find it when they start."""
        out: list[tuple[str, dict]] = []
        if self.source.chart_config:
            cm = _copy(self._raw(self.core.read_namespaced_config_map, self.source.chart_config, self.source.namespace))
            data = cm.setdefault("data", {})
            options = overlay(values.config, data.get("airflow.cfg", ""), dag_ref)
            data["airflow.cfg"] = airflow_cfg(data.get("airflow.cfg", ""), options)
            cm["metadata"].setdefault("annotations", {})[CFG_OVERLAY] = json.dumps(options, sort_keys=True)
            out.append(("configmaps", cm))
        services = self._raw(
            self.core.list_namespaced_service, self.source.namespace, label_selector=f"release={self.source.release}"
        )
        for svc in services["items"]:
            svc = _copy(svc)
            for assigned in ("clusterIP", "clusterIPs"):  # the new Service gets its own
                svc["spec"].pop(assigned, None)
            out.append(("services", svc))
        replicas = {
            f"{self.source.release}-{suffix}": getattr(values, key).replicas for key, suffix in COMPONENTS.items()
        }
        readers = {
            "deployments": self.apps.read_namespaced_deployment,
            "statefulsets": self.apps.read_namespaced_stateful_set,
        }
        for plural, name in self.source.workloads():
            obj = _copy(self._raw(readers[plural], name, self.source.namespace))
            obj["spec"]["replicas"] = replicas.get(name, 1)
            if values.env:
                for container in obj["spec"]["template"]["spec"]["containers"][:1]:  # Airflow, not its sidecars
                    container["env"] = [*container.get("env", []), *(e.model_dump() for e in values.env)]
            out.append((plural, obj))
        return out

    def _create(self, plural: str, obj: dict) -> bool:
        creators: dict[str, Callable[..., object]] = {
            "rolebindings": client.RbacAuthorizationV1Api(self.api).create_namespaced_role_binding,
            "configmaps": self.core.create_namespaced_config_map,
            "services": self.core.create_namespaced_service,
            "deployments": self.apps.create_namespaced_deployment,
            "statefulsets": self.apps.create_namespaced_stateful_set,
        }
        try:
            creators[plural](self.namespace, obj, _preload_content=False)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    def _raw(self, method, *args, **kwargs) -> dict:
        return json.loads(method(*args, _preload_content=False, **kwargs).data)


def overlay(sections: dict[str, dict], chart_cfg: str, dag_ref: str) -> dict[str, dict[str, str]]:
    """The airflow.cfg options a preview sets over any release's: its values' sections, and the chart's bundle list
    with every GitDagBundle tracking `dag_ref`."""
    out = {
        section: {key: str(v).lower() if isinstance(v, bool) else str(v) for key, v in options.items()}
        for section, options in sections.items()
    }
    cfg = _CaseKept(interpolation=None)
    cfg.read_string(chart_cfg)
    if cfg.has_option("dag_processor", "dag_bundle_config_list"):
        bundles = json.loads(cfg.get("dag_processor", "dag_bundle_config_list"))
        for bundle in bundles:
            if "tracking_ref" in (bundle.get("kwargs") or {}):
                bundle["kwargs"]["tracking_ref"] = dag_ref
        out.setdefault("dag_processor", {})["dag_bundle_config_list"] = json.dumps(bundles)
    return out


def airflow_cfg(text: str, options: dict[str, dict[str, str]]) -> str:
    """`text` with `options` set, section by section."""
    cfg = _CaseKept(interpolation=None)
    cfg.read_string(text)
    for section, values in options.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, value)
    out = io.StringIO()
    cfg.write(out)
    return out.getvalue()


class _CaseKept(configparser.ConfigParser):
    """Keys keep their case, as Airflow reads them."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _copy(obj: dict) -> dict:
    """`obj` as a new object of the same shape: no status, nothing the server set, no namespace."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    for field in (*SERVER_FIELDS, "namespace"):
        obj["metadata"].pop(field, None)
    return obj
