"""API requests per roll of a 5-workload Kubernetes environment, and how many are watches versus polls.

Runs the kubernetes driver against the API emulator and its controller (tests/kube/),
which log every request the real `kubernetes` client sends: a `rebuild` roll (every pod
template patched and waited for), a `dags-only` roll, and the same rebuild again (a
retried activity finding its work done). A poll is a repeated GET or LIST of an object
already read in that roll; a watch is a `?watch=true` stream.

    .venv/bin/python -m bench.kube_requests
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import git

from activities.targets.kube_git import GitRef
from activities.targets.kube_record import Rollout
from activities.targets.kubernetes import KubernetesEnvironment
from airagent.config import KubernetesTarget
from airagent.models import RolloutMode
from tests.kube import cluster as kube


def counted(calls) -> tuple[int, int, int]:
    """(requests, watches, polls) of one roll's calls."""
    reads = Counter((c.method, c.path.split("?")[0]) for c in calls if not c.watch and c.method == "GET")
    polls = sum(n - 1 for n in reads.values())
    return len(calls), sum(1 for c in calls if c.watch), polls


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, kube.emulated(delay=0.1, progress_deadline=5) as cluster:
        repo = git.Repo.init(Path(tmp) / "repo", initial_branch="main")
        (Path(tmp) / "repo" / "dag.py").write_text("# a DAG\n")
        repo.index.add(["dag.py"])
        sha = repo.index.commit("a DAG").hexsha
        env = KubernetesEnvironment(
            "staging",
            KubernetesTarget(namespace=cluster.namespace, rollout_deadline="60s"),
            cluster.api,
            GitRef(repo.working_dir, "airagent/staging"),
        )
        figures = {}
        for name, rollout in (
            ("rebuild", Rollout(release="r1", commit=sha, mode=RolloutMode.rebuild, image="registry/airflow:r1")),
            ("dags_only", Rollout(release="r2", commit=sha, mode=RolloutMode.dags_only)),
            ("rebuild_again", Rollout(release="r2", commit=sha, mode=RolloutMode.rebuild, image="registry/airflow:r1")),
        ):
            mark = len(cluster.emulator.calls)
            env.roll(rollout)
            figures[name] = counted(cluster.emulator.calls[mark:])
    for name in ("dags_only", "rebuild_again", "rebuild"):
        requests, watches, polls = figures[name]
        print(f"{name}_watches: {watches} count")
        print(f"{name}_polls: {polls} count")
        print(f"{name}_requests: {requests} count")


if __name__ == "__main__":
    main()
