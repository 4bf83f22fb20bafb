"""An Airflow namespace as the official chart lays it out, on the emulator or a real cluster.

`emulated()` starts the emulator and the test controller and installs the chart's
workloads (release `airflow`); `real(kubeconfig)` creates a throwaway namespace on the
cluster a kubeconfig points at (kind, say) and installs the same workloads there, with
images that really run. Faults and request counts exist only on the emulator.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config

from tests.kube.controller import Controller
from tests.kube.emulator import Emulator

NAMESPACE = "airflow"
AIRFLOW_IMAGE = "apache/airflow:3.1.0"
GIT_SYNC_IMAGE = "registry.k8s.io/git-sync/git-sync:v4.4.0"
# On a real cluster the containers must run: a small image that sleeps stands in for Airflow.
REAL_IMAGE = "busybox:1.36"


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str
    image: str
    emulator: Emulator | None = None
    controller: Controller | None = None


def kubeconfig(path: Path, server: str) -> Path:
    """What a person would point airagent at: a kubeconfig naming the cluster (here, the emulator)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "airagent", "user": {}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "airagent"}}],
            }
        )
    )
    return path


def workloads(image: str) -> list[tuple[str, dict]]:
    """The chart's scheduler, api-server, dag-processor, triggerer Deployments and worker StatefulSet."""

    def template(component: str, grace: int) -> dict:
        command = ["sh", "-c", "sleep 3600"] if image == REAL_IMAGE else ["bash", "-c", f"exec airflow {component}"]
        return {
            "metadata": {
                "labels": {"tier": "airflow", "component": component, "release": "airflow"},
                "annotations": {"checksum/airflow-config": "0f1e2d"},
            },
            "spec": {
                "terminationGracePeriodSeconds": grace,
                "containers": [
                    {
                        "name": component,
                        "image": image,
                        "command": command,
                        "env": [{"name": "AIRFLOW__CORE__EXECUTOR", "value": "CeleryExecutor"}],
                    },
                    {
                        "name": "git-sync",
                        "image": image if image == REAL_IMAGE else GIT_SYNC_IMAGE,
                        "command": ["sh", "-c", "sleep 3600"],
                    },
                ],
            },
        }

    def selector(component):
        return {"matchLabels": {"tier": "airflow", "component": component, "release": "airflow"}}

    out = []
    for component in ("scheduler", "api-server", "dag-processor", "triggerer"):
        out.append(
            (
                "deployments",
                {
                    "metadata": {"name": f"airflow-{component}", "labels": {"release": "airflow"}},
                    "spec": {
                        "replicas": 1,
                        "selector": selector(component),
                        "progressDeadlineSeconds": 600,
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                        "template": template(component, 60),
                    },
                },
            )
        )
    out.append(
        (
            "statefulsets",
            {
                "metadata": {"name": "airflow-worker", "labels": {"release": "airflow"}},
                "spec": {
                    "replicas": 2,
                    "selector": selector("worker"),
                    "serviceName": "airflow-worker",
                    "updateStrategy": {"type": "RollingUpdate"},
                    "template": template("worker", 600),
                },
            },
        )
    )
    return out


CONFIG = {
    "metadata": {"name": "airflow-config"},
    "data": {"airflow.cfg": "[core]\nexecutor = CeleryExecutor\nparallelism = 32\n"},
}
# The chart's Service in front of the api-server, which a preview's URL names.
API_SERVICE = {
    "metadata": {"name": "airflow-api-server", "labels": {"release": "airflow", "component": "api-server"}},
    "spec": {
        "type": "ClusterIP",
        "clusterIP": "10.96.0.10",
        "selector": {"tier": "airflow", "component": "api-server", "release": "airflow"},
        "ports": [{"name": "api-server", "port": 8080, "targetPort": 8080}],
    },
}


@contextmanager
def emulated(delay: float = 0.1, progress_deadline: float = 2.0):
    with Emulator() as emulator, Controller(emulator.store, delay, progress_deadline) as controller:
        emulator.store.create("namespaces", {"metadata": {"name": NAMESPACE}})
        for resource, obj in [*workloads(AIRFLOW_IMAGE), ("configmaps", CONFIG), ("services", API_SERVICE)]:
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": NAMESPACE}}
            emulator.store.create(resource, obj)
        _settle(emulator)
        conf = client.Configuration(host=emulator.host)
        with client.ApiClient(conf) as api:
            yield Cluster(api, NAMESPACE, AIRFLOW_IMAGE, emulator, controller)


def _settle(emulator: Emulator, timeout: float = 10) -> None:
    """Wait until the controller has every workload up, so a test starts from a steady state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        objs = emulator.store.list("deployments")[0] + emulator.store.list("statefulsets")[0]
        if all(o.get("status", {}).get("readyReplicas") == o["spec"]["replicas"] for o in objs):
            return
        time.sleep(0.02)
    raise TimeoutError("the emulated workloads did not come up")


@contextmanager
def real(kubeconfig: str):
    api = config.new_client_from_config(config_file=kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = f"airagent-test-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        for resource, obj in workloads(REAL_IMAGE):
            create = (
                apps.create_namespaced_deployment if resource == "deployments" else apps.create_namespaced_stateful_set
            )
            create(namespace, obj)
        core.create_namespaced_config_map(namespace, CONFIG)
        yield Cluster(api, namespace, REAL_IMAGE)
    finally:
        core.delete_namespace(namespace)
        api.close()
