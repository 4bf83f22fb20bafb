"""gc: what stays on disk (what runs, what can be rolled back to, what a train in flight built) and what goes.

Releases are built by hand from real commits (the files `build` exports, without a runtime) and rolled
to real local environments; runtimes are folders a release names.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client
from typer.testing import CliRunner

from activities import gc
from activities.bundle import export_commit
from activities.release import remember
from activities.runtime import LAST_USED, ensure_runtime, runtime_hash
from activities.targets import local
from activities.targets.base import Swap
from activities.targets.components import Process, _start_ticks
from activities.targets.kube_record import RECORD_KEY, Record
from activities.targets.local import LocalEnvironment
from activities.validation import cache
from airagent import example
from airagent.config import EnvironmentSettings, KubernetesTarget, PipelineSettings, home
from airagent.models import Release
from interface.cli import app
from tests.conftest import make_pipeline
from tests.kube import cluster as kube
from worker import janitor

DAY = 86400


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """A home of its own: gc must not touch the runtimes and cache other tests share."""
    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "home"))


@pytest.fixture
def pipeline(monorepo, tmp_path) -> PipelineSettings:
    return make_pipeline(monorepo, tmp_path / "envs")


def runtime(name: str, days_old: float = 30) -> Path:
    folder = home() / "runtimes" / name
    (folder / "bin").mkdir(parents=True)
    (folder / "runtime.json").write_text(json.dumps({"hash": name}))
    backdate(folder, days_old * DAY)
    return folder


def built(pipeline: PipelineSettings, repo, n: int, runtime_dir: Path, hours_old: float = 0) -> Release:
    """What `build` leaves for commit n: the commit's files and a release.json naming its runtime."""
    sha = example.commit(repo, {"dags/finance/note.py": f"# change {n}\n"}, f"change {n}")
    final = home() / "releases" / pipeline.name / f"{sha[:12]}-{runtime_dir.name[:8]}"
    export_commit(pipeline, sha, final / "bundle")
    release = Release(
        id=final.name,
        commit=sha,
        runtime_hash=runtime_dir.name,
        runtime=str(runtime_dir),
        bundle=str(final / "bundle"),
        dag_folder="dags",
        plugins_folder="plugins",
    )
    (final / "release.json").write_text(release.model_dump_json())
    backdate(final, hours_old * 3600)
    return release


def backdate(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    for folder, _, names in os.walk(path):
        for name in names:
            os.utime(Path(folder, name), (when, when), follow_symlinks=False)
        os.utime(folder, (when, when))


def env(pipeline: PipelineSettings, name: str) -> LocalEnvironment:
    return LocalEnvironment(pipeline.environment(name).target.path, name)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else set()


def test_gc_keeps_what_runs_and_what_can_be_rolled_back_to_and_removes_the_rest(pipeline, monorepo):
    rt = runtime("a" * 16)
    r = [built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(8)]  # r[7]: the train in flight
    staging, prod = env(pipeline, "staging"), env(pipeline, "prod")
    for release in r[:7]:
        staging.roll(release)
    staging.rollback(r[3].id)  # the three it ran last: r3, r6, r5
    for release in r[:5]:
        prod.roll(release)  # r4, r3, r2
    backdate(staging.path, DAY)
    backdate(prod.path, DAY)

    result = gc.collect(pipeline, gc.Retention(rollbacks=3, built=1))

    kept = {r[i].id for i in (2, 3, 4, 5, 6, 7)}
    assert names(home() / "releases" / "main") == kept
    assert names(staging.releases) == kept - {r[7].id}  # a prod rollback target is kept beside it too
    assert names(prod.releases) == {r[2].id, r[3].id, r[4].id}
    assert result.removed == {"release": 2, "environment release": 4} and result.freed > 0 and not result.failed
    staging.rollback(r[5].id)  # what it keeps, it can still roll back to
    assert staging.linked() == r[5].id and (staging.current / "dags" / "finance" / "note.py").exists()
    assert gc.collect(pipeline, gc.Retention(rollbacks=3, built=1)).removed == {}  # idempotent


def test_what_changed_a_moment_ago_stays_though_nothing_wants_it(pipeline, monorepo):
    rt = runtime("a" * 16)
    fresh = built(pipeline, monorepo, 1, rt)  # a build of a train in flight, not rolled anywhere yet
    staging = env(pipeline, "staging")
    staging._install(fresh)  # a roll copying it in, about to swap

    plan = gc.plan([pipeline], gc.Retention(built=0))

    assert plan.removals == []


def test_a_runtime_a_kept_release_names_is_never_removed(pipeline, monorepo):
    live_rt, gone_rt = runtime("1" * 16), runtime("2" * 16)
    recent, orphan = runtime("3" * 16, days_old=1), runtime("4" * 16)
    (home() / "runtimes" / f".{'5' * 16}.0badf00d").mkdir()  # a build killed two hours ago
    backdate(home() / "runtimes" / f".{'5' * 16}.0badf00d", 7200)
    (home() / "runtimes" / f".{'6' * 16}.c0ffee00").mkdir()  # a build running now
    old = built(pipeline, monorepo, 1, gone_rt, hours_old=48)
    live = built(pipeline, monorepo, 2, live_rt, hours_old=47)
    staging = env(pipeline, "staging")
    staging.roll(live)
    backdate(staging.path, DAY)
    in_use = home() / "runtimes" / runtime_hash(pipeline.runtime, b"")
    runtime(in_use.name)
    assert ensure_runtime(pipeline.runtime, None) == (in_use.name, in_use)  # reused: marked as used now
    assert (in_use / LAST_USED).exists()

    result = gc.collect(pipeline, gc.Retention(built=0))

    assert names(home() / "runtimes") == {live_rt.name, recent.name, in_use.name}
    assert not (home() / "runtimes" / f".{'5' * 16}.0badf00d").exists()
    assert (home() / "runtimes" / f".{'6' * 16}.c0ffee00").exists()
    assert result.removed == {"release": 1, "runtime": 2, "partial": 1}
    assert not (home() / "releases" / "main" / old.id).exists() and not orphan.exists()


def test_a_release_whose_record_cannot_be_read_keeps_every_runtime_and_says_so(pipeline, monorepo):
    """Which runtime that release runs on is unknown, so none is taken from under it; once the release goes by
    retention, the runtimes no release names go too."""
    live_rt, orphan, newer_rt = runtime("1" * 16), runtime("4" * 16), runtime("7" * 16)
    unreadable = built(pipeline, monorepo, 1, live_rt, hours_old=48)
    staging = env(pipeline, "staging")
    staging.roll(unreadable)
    record = staging.releases / unreadable.id / "release.json"
    record.write_text("{")  # a disk that failed mid-write, a hand edit
    backdate(staging.path, DAY)
    keep = gc.Retention(rollbacks=0, built=0)

    plan = gc.plan([pipeline], keep)

    assert not [r for r in plan.removals if r.kind == "runtime"]
    [note] = plan.notes
    assert f"every runtime kept: {record} could not be read (JSONDecodeError)" in note
    assert f"no readable release names them: {orphan.name}, {newer_rt.name}." in note
    assert gc.apply(plan).notes == [note]

    later = [built(pipeline, monorepo, i, newer_rt, hours_old=47 - i) for i in (2, 3)]
    for release in later:
        staging.roll(release)
    backdate(staging.path, DAY)

    plan = gc.plan([pipeline], keep)

    assert plan.notes == []
    assert {(r.kind, Path(r.path).name) for r in plan.removals} == {
        ("release", unreadable.id),
        ("environment release", unreadable.id),
        ("runtime", live_rt.name),
        ("runtime", orphan.name),
    }


def test_the_validation_cache_is_capped_least_recently_used_first():
    keys = [f"{i:02x}" + "0" * 62 for i in range(12)]
    for key in keys:
        cache.store(key, {"path": "x.py", "padding": "x" * 6000})
    files = [home() / "validation-cache" / "files" / key[:2] / f"{key}.json" for key in keys]
    now = time.time()
    for i, path in enumerate(files):
        os.utime(path, (now - 3600 + i * 60, now - DAY))  # used in order: keys[0] the longest ago
    one = files[0].stat().st_blocks * 512

    result = gc.apply(gc.plan([], gc.Retention(cache_bytes=5 * one)))

    assert result.removed == {"cache": 7}
    cache._remembered.clear()
    assert set(cache.load(keys)) == set(keys[7:])  # the rest are parsed again when asked for


def test_the_record_keeps_the_last_swaps(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "KEEP_SWAPS", 5)
    environment = LocalEnvironment(tmp_path / "env")
    (tmp_path / "built" / "dags").mkdir(parents=True)
    releases = [
        Release(
            id=name,
            commit=name * 40,
            runtime_hash="0" * 16,
            runtime="/r",
            bundle=str(tmp_path / "built"),
            dag_folder="dags",
            plugins_folder="plugins",
        )
        for name in ("a", "b")
    ]
    for i in range(8):
        environment.roll(releases[i % 2])

    history = environment.record().history
    assert [s.release for s in history] == ["b", "a", "b", "a", "b"]
    assert [s.replaced for s in history] == ["a", "b", "a", "b", "a"]  # the last five of eight


def test_a_kubernetes_environment_whose_record_cannot_be_read_keeps_every_release(monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", environments=("staging",))
    cluster = EnvironmentSettings(
        name="prod", target=KubernetesTarget(namespace="airflow", kubeconfig=tmp_path / "none")
    )
    pipeline = pipeline.model_copy(update={"environments": [*pipeline.environments, cluster]})
    rt = runtime("a" * 16)
    releases = [built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(4)]

    plan = gc.plan([pipeline], gc.Retention(rollbacks=0, built=0))

    assert not [r for r in plan.removals if r.kind in ("release", "runtime")]
    assert any("prod's record could not be read" in note for note in plan.notes)
    assert names(home() / "releases" / "main") == {r.id for r in releases}


def test_what_vanished_or_changed_since_the_plan_is_left_without_an_error(pipeline, monorepo):
    rt = runtime("a" * 16)
    first, second, _ = (built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(3))
    plan = gc.plan([pipeline], gc.Retention(built=1))
    assert {Path(r.path).name for r in plan.removals} == {first.id, second.id}
    quicker = [r for r in plan.removals if Path(r.path).name == first.id]
    gc.apply(plan.model_copy(update={"removals": quicker}))  # another gc was quicker
    (Path(second.bundle).parent / "release.json").touch()  # built again meanwhile

    result = gc.apply(plan)

    assert result.removed == {} and result.skipped == 2 and not result.failed
    assert Path(second.bundle).is_dir()


def test_dry_run_removes_nothing_and_the_command_removes_it(pipeline, monorepo, tmp_path):
    config = tmp_path / "airagent.yaml"
    yaml = example.airagent_yaml(tmp_path / "envs", airflow=False)
    config.write_text(yaml.replace("repo: .", f"repo: {monorepo.working_tree_dir}"))
    rt = runtime("a" * 16)
    releases = [built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(5)]

    dry = CliRunner().invoke(app, ["gc", "-c", str(config), "--dry-run", "--json"])

    assert dry.exit_code == 0, dry.output
    answer = json.loads(dry.stdout)
    assert answer["result"] is None and [r["kind"] for r in answer["plan"]["removals"]] == ["release", "release"]
    assert names(home() / "releases" / "main") == {r.id for r in releases} and rt.exists()

    done = CliRunner().invoke(app, ["gc", "-c", str(config), "-p", "main"])

    assert done.exit_code == 0, done.output
    assert "freed" in done.stdout and releases[0].id in done.stdout
    assert names(home() / "releases" / "main") == {r.id for r in releases[2:]} and rt.exists()


def test_releases_stay_bounded_over_many_rolls_with_gc_after_each(pipeline, monorepo):
    rt = runtime("a" * 16)
    staging, prod = env(pipeline, "staging"), env(pipeline, "prod")
    keep = gc.Retention(young=timedelta(0))  # as if each train came minutes after the last
    bound = 2 * (keep.rollbacks + 1) + keep.built
    releases: list[Release] = []
    for i in range(30):
        release = built(pipeline, monorepo, i, rt)
        staging.roll(release)
        if releases:
            prod.roll(releases[-1])  # prod a train behind
        releases.append(release)
        gc.collect(pipeline, keep)
        assert len(names(home() / "releases" / "main")) <= bound
        assert len(names(staging.releases)) <= bound and len(names(prod.releases)) <= bound

    kept = {r.id for r in releases[24:]}  # the last five each ran; the newest builds are among them
    assert names(home() / "releases" / "main") == kept == names(staging.releases)
    assert names(prod.releases) == kept - {releases[-1].id} and rt.exists()
    staging.rollback(staging.record().previous.id)  # the rollback target is still there


@pytest.mark.slow  # the Kubernetes API emulator
def test_a_kubernetes_environment_keeps_what_its_record_in_the_cluster_names(monorepo, tmp_path):
    rt = runtime("a" * 16)
    with kube.emulated() as cluster:
        assert cluster.emulator is not None
        target = KubernetesTarget(
            namespace=cluster.namespace, kubeconfig=kube.kubeconfig(tmp_path / "kc", cluster.emulator.host)
        )
        pipeline = make_pipeline(monorepo, tmp_path / "envs", environments=("prod",))
        pipeline = pipeline.model_copy(update={"environments": [EnvironmentSettings(name="prod", target=target)]})
        r = [built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(5)]
        swaps = [Swap(at=datetime.now(UTC), action="roll", release=x.id, replaced=None) for x in r[:4]]
        record = Record(live=r[3].id, previous=r[2].id, history=swaps)
        configmap = {"metadata": {"name": "airagent-prod"}, "data": {RECORD_KEY: record.model_dump_json()}}
        client.CoreV1Api(cluster.api).create_namespaced_config_map(cluster.namespace, configmap)

        plan = gc.plan([pipeline], gc.Retention(rollbacks=1, built=1))

    assert plan.notes == []
    assert {Path(x.path).name for x in plan.removals if x.kind == "release"} == {r[0].id, r[1].id}


def test_each_worker_sweeps_its_own_disk_for_every_pipeline_it_made_releases_of(pipeline, monorepo, tmp_path):
    """In a fleet the conductor's collection runs on one replica; every worker's janitor sweeps the rest, with
    the settings its releases were made with."""
    rt = runtime("a" * 16)
    r = [built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(4)]
    remember(pipeline)
    other = make_pipeline(monorepo, tmp_path / "other-envs").model_copy(update={"name": "other"})
    (home() / "releases" / "other").mkdir()
    remember(other)
    (home() / "releases" / "broken").mkdir()
    (home() / "releases" / "broken" / "pipeline.json").write_text("{")  # left out, said in the log
    staging = env(pipeline, "staging")
    for made in r:
        staging.roll(made)
    backdate(staging.path, DAY)

    assert [p.name for p in janitor.known_pipelines()] == ["main", "other"]
    result = janitor.sweep(gc.Retention(rollbacks=1, built=1))

    assert names(home() / "releases" / "main") == {r[2].id, r[3].id, "pipeline.json"}
    assert result.removed["release"] == 2


def test_a_sweep_interval_of_zero_turns_the_janitor_off(monkeypatch):
    monkeypatch.setenv("AIRAGENT_GC_EVERY_SECONDS", "0")
    assert janitor.interval() is None
    monkeypatch.setenv("AIRAGENT_GC_EVERY_SECONDS", "90")
    assert janitor.interval() == timedelta(seconds=90)
    monkeypatch.delenv("AIRAGENT_GC_EVERY_SECONDS")
    assert janitor.interval() == janitor.EVERY


def test_full_validation_reports_and_dag_maps_are_kept_by_age_and_by_count():
    """A stage that finds either gone makes it again from the release, so they are only a cache."""
    for folder in (home() / "reports", home() / "validation-cache" / "commits"):
        folder.mkdir(parents=True)
        for i in range(6):
            (folder / f"{i:032x}.json").write_text("{}")
            when = time.time() - (8 * DAY if i == 0 else (6 - i) * 3600)  # 5 is the newest, an hour old
            os.utime(folder / f"{i:032x}.json", (when, when))

    result = gc.apply(gc.plan([], gc.Retention(reports_kept=3)))

    for folder in (home() / "reports", home() / "validation-cache" / "commits"):
        assert sorted(p.name[-6:] for p in folder.iterdir()) == ["3.json", "4.json", "5.json"]
    assert result.removed == {"report": 6}


def test_the_release_running_components_started_on_stays_after_many_dags_only_rolls(pipeline, monorepo):
    """Dags-only rolls restart nothing: the scheduler may still run on a release none of the last rolls name, and
    the next roll reads it to decide whether to restart. A component gone, its release goes too."""
    rt = runtime("a" * 16)
    r = [built(pipeline, monorepo, i, rt, hours_old=10 - i) for i in range(6)]
    staging = env(pipeline, "staging")
    for release in r:
        staging.roll(release)
    run = staging.path / "run"
    run.mkdir(parents=True, exist_ok=True)
    me = os.getpid()  # a live process stands in for the scheduler started on r[0]
    alive = Process(name="scheduler", pid=me, ticks=_start_ticks(me) or 0, started=datetime.now(UTC), release=r[0].id)
    (run / "scheduler.json").write_text(alive.model_dump_json())
    backdate(staging.path, DAY)

    gc.collect(pipeline, gc.Retention(rollbacks=1, built=1))
    assert r[0].id in names(staging.releases) and r[0].id in names(home() / "releases" / "main")

    (run / "scheduler.json").write_text(alive.model_copy(update={"ticks": alive.ticks + 1}).model_dump_json())
    gc.collect(pipeline, gc.Retention(rollbacks=1, built=1))
    assert r[0].id not in names(staging.releases)
