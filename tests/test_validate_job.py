"""The validator Job on the API emulator, without Temporal: failures name the pod and the reason, and a retried
activity finds the Job it started. (tests/test_kubernetes_train.py runs it inside trains, parsing for real.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.validation import job as validate_job
from airagent.config import ImageSettings
from airagent.models import Release
from tests.kube import cluster as kube
from tests.kube.controller import Kubelet

# The Airflow runtime or the Kubernetes emulator: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

URL = "https://git.example/monorepo.git"


class Scripted(Kubelet):
    """Containers end as told instead of running."""

    def __init__(self, outcomes: dict[str, tuple[int, str]]):
        super().__init__(Path("/nonexistent"), {})
        self.outcomes, self.runs_made = outcomes, 0

    def run(self, store, namespace, spec, scratch):
        self.runs_made += 1
        return self.outcomes


def release(image: str = "registry.example/airflow:0123456789abcdef") -> Release:
    return Release(
        id="r1",
        commit="c" * 40,
        runtime_hash="0123456789abcdef",
        runtime="/nonexistent",
        bundle="/nonexistent",
        dag_folder="dags",
        plugins_folder="plugins",
        image=image,
    )


def run_validator(cluster, files=("a.py",), image: str | None = None, **settings) -> list[dict]:
    job, config_map, ref = validate_job.manifests(
        ImageSettings(repository="registry.example/airflow", **settings),
        cluster.namespace,
        release(*filter(None, [image])),
        URL,
        {"files": list(files)},
    )
    return validate_job.run(cluster.api, ref, job, config_map, list(files))


def test_a_log_without_a_report_fails_naming_the_pod():
    with kube.emulated(delay=0.05) as cluster:
        cluster.controller.kubelet = Scripted({"git-sync": (0, ""), "validate": (0, "Python 3.11 without Airflow\n")})
        with pytest.raises(ApplicationError) as err:
            run_validator(cluster)
    assert err.value.non_retryable and err.value.type == "ValidatorJobFailed"
    assert "pod airagent-validate-" in str(err.value) and "without a report" in str(err.value)
    assert "Python 3.11 without Airflow" in str(err.value)


def test_git_sync_failing_names_the_commit_and_the_settings():
    with kube.emulated(delay=0.05) as cluster:
        cluster.controller.kubelet = Kubelet(Path("/nonexistent"), {})  # knows no repository: git-sync fails
        with pytest.raises(ApplicationError) as err:
            run_validator(cluster)
    message = str(err.value)
    assert "git-sync could not fetch commit cccccccccccc" in message and "image.git_secret" in message
    assert "cannot fetch" in message  # git-sync's own log


def test_a_retried_activity_reads_the_job_it_started():
    report = 'noise\nairagent-report: {"files": [{"path": "a.py", "dag_ids": ["a"]}]}\n'
    with kube.emulated(delay=0.05) as cluster:
        kubelet = cluster.controller.kubelet = Scripted({"git-sync": (0, ""), "validate": (0, report)})
        first, again = run_validator(cluster), run_validator(cluster)
        jobs = cluster.emulator.store.list("jobs")[0]
        [config_map] = [
            c
            for c in cluster.emulator.store.list("configmaps")[0]
            if c["metadata"]["name"].startswith("airagent-validate-")
        ]
    assert first == again == [{"path": "a.py", "dag_ids": ["a"]}]
    assert len(jobs) == 1 and kubelet.runs_made == 1
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == jobs[0]["metadata"]["uid"]  # goes with the Job
    assert set(config_map["data"]) == {"settings.json"} and set(config_map["binaryData"]) == {"parser.pyz"}


def test_the_job_spec_passes_arguments_never_a_shell_line():
    job, _, _ = validate_job.manifests(
        ImageSettings(repository="registry.example/airflow", git_secret="git-creds"),
        "airflow",
        release(),
        "https://git.example/x.git; rm -rf /",
        {"files": []},
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][0] == "python" and "sh" not in pod["containers"][0]["command"]
    assert pod["initContainers"][0]["args"][0] == "--repo=https://git.example/x.git; rm -rf /"  # one argument
    assert pod["initContainers"][0]["envFrom"] == [{"secretRef": {"name": "git-creds"}}]
    assert pod["automountServiceAccountToken"] is False
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > pod["activeDeadlineSeconds"] == 15 * 60
