"""infra/: every manifest is valid Kubernetes (offline schemas), namespaced, and fits the worker it runs."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from airagent.config import KubernetesTarget
from worker.main import GRACEFUL_SHUTDOWN

INFRA = Path(__file__).resolve().parent.parent / "infra"
MANIFESTS = ["rbac.yaml", "worker.yaml"]
K8S_VERSION = "1.30.0"  # oldest version still maintained upstream when this was written


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / name).read_text()) if d]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_validate_against_the_kubernetes_schema(name):
    for doc in documents(name):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_everything_stays_in_one_namespace_with_no_cluster_rights():
    docs = [d for name in MANIFESTS for d in documents(name)]
    assert {d["metadata"]["namespace"] for d in docs} == {"airflow"}
    assert not {d["kind"] for d in docs} & {"ClusterRole", "ClusterRoleBinding", "Namespace"}
    for rule in (r for d in docs if d["kind"] == "Role" for r in d["rules"]):
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate"}, rule


def test_the_worker_runs_as_the_bound_service_account():
    docs = [d for name in MANIFESTS for d in documents(name)]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "Role"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == roles  # the rolls' Role and the Jobs' Role
    for binding in bindings:
        assert {"kind": "ServiceAccount", "name": account, "namespace": "airflow"} in binding["subjects"]
    worker = next(d for d in docs if d["kind"] == "Deployment")
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == account


def test_worker_grace_period_outlasts_its_graceful_shutdown():
    pod = next(d for d in documents("worker.yaml") if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= GRACEFUL_SHUTDOWN.total_seconds() + 30
    rolling = next(d for d in documents("worker.yaml") if d["kind"] == "Deployment")["spec"]["strategy"]
    assert rolling["rollingUpdate"]["maxUnavailable"] == 0


def test_prometheus_scrapes_each_workers_metrics_endpoint():
    template = next(d for d in documents("worker.yaml") if d["kind"] == "Deployment")["spec"]["template"]
    container = template["spec"]["containers"][0]
    port = next(e["value"] for e in container["env"] if e["name"] == "AIRAGENT_METRICS_PORT")
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == port
    assert {"name": "metrics", "containerPort": int(port), "protocol": "TCP"} in container["ports"]


def test_airflow_values_roll_without_downtime():
    values = yaml.safe_load((INFRA / "airflow-values.yaml").read_text())
    for component in ("scheduler", "apiServer", "dagProcessor", "triggerer"):
        rolling = values[component]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1, component
    assert values["workers"]["replicas"] >= 2
    assert values["workers"]["updateStrategy"]["type"] == "RollingUpdate"
    drain = KubernetesTarget.model_fields["worker_drain"].default
    assert values["workers"]["terminationGracePeriodSeconds"] >= drain.total_seconds()
