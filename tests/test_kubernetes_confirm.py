"""The kubernetes driver's confirm and API probes against a real Airflow 3 whose DAGs come from a GitDagBundle.

Airflow runs here as local processes (no cluster can run it), configured as a chart would
configure it for airagent: a GitDagBundle tracking `airagent/staging` of a real git repo.
The workloads live on the API emulator (tests/kube); the driver moves the ref there and
asks the real api-server whether every DAG is served at the new commit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import git
import httpx
import pytest

from activities import probes, process
from activities.airflow_api import AirflowApi, Credentials
from activities.runtime import ensure_runtime
from activities.targets.base import NotLive
from activities.targets.kube_airflow import KubernetesAirflow, not_live
from activities.targets.local_airflow import LocalAirflow
from activities.targets.local_settings import component_env, ensure_secrets
from airagent import example
from airagent.config import EnvironmentSettings, KubernetesTarget, LocalTarget, PipelineSettings, Runtime
from airagent.models import Release, RolloutMode
from tests.conftest import airflow_ports
from tests.kube import cluster as kube

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

REF = "airagent/staging"
DAGS = {
    "dags/marketing/orders_hourly.py": ["orders_hourly"],
    "dags/marketing/campaigns.py": ["campaigns"],
    "dags/finance/ledger_daily.py": ["ledger_daily"],
    "dags/finance/fx_rates.py": ["fx_rates"],
}
EXPECTED = {d for ids in DAGS.values() for d in ids}


def bundle_env(repo: Path, storage: Path) -> dict[str, str]:
    """What a chart's values would set: the git connection and a GitDagBundle on the environment's ref."""
    bundle = {
        "name": "monorepo",
        "classpath": "airflow.providers.git.bundles.git.GitDagBundle",
        "kwargs": {"tracking_ref": REF, "subdir": "dags", "git_conn_id": "airagent_git", "refresh_interval": 2},
    }
    return {
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
        "AIRFLOW_CONN_AIRAGENT_GIT": json.dumps({"conn_type": "git", "host": str(repo)}),
        # Not the shared default under /tmp: clones of other runs must not leak in.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(storage),
    }


def wait_for(predicate, seconds: float, what: str):
    """Until `predicate` returns True; anything else it returns says what is still missing."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            if (last := predicate()) is True:
                return
        except httpx.HTTPError as err:
            last = type(err).__name__
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {seconds}s: {last}")


def healthy(api: AirflowApi) -> bool | str:
    verdict = probes.health(api.health())
    return verdict.ok or verdict.reading


def at_commit(api: AirflowApi, commit: str) -> bool | list[str]:
    return not_live(api.dags(), api.import_errors(), EXPECTED, commit, None) or True


@dataclass
class World:
    settings: EnvironmentSettings
    pipeline: PipelineSettings
    repo: git.Repo
    cluster: kube.Cluster
    runtime_hash: str
    runtime: Path

    def driver(self, **target) -> KubernetesAirflow:
        settings = self.settings.model_copy(update={"target": self.settings.target.model_copy(update=target)})
        return KubernetesAirflow(settings, self.pipeline)

    def commit(self, files: dict[str, str], message: str) -> Release:
        sha = example.commit(self.repo, files, message)
        return Release(
            id=f"{sha[:12]}-{self.runtime_hash[:8]}",
            commit=sha,
            runtime_hash=self.runtime_hash,
            runtime=str(self.runtime),
            bundle=str(self.repo.working_tree_dir),
            dag_folder="dags",
            plugins_folder="plugins",
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real Airflow on a GitDagBundle at the repo's head, the chart's workloads on the emulator, and the driver."""
    root = tmp_path_factory.mktemp("kube-confirm")
    repo = example.create(root / "repo", root / "envs")
    repo.create_head(REF, repo.head.commit)  # the ref exists before Airflow starts, as after `helm install`
    (root / "requirements.txt").write_text("apache-airflow-providers-git\n")
    digest, runtime = ensure_runtime(Runtime(), root / "requirements.txt")
    python = runtime / "bin" / "python"

    local = LocalAirflow("staging", LocalTarget(path=root / "airflow", port=airflow_ports()))
    ensure_secrets(local.target)
    env = {
        **component_env(local.name, local.target, python, None),
        **bundle_env(Path(repo.working_tree_dir), root / "bundles"),
    }
    local.home.mkdir(parents=True)
    started = []
    with pytest.MonkeyPatch.context() as mp, kube.emulated(delay=0.1, progress_deadline=5) as cluster:
        mp.delenv("AIRAGENT_AIRFLOW_PASSWORD", raising=False)  # the secret file is what is under test
        try:
            process.run([python.with_name("airflow"), "db", "migrate"], env=env, cwd=local.home, timeout=600)
            for name in ("scheduler", "dag-processor", "triggerer", "api-server"):
                started.append(local.components.start(name, [python.with_name("airflow"), name], env, cwd=local.home))
            api_url = f"http://127.0.0.1:{local.target.port}"
            with AirflowApi(api_url, Credentials.load(local.secrets / "api-login")) as api:
                wait_for(lambda: healthy(api), 180, "Airflow healthy")
                wait_for(lambda: at_commit(api, repo.head.commit.hexsha), 180, "the DAGs served at the first commit")
            target = KubernetesTarget(
                namespace=kube.NAMESPACE,
                kubeconfig=kube.kubeconfig(root / "kubeconfig", cluster.emulator.host),
                rollout_deadline="30s",
                live_timeout="120s",
                api_url=api_url,
                credentials_file=local.secrets / "api-login",
            )
            settings = EnvironmentSettings(name="staging", target=target)
            pipeline = PipelineSettings(name="main", repo=str(repo.working_tree_dir), environments=[settings])
            world = World(settings, pipeline, repo, cluster, digest, runtime)
            # A first release live, so each test has one to roll from and back to.
            world.driver().roll(
                world.commit({"dags/finance/ledger_daily.py": example.dag_file("ledger_daily", 3)}, "finance: ledger"),
                RolloutMode.dags_only,
                DAGS,
            )
            yield world
        finally:
            for component in started:
                local.components.stop(component, 30)  # the whole process group, gunicorn workers too


def served(target: KubernetesTarget) -> dict[str, str | None]:
    """Each DAG's bundle_version as the api-server reports it now."""
    with AirflowApi(target.api_url, Credentials.load(target.credentials_file)) as api:
        return {d["dag_id"]: d.get("bundle_version") for d in api.dags()}


def test_a_dags_only_roll_returns_once_airflow_serves_every_dag_at_the_commit(world):
    driver = world.driver()
    new = world.commit({"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)}, "finance: more fx steps")
    mark = len(world.cluster.emulator.calls)

    rolled = driver.roll(new, RolloutMode.dags_only, DAGS)

    assert served(driver.target) == {d: new.commit for d in EXPECTED}
    assert world.repo.heads[REF].commit.hexsha == new.commit
    assert rolled.changed and "no pod template patched" in rolled.detail, rolled.detail
    assert [
        c
        for c in world.cluster.emulator.since(mark)
        if c.verb == "patch" and c.resource in ("deployments", "statefulsets")
    ] == []
    marker = driver.marker()
    assert (marker.live, marker.live_commit) == (new.id, new.commit)

    readings = {r.probe: r for r in driver.probe(new, driver.baseline())}
    assert set(readings) == {"marker", "pods", "health", "import_errors", "task_failure_rate"}
    assert all(r.ok for r in readings.values()), readings
    assert "scheduler healthy" in readings["health"].reading and "dag_processor healthy" in readings["health"].reading
    assert readings["import_errors"].reading == "0 import errors, none new"


def test_a_dag_broken_at_parse_fails_confirm_and_rollback_moves_the_ref_back(world):
    impatient = world.driver(live_timeout=timedelta(seconds=30))
    good = impatient.marker()
    broken = world.commit({example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: a typo")

    with pytest.raises(NotLive) as failed:
        impatient.roll(broken, RolloutMode.dags_only, DAGS)

    # Airflow marks a DAG whose file no longer imports stale: the API stops serving it. On a busy host other DAGs
    # may still wait for their parse at the commit too; the broken one is named either way.
    message = str(failed.value)
    assert message.startswith(
        f"staging: release {broken.id} (commit {broken.commit[:12]}) not served within 0:00:30: still waiting for "
    ), message
    assert "orders_hourly (not served)" in message and "import error in marketing/orders_hourly.py" in message
    assert impatient.env.record().pending == broken.id

    # The train's rollback: the ref goes back to an older commit, which GitDagBundle must follow.
    rolled = world.driver().rollback(good.live)

    assert rolled.changed and rolled.live == good.live
    assert served(impatient.target) == {d: good.live_commit for d in EXPECTED}
    assert world.repo.heads[REF].commit.hexsha == good.live_commit
