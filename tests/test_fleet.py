"""Any worker, any stage: for a kubernetes pipeline each worker keeps its own disk under AIRAGENT_HOME, and a
stage that lands on a worker that did not build the release makes the release there again from its commit
instead of finding nothing there and passing. Separate homes stand for separate hosts."""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import git
import pytest
from temporalio.exceptions import ApplicationError

from activities.build import build
from activities.holdback import release_commit
from activities.runtime import ensure_runtime
from activities.validate import validate
from airagent import example
from airagent.config import PipelineSettings, Runtime, home
from airagent.models import BuildInput, HeldCommit, TrainState, ValidateInput
from airagent.repo import RELEASES, open_repository, resolve
from interface.client import AirAgent
from tests.conftest import link_runtime, start_train, state_home
from tests.devserver import WorkerProcess, agent, cli_env, dev_server, until  # noqa: F401  fixtures
from tests.kube import cluster as kube
from tests.test_kubernetes_train import REGISTRY, kube_pipeline, run_validator_jobs

pytestmark = pytest.mark.slow

TRAIN = timedelta(minutes=5)
# The test home (tests/conftest.py), before a test moves AIRAGENT_HOME: one cache makes each runtime build short.
TEST_HOME = home()
UV_CACHE = TEST_HOME / "uv-cache"


def worker_home(path: Path, runtime: bool = True) -> Path:
    """A worker's own AIRAGENT_HOME, sharing the test home's uv cache. With `runtime`, the example's runtime is
    there, as on a host that built it for an earlier commit: hard links to the test home's, as a build is half a
    minute of both cores. Without, the worker builds it when a stage first needs it."""
    path.mkdir(parents=True)
    UV_CACHE.mkdir(parents=True, exist_ok=True)
    (path / "uv-cache").symlink_to(UV_CACHE)
    if runtime:
        link_runtime(example_runtime(), path)
    return path


@functools.cache
def example_runtime() -> Path:
    """The runtime the example's commits name, built in the test home once for all the tests there."""
    with tempfile.TemporaryDirectory() as scratch, state_home(TEST_HOME, empty=False):
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(example.FILES["requirements.txt"])
        return ensure_runtime(Runtime(), requirements)[1]


def origin_of(repo: git.Repo, path: Path) -> str:
    """A bare remote holding the repo's branch: the URL every worker clones and fetches on its own."""
    origin = git.Repo.init(path, bare=True)
    repo.git.push(origin.git_dir, "main")
    return Path(origin.git_dir).as_uri()


def fleet_pipeline(repo: git.Repo, url: str, kubeconfig: Path) -> PipelineSettings:
    """The kubernetes pipeline deploying from `url`, which is also where the cluster clones commits from."""
    pipeline = kube_pipeline(repo, kubeconfig, repository=f"{REGISTRY}-fleet")
    image = pipeline.image.model_copy(update={"context": url})
    return pipeline.model_copy(update={"repo": url, "image": image})


def gone(worker: Path) -> None:
    """One host's disk, out of another's sight: the paths a Release names there no longer resolve."""
    worker.rename(worker.with_name(f"{worker.name}-elsewhere"))


def releases_in(worker: Path) -> set[str]:
    return {p.parent.name for p in (worker / "releases" / "main").glob("*/release.json")}


async def ran(agent: AirAgent, wf_id: str, activity: str) -> set[int]:
    """The pids of the worker processes that ran `activity` in a workflow (a worker's identity is pid@host)."""
    events = (await agent.client.get_workflow_handle(wf_id).fetch_history()).events
    scheduled = {
        e.event_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    return {
        int(e.activity_task_started_event_attributes.identity.split("@")[0])
        for e in events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    }


class Hosts:
    """Replicas of a Deployment: one AIRAGENT_HOME path, each host's own disk under it. `on(name)` puts that
    host's disk at the path, and the one there before out of sight, so a path a Release names on one host
    may not be there on another, or be another disk's."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root, self.path, self.here = root, root / "home", ""
        monkeypatch.setenv("AIRAGENT_HOME", str(self.path))

    def on(self, name: str) -> None:
        if self.here:
            self.path.rename(self.root / self.here)
        if (self.root / name).exists():
            (self.root / name).rename(self.path)
        else:
            worker_home(self.path)
        self.here = name


def example_pipeline(tmp_path: Path) -> tuple[git.Repo, str, PipelineSettings]:
    """The example, its remote, and the kubernetes pipeline without `image:`: parsed on the worker, no cluster."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    url = origin_of(repo, tmp_path / "origin.git")
    pipeline = fleet_pipeline(repo, url, kube.kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9"))
    return repo, url, pipeline.model_copy(update={"image": None})


def test_validate_on_a_worker_that_did_not_build_parses_the_commits_files(tmp_path, monkeypatch):
    repo, _, pipeline = example_pipeline(tmp_path)
    hosts = Hosts(tmp_path, monkeypatch)
    hosts.on("b")  # b built an earlier commit: its runtime is there, at the path a Release names
    build(BuildInput(pipeline=pipeline, target=repo.commit("HEAD~1").hexsha))

    hosts.on("a")
    release = build(BuildInput(pipeline=pipeline, target=repo.head.commit.hexsha))
    built_here = validate(ValidateInput(release=release, pipeline=pipeline))
    hosts.on("b")
    elsewhere = validate(ValidateInput(release=release, pipeline=pipeline))

    assert release.id in releases_in(hosts.path)
    assert built_here.ok and elsewhere.ok
    assert elsewhere.summary().startswith("6 files, 4 DAGs")  # the repo's, not an empty folder's
    assert elsewhere.summary().split(" (")[0] == built_here.summary().split(" (")[0]

    # A release folder emptied under a stage (a clean-up racing it) fails validate instead of passing it.
    shutil.rmtree(hosts.path / "releases" / "main" / release.id / "bundle" / "dags")
    with pytest.raises(ApplicationError, match="holds no file") as raised:
        validate(ValidateInput(release=release, pipeline=pipeline))
    assert raised.value.type == "ReleaseIncomplete" and not raised.value.non_retryable


def test_activities_cloning_at_once_each_find_every_commit(tmp_path, monkeypatch):
    """The conductor's poll and a train's diff can open a worker's first clone at the same moment: none may
    see a half-made one, in which the commit it was given is missing."""
    repo, _, pipeline = example_pipeline(tmp_path)
    head = repo.head.commit.hexsha

    def first_look(start: threading.Barrier) -> str:
        start.wait(timeout=30)
        return resolve(open_repository(pipeline), pipeline, head)

    for attempt in range(3):
        monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / f"home-{attempt}"))
        start = threading.Barrier(4)
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(first_look, [start] * 4)) == [head] * 4


def test_a_release_commit_made_on_one_worker_is_fetched_by_another(tmp_path, monkeypatch):
    """The commit airagent makes without held commits lives in the clone of the worker that made it; it is pushed
    under refs/airagent/releases/ to the repository every worker fetches from, so another one finds it."""
    repo, url, pipeline = example_pipeline(tmp_path)
    live = repo.head.commit.hexsha
    hosts = Hosts(tmp_path, monkeypatch)
    hosts.on("b")
    open_repository(pipeline)  # b's clone, from before the commits below
    broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: oops", "marketing")
    good = example.commit(repo, {"dags/finance/fx_weekly.py": example.dag_file("fx_weekly")}, "fx", "finance")
    repo.git.push(url, "main")
    held = HeldCommit(sha=broken, author="Ada", summary="oops", paths=[example.BROKEN_PATH], reason="no import")

    hosts.on("a")
    made = release_commit(open_repository(pipeline), pipeline, good, live, [held])
    release = build(BuildInput(pipeline=pipeline, target=made))
    hosts.on("b")
    report = validate(ValidateInput(release=release, pipeline=pipeline, live_commits=[live]))

    assert git.Repo(tmp_path / "origin.git").commit(RELEASES + made).hexsha == made
    assert open_repository(pipeline, fetch=False).commit(RELEASES + made).hexsha == made  # in b's own clone
    assert report.ok, report.summary()
    assert report.summary().startswith("7 files, 5 DAGs")  # fx_weekly in, the broken orders_hourly as it was


@pytest.mark.devserver
async def test_trains_succeed_when_their_stages_move_between_workers(agent, cli_env, tmp_path):
    """Both workers poll one queue, and Temporal may give any activity to either; here the hand-offs are forced,
    by stopping one worker and starting the other: the first train on a, the second's diff, build, validate and
    hold-back on b, and the rest of it, with the release commit b made, on a."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    url = origin_of(repo, tmp_path / "origin.git")
    origin = git.Repo(tmp_path / "origin.git")
    homes = [worker_home(tmp_path / name) for name in ("a", "b")]
    a, b = (WorkerProcess({**cli_env, "AIRAGENT_HOME": str(h)}, h.with_suffix(".log")) for h in homes)
    with kube.emulated(delay=0.1, progress_deadline=30) as cluster:
        pipeline = fleet_pipeline(repo, url, kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host))
        run_validator_jobs(cluster, pipeline, repo, origin=tmp_path / "origin.git")
        try:
            a.start()
            first = await agent.wait((await start_train(agent, pipeline, repo.head.commit.hexsha)).id, timeout=TRAIN)
            a.stop()
            broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: oops", "marketing")
            good = example.commit(repo, {"dags/finance/fx_weekly.py": example.dag_file("fx_weekly")}, "fx", "finance")
            repo.git.push(url, "main")
            b.start()
            handle = await start_train(agent, pipeline, good)
            await until(agent, handle.id, lambda s: bool(s.held))
            b.stop()  # lets the activity it runs finish
            a.start()
            held = await agent.wait(handle.id, timeout=TRAIN)
        finally:
            a.stop()
            b.stop()

    assert first.state == TrainState.succeeded, first.reason
    assert held.state == TrainState.succeeded, held.reason
    assert [h.sha for h in held.held] == [broken]
    assert await ran(agent, handle.id, "hold_back") == {b.proc.pid}
    assert await ran(agent, handle.id, "roll") == {a.proc.pid}
    assert held.release in releases_in(homes[0])  # the release of b's commit, made again on a
    assert origin.commit(RELEASES + held.release_commit).hexsha == held.release_commit
    assert origin.commit("refs/heads/airagent/staging").hexsha == held.release_commit
    assert held.validation.startswith("7 files, 5 DAGs")


@pytest.mark.devserver
async def test_a_train_goes_on_when_the_worker_that_built_it_is_killed(agent, cli_env, tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    url = origin_of(repo, tmp_path / "origin.git")
    homes = [worker_home(tmp_path / name, runtime=False) for name in ("a", "b")]  # the survivor builds it too
    workers = [WorkerProcess({**cli_env, "AIRAGENT_HOME": str(h)}, h.with_suffix(".log")) for h in homes]
    with kube.emulated(delay=0.1, progress_deadline=30) as cluster:
        pipeline = fleet_pipeline(repo, url, kube.kubeconfig(tmp_path / "kubeconfig", cluster.emulator.host))
        run_validator_jobs(cluster, pipeline, repo, origin=tmp_path / "origin.git")
        for w in workers:
            w.start()
        try:
            handle = await start_train(agent, pipeline, repo.head.commit.hexsha)
            await until(agent, handle.id, lambda s: s.stage not in (None, "diff", "build"))
            built_by = await ran(agent, handle.id, "build")
            [builder] = [i for i, w in enumerate(workers) if w.proc.pid in built_by]
            workers[builder].kill()  # mid-train: validate, roll and soak are the other worker's now
            gone(homes[builder])
            status = await agent.wait(handle.id, timeout=TRAIN)
        finally:
            for w in workers:
                w.stop()

    survivor = homes[1 - builder]
    assert status.state == TrainState.succeeded, status.reason
    for stage in ("validate", "roll"):  # a validate the builder had started is retried on the survivor
        assert await ran(agent, handle.id, stage) == {workers[1 - builder].proc.pid}, stage
    assert status.release in releases_in(survivor)  # made again there from the commit
    assert status.validation.startswith("6 files, 4 DAGs")
