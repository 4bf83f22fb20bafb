"""The Jobs airagent sends run locked down, and infra/policies.yaml holds them to it.

The Jobs checked are the ones the driver sends, read back from the API emulator. The
ValidatingAdmissionPolicy's CEL is evaluated with cel-python (`celpy`), as the API server
evaluates it: match conditions, then variables in order, then each validation, an error
counting as a denial (failurePolicy Fail). celpy evaluates the standard CEL language, with
RE2 regexes; it does not type-check the expressions against the Job's OpenAPI schema, as the
API server does when the policy is applied. The expressions guard every optional field with
has(), so they read no default either way.
"""

from __future__ import annotations

import copy
from pathlib import Path

import celpy
import kubernetes_validate
import pytest
import yaml

from activities import images
from activities.validation import job as validate_job
from airagent.config import EnvironmentSettings, ImageSettings, KubernetesTarget, PipelineSettings
from airagent.models import Release
from tests.kube import cluster as kube
from tests.test_validate_job import Scripted

INFRA = Path(__file__).resolve().parent.parent / "infra"
K8S_VERSION = "1.30.0"  # ValidatingAdmissionPolicy is GA from 1.30
WORKER = "system:serviceaccount:airflow:airagent"
REPOSITORY = "registry.example.com/data/airflow"  # infra/README.md's example, which the policy's pattern names
DIGEST = "0123456789abcdef"
IMAGE = f"{REPOSITORY}:{DIGEST}"
KANIKO_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "SETFCAP"}
LIMITS = {"cpu", "memory", "ephemeral-storage"}


def policies() -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / "policies.yaml").read_text()) if d]


def one(kind: str) -> dict:
    [doc] = [d for d in policies() if d["kind"] == kind]
    return doc


# --- the Jobs the driver sends ------------------------------------------------------------


def release() -> Release:
    return Release(
        id="r1",
        commit="c" * 40,
        runtime_hash=DIGEST,
        runtime="/nonexistent",
        bundle="/nonexistent",
        dag_folder="dags",
        plugins_folder="plugins",
        image=IMAGE,
    )


def sent_jobs(tmp_path: Path) -> dict[str, dict]:
    """The validator's Job (with the git Secret) and kaniko's (with the push Secret), as the emulator got them."""
    settings = ImageSettings(repository=REPOSITORY, builder="kaniko", git_secret="git-creds", push_secret="push")
    with kube.emulated(delay=0.05) as cluster:
        cluster.controller.kubelet = Scripted({"git-sync": (0, ""), "validate": (0, 'airagent-report: {"files": []}')})
        job, config_map, ref = validate_job.manifests(
            settings, cluster.namespace, release(), "https://git.example/monorepo.git", {"files": []}
        )
        validate_job.run(cluster.api, ref, job, config_map, [])
        target = KubernetesTarget(
            namespace=cluster.namespace, kubeconfig=kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host)
        )
        pipeline = PipelineSettings(
            name="main",
            repo="https://git.example/monorepo.git",
            environments=[EnvironmentSettings(name="staging", target=target)],
        )
        images.kaniko(settings, target, pipeline, "a" * 40, IMAGE, DIGEST)
        jobs = cluster.emulator.store.list("jobs")[0]
    by_kind = {j["metadata"]["name"].split("-")[1]: j for j in jobs}
    assert set(by_kind) == {"validate", "build"}
    for sent in by_kind.values():
        sent.pop("status", None)
    return by_kind


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> dict[str, dict]:
    return sent_jobs(tmp_path_factory.mktemp("kube"))


def pod_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


@pytest.mark.slow
def test_the_jobs_sent_are_valid_kubernetes(sent):
    for job in sent.values():
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


@pytest.mark.slow
def test_the_validator_pod_runs_as_a_non_root_user_with_nothing_to_spare(sent):
    pod = pod_of(sent["validate"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0 and pod["securityContext"]["runAsGroup"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "default"
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in containers(pod):
        context = c["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]} and not context.get("privileged")
        assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == LIMITS
        # a read-only root: every writable place is an emptyDir
        for mount in c["volumeMounts"]:
            assert mount.get("readOnly") or "emptyDir" in volumes[mount["name"]], (c["name"], mount)
    validator, git_sync = pod["containers"][0], pod["initContainers"][0]
    env = {e["name"]: e["value"] for e in validator["env"]}
    writable = {m["mountPath"] for m in validator["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", env["HOME"]}
    # only git-sync sees the git credentials, and what it keeps of them stays in a /tmp of its own
    assert git_sync["envFrom"] == [{"secretRef": {"name": "git-creds"}}] and "envFrom" not in validator
    [git_tmp] = [m["name"] for m in git_sync["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert git_tmp not in {m["name"] for m in validator["volumeMounts"]}


@pytest.mark.slow
def test_kaniko_runs_as_root_with_only_the_capabilities_it_needs(sent):
    pod = pod_of(sent["build"])
    [kaniko] = pod["containers"]
    context = kaniko["securityContext"]
    assert context["runAsUser"] == 0 and context["allowPrivilegeEscalation"] is False and not context["privileged"]
    assert context["capabilities"]["drop"] == ["ALL"] and set(context["capabilities"]["add"]) == KANIKO_CAPABILITIES
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "default"
    assert set(kaniko["resources"]["requests"]) == set(kaniko["resources"]["limits"]) == LIMITS
    assert [v["secret"]["secretName"] for v in pod["volumes"]] == ["push"]  # its only volume


# --- infra/policies.yaml ------------------------------------------------------------------


def test_policies_are_valid_kubernetes_in_the_workers_namespace():
    rbac = [d for d in yaml.safe_load_all((INFRA / "rbac.yaml").read_text()) if d]
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]
    for doc in policies():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert one("NetworkPolicy")["metadata"]["namespace"] == account["namespace"]
    assert WORKER == f"system:serviceaccount:{account['namespace']}:{account['name']}"
    binding = one("ValidatingAdmissionPolicyBinding")["spec"]
    assert binding["policyName"] == one("ValidatingAdmissionPolicy")["metadata"]["name"]
    assert binding["validationActions"] == ["Deny"]
    assert binding["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": account["namespace"]
    }


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and the Exists/DoesNotExist/In/NotIn expressions) against a pod's labels."""
    tests = {
        "Exists": lambda key, _: key in labels,
        "DoesNotExist": lambda key, _: key not in labels,
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
    }
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        tests[e["operator"]](e["key"], e.get("values")) for e in selector.get("matchExpressions", [])
    )


def test_the_network_policy_isolates_validator_pods_and_nothing_else():
    job, _, _ = validate_job.manifests(ImageSettings(repository=REPOSITORY), "airflow", release(), "https://g/x", {})
    kaniko = images.kaniko_job(
        ImageSettings(repository=REPOSITORY), "git://g/x", "refs/heads/main", "a" * 40, IMAGE, DIGEST
    )
    spec = one("NetworkPolicy")["spec"]
    assert selects(spec["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    assert validate_job.LABEL in {e["key"] for e in spec["podSelector"]["matchExpressions"]}
    assert not selects(spec["podSelector"], kaniko["spec"]["template"].get("metadata", {}).get("labels", {}))
    for _, workload in kube.workloads(kube.AIRFLOW_IMAGE):  # the chart's pods are not touched
        assert not selects(spec["podSelector"], workload["spec"]["template"]["metadata"]["labels"])
    # no ingress at all; egress to DNS and to the git host over HTTPS, nothing else
    assert spec["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in spec
    ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}
    assert all(rule["to"] for rule in spec["egress"])  # a rule without `to` would allow every address


# --- the ValidatingAdmissionPolicy, evaluated ---------------------------------------------

ENV = celpy.Environment()


def cel(expression: str, activation: dict):
    return ENV.program(ENV.compile(expression)).evaluate(activation)


def denials(job: dict, username: str = WORKER) -> list[str] | None:
    """The messages of the validations that deny `job` as the API server would; None when the policy does not apply."""
    request = {"operation": "CREATE", "userInfo": {"username": username}}
    activation = {"object": celpy.json_to_cel(job), "request": celpy.json_to_cel(request)}
    return admission(one("ValidatingAdmissionPolicy")["spec"], activation)


def admission(spec: dict, activation: dict) -> list[str] | None:
    """A ValidatingAdmissionPolicy's answer to the request `activation` describes, as the API server judges it: the
    messages of the validations that deny it; None when the policy does not apply."""
    if not all(cel(c["expression"], activation) for c in spec["matchConditions"]):
        return None
    variables = celpy.celtypes.MapType()
    activation["variables"] = variables
    for variable in spec["variables"]:
        variables[celpy.celtypes.StringType(variable["name"])] = cel(variable["expression"], activation)
    denied = []
    for rule in spec["validations"]:
        try:
            passed = cel(rule["expression"], activation)
        except celpy.CELEvalError as err:  # failurePolicy Fail: an error denies
            passed = err
        if not (isinstance(passed, celpy.celtypes.BoolType) and passed):
            denied.append(rule["message"])
    return denied


def test_the_policy_rules_cover_what_the_driver_makes_and_its_defaults():
    spec = one("ValidatingAdmissionPolicy")["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["jobs"]}
    ]
    defaults = ImageSettings(repository=REPOSITORY)
    constants = {"releaseImage", "gitSyncImage", "kanikoImage", "kanikoCapabilities"}  # need no object
    variables = celpy.celtypes.MapType(
        {
            celpy.celtypes.StringType(v["name"]): cel(v["expression"], {})
            for v in spec["variables"]
            if v["name"] in constants
        }
    )
    assert set(cel("variables.kanikoCapabilities", {"variables": variables})) == KANIKO_CAPABILITIES
    assert set(images.KANIKO_SECURITY["capabilities"]["add"]) == KANIKO_CAPABILITIES
    for image, pattern in [
        (IMAGE, "releaseImage"),
        (defaults.git_sync_image, "gitSyncImage"),
        (defaults.kaniko_image, "kanikoImage"),
    ]:
        activation = {"variables": variables, "image": celpy.celtypes.StringType(image)}
        assert cel(f"image.matches(variables.{pattern})", activation), (image, pattern)
        evil = {**activation, "image": celpy.celtypes.StringType(f"evil.example/{image}")}
        assert not cel(f"image.matches(variables.{pattern})", evil)


@pytest.mark.slow
def test_the_admission_policy_admits_the_jobs_the_driver_sends(sent):
    for name, job in sent.items():
        assert denials(job) == [], name
    assert denials(sent["validate"], username="system:serviceaccount:airflow:someone-else") is None
    private = ImageSettings(repository=REPOSITORY, git_secret="git-creds")
    kaniko = images.kaniko_job(private, "git://g/x", "refs/heads/main", "a" * 40, IMAGE, DIGEST)
    assert denials(kaniko) == []
    env = kaniko["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in env} == {
        "GIT_USERNAME": "GITSYNC_USERNAME",
        "GIT_PASSWORD": "GITSYNC_PASSWORD",
    }


def mutated(change):
    def apply(sent: dict[str, dict]) -> dict:
        job = copy.deepcopy(sent["build" if change.__name__.startswith("kaniko") else "validate"])
        change(pod_of(job), job)
        return job

    apply.__name__ = change.__name__
    return apply


@mutated
def host_path(pod, job):
    pod["volumes"].append({"name": "node", "hostPath": {"path": "/"}})
    pod["containers"][0]["volumeMounts"].append({"name": "node", "mountPath": "/node"})


@mutated
def projected_token(pod, job):
    pod["volumes"].append({"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}})


@mutated
def privileged(pod, job):
    pod["containers"][0]["securityContext"]["privileged"] = True


@mutated
def other_image(pod, job):
    pod["containers"][0]["image"] = "attacker.example/tools:latest"


@mutated
def other_init_image(pod, job):
    pod["initContainers"][0]["image"] = "alpine:3"


@mutated
def no_network_policy_label(pod, job):
    del job["spec"]["template"]["metadata"]["labels"][validate_job.LABEL]


@mutated
def other_service_account(pod, job):
    pod["serviceAccountName"] = "airagent"


@mutated
def token_mounted(pod, job):
    pod["automountServiceAccountToken"] = True


@mutated
def host_network(pod, job):
    pod["hostNetwork"] = True


@mutated
def secret_in_parser_env(pod, job):
    pod["containers"][0]["envFrom"] = [{"secretRef": {"name": "git-creds"}}]


@mutated
def root_user(pod, job):
    pod["containers"][0]["securityContext"]["runAsUser"] = 0


@mutated
def writable_root(pod, job):
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False


@mutated
def capability_added(pod, job):
    pod["initContainers"][0]["securityContext"]["capabilities"]["add"] = ["NET_RAW"]


@mutated
def no_limits(pod, job):
    del pod["containers"][0]["resources"]["limits"]


@mutated
def no_security_context(pod, job):
    del pod["securityContext"]


@mutated
def kaniko_sys_admin(pod, job):
    pod["containers"][0]["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")


@mutated
def kaniko_escalates(pod, job):
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


@mutated
def kaniko_unconfined(pod, job):
    pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}


@mutated
def kaniko_other_image(pod, job):
    pod["containers"][0]["image"] = "docker.io/library/docker:dind"


@mutated
def kaniko_host_path(pod, job):
    pod["volumes"].append({"name": "sock", "hostPath": {"path": "/var/run/containerd/containerd.sock"}})


@mutated
def kaniko_host_port(pod, job):
    pod["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80}]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (host_path, "no hostPath"),
        (projected_token, "no hostPath, persistent or projected volume"),
        (privileged, "every container is unprivileged"),
        (other_image, "runs only the release image"),
        (other_init_image, "runs only the release image and git-sync"),
        (no_network_policy_label, "any other pod only kaniko"),
        (other_service_account, "default ServiceAccount"),
        (token_mounted, "no token mounted"),
        (host_network, "no host network"),
        (secret_in_parser_env, "reads no Secret"),
        (root_user, "non-root user"),
        (writable_root, "read-only root filesystems"),
        (capability_added, "drops ALL capabilities"),
        (no_limits, "ephemeral-storage limits"),
        (no_security_context, "RuntimeDefault seccomp profile"),
        (kaniko_sys_admin, "kaniko adds back only its"),
        (kaniko_escalates, "cannot escalate"),
        (kaniko_unconfined, "RuntimeDefault seccomp profile"),
        (kaniko_other_image, "any other pod only kaniko"),
        (kaniko_host_path, "no hostPath"),
        (kaniko_host_port, "no host port"),
    ],
)
def test_the_admission_policy_denies_a_changed_job(sent, mutate, why):
    denied = denials(mutate(sent))
    assert denied and any(why in message for message in denied), denied


# --- RBAC ---------------------------------------------------------------------------------


def test_the_jobs_role_can_start_pods_only_through_jobs_the_policy_checks():
    """tests/test_kubernetes_target.py checks the Role against every call the builder and validator make; here,
    that none of its grants reaches around the admission policy or the pods' isolation."""
    docs = [d for d in yaml.safe_load_all((INFRA / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "airagent-jobs")
    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert grants == {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "watch"),
        ("", "configmaps", "create"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
    }
    # Every way the Role has to write a Job goes through the policy.
    [rule] = one("ValidatingAdmissionPolicy")["spec"]["matchConstraints"]["resourceRules"]
    operations = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE"}
    writes = {operations[v] for g, r, v in grants if (g, r) == ("batch", "jobs") and v in operations}
    assert writes <= set(rule["operations"]) and rule["resources"] == ["jobs"]
