"""The changed-DAG judge's reading on a real Airflow 3: task instances told apart by the DAG version they ran on,
and smoke runs marked as airagent's; and that Airflow's own StatsD metrics reach a real Prometheus, labelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import pytest

from activities.airflow_api import AirflowApi
from activities.analysis.airflow_samples import samples, smoke
from activities.runtime import ensure_runtime
from activities.targets.local_airflow import LocalAirflow
from airagent.config import LocalTarget, Runtime
from airagent.config.targets import LocalMetrics
from airagent.devserver import binary
from tests.conftest import airflow_ports
from tests.prometheus import Prometheus
from tests.test_local_airflow import wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAG = "napper"
FINISHED = ("success", "failed")
HOUR = timedelta(hours=1)
# The changed task's nap, in seconds: well over the seconds a task takes to start here (measured 5 to 9, on top of a
# 1 s nap), so the two versions' durations never overlap.
SLOW = 10
# A DAG whose task sits in a task group, so its id has a dot: `group.task`.
GROUPED = dedent("""\
    from datetime import datetime
    from airflow.sdk import DAG, TaskGroup
    from airflow.providers.standard.operators.bash import BashOperator

    with DAG("grouped", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
        with TaskGroup("group"):
            BashOperator(task_id="task", bash_command="true")
    """)


def napper(seconds: int) -> str:
    return dedent(f"""\
        from datetime import datetime
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.bash import BashOperator

        with DAG("{DAG}", start_date=datetime(2024, 1, 1), schedule=None, catchup=False, tags=["naps"]):
            BashOperator(task_id="nap", bash_command="sleep {seconds}")
        """)


def run(api: AirflowApi, run_id: str) -> dict:
    return api._get(f"/api/v2/dags/{DAG}/dagRuns/{run_id}", {})


def finish(api: AirflowApi, run_ids: list[str]) -> None:
    wait_for(lambda: all(run(api, r)["state"] in FINISHED for r in run_ids), 120, f"runs {run_ids} to finish")


def stays_queued(api: AirflowApi, run_id: str, seconds: float) -> bool:
    """Whether the run is still queued after `seconds`, several of the scheduler's loops (a second each): a run it
    were to start would be running by then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if run(api, run_id)["state"] != "queued":
            return False
        time.sleep(0.5)
    return True


@dataclass
class Story:
    """What the module's Airflow went through: three runs on version 1, the roll at `since`, two on version 2."""

    api: AirflowApi
    started: datetime
    since: datetime
    paused_run: str
    paused_waits: bool
    old_runs: list[str]
    new_runs: list[str]
    smoked: dict[str, str]
    smoked_again: dict[str, str]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """One real Airflow whose DAGs folder is a plain folder the test edits: `current` links to it as it would to
    a release, and no release is ever rolled. It sends its StatsD metrics to the environment's exporter."""
    root = tmp_path_factory.mktemp("analysis")
    dags = root / "bundle" / "dags"
    dags.mkdir(parents=True)
    (dags / f"{DAG}.py").write_text(napper(1))
    (dags / "grouped.py").write_text(GROUPED)
    target = LocalTarget(
        path=root / "env",
        port=airflow_ports(6),
        drain_timeout="30s",
        live_timeout="90s",
        metrics=LocalMetrics(statsd=True),
    )
    target.path.mkdir()
    (target.path / "current").symlink_to(dags.parent)
    env = LocalAirflow("analysis", target)
    try:
        env.up(ensure_runtime(Runtime(), None)[1])
        yield env, dags
    finally:
        env.down()


@pytest.fixture(scope="module")
def story(airflow) -> Iterator[Story]:
    env, dags = airflow
    with env.api(timeout=60) as api:  # a loaded host can keep an answer waiting past the default
        started = datetime.now(UTC)
        wait_for(lambda: DAG in {d["dag_id"] for d in api.dags()}, 90, f"Airflow to serve {DAG}")
        assert api._get(f"/api/v2/dags/{DAG}", {})["is_paused"], "a new DAG starts paused"
        paused_run = api.trigger(DAG, {"why": "paused"}, "while paused")
        paused_waits = stays_queued(api, paused_run, seconds=6)
        api._send("PATCH", f"/api/v2/dags/{DAG}", json={"is_paused": False}).raise_for_status()
        old_runs = [paused_run] + [api.trigger(DAG, {}, f"old {i}") for i in range(2)]
        finish(api, old_runs)

        since = datetime.now(UTC)
        (dags / f"{DAG}.py").write_text(napper(SLOW))
        api.reparse(api._get(f"/api/v2/dags/{DAG}", {})["file_token"])
        wait_for(lambda: api.dag_versions(DAG) == [1, 2], 90, "Airflow to make version 2 of the changed DAG")
        smoked = smoke(api, [DAG, "no_such_dag"], train="train/main/0123456789ab", release="r-0123")
        again = smoke(api, [DAG], train="train/main/0123456789ab", release="r-0123")  # a retried activity
        new_runs = [api.trigger(DAG, {}, "new"), smoked[DAG]]
        finish(api, new_runs)
        yield Story(api, started, since, paused_run, paused_waits, old_runs, new_runs, smoked, again)


def test_samples_split_the_changed_dags_tasks_by_version_with_durations(story):
    got = samples(story.api, DAG, story.since, HOUR)

    assert got.dag_id == DAG and got.new_version == 2
    assert [t.state for t in got.new] == ["success"] * len(story.new_runs)
    assert [t.state for t in got.previous] == ["success"] * len(story.old_runs)
    assert {t.task_id for t in got.new + got.previous} == {"nap"}
    new = [t.duration or 0.0 for t in got.new]
    old = [t.duration or 0.0 for t in got.previous]
    # Each side's durations are its version's task: at least its sleep (a busy host adds start-up to both).
    assert min(new) >= SLOW and min(old) >= 1, (new, old)


def test_samples_are_bounded_and_the_previous_ones_within_the_history(story):
    one = samples(story.api, DAG, story.since, HOUR, limit=1)
    assert (len(one.new), len(one.previous)) == (1, 1)

    # Everything ran after `started`: nothing on version 1 ended in the hour before it.
    before = samples(story.api, DAG, story.started, HOUR)
    assert (len(before.new), before.previous) == (len(story.new_runs), [])


def test_finished_tasks_are_newest_first_within_the_window(story):
    everything = story.api.finished_tasks(DAG, versions=None)
    ends = [t["end_date"] for t in everything]
    assert len(everything) == len(story.old_runs + story.new_runs) and ends == sorted(ends, reverse=True)
    assert {t["dag_version"]["version_number"] for t in everything[: len(story.new_runs)]} == {2}

    since = story.api.finished_tasks(DAG, versions=None, ended_after=story.since)
    assert sorted(t["dag_run_id"] for t in since) == sorted(story.new_runs)
    until = story.api.finished_tasks(DAG, versions=[1, 2], ended_before=story.since)
    assert sorted(t["dag_run_id"] for t in until) == sorted(story.old_runs)
    assert story.api.finished_tasks(DAG, versions=[]) == []
    assert story.api.dag_versions("no_such_dag") == []


def test_a_paused_dags_triggered_run_waits_with_its_conf_and_note(story):
    assert story.paused_waits, "the scheduler starts no run of a paused DAG"
    first = run(story.api, story.paused_run)
    assert (first["conf"], first["note"], first["state"]) == ({"why": "paused"}, "while paused", "success")


def test_smoke_marks_its_runs_as_airagents_and_names_a_dag_it_cannot_run(story):
    smoked = run(story.api, story.smoked[DAG])
    assert smoked["conf"] == {"airagent": {"train": "train/main/0123456789ab", "release": "r-0123"}}
    assert smoked["note"] == "triggered by airagent for train train/main/0123456789ab (release r-0123)"
    assert smoked["run_type"] == "manual" and smoked["state"] == "success"
    assert story.smoked_again == {DAG: story.smoked[DAG]}, "asked again, the train's run is the one it started"
    error = story.smoked["no_such_dag"]
    assert error.startswith("error: 404") and "no_such_dag" in error, error


def test_the_dags_changed_since_the_roll_are_those_with_a_version_made_after_it(story):
    assert story.api.changed_since(story.since) == [DAG]
    assert story.api.changed_since(datetime.now(UTC)) == []


def test_smoke_tags_pick_the_dags_carrying_any_of_them(story):
    assert story.api.tagged(["naps", "reports"]) == {DAG}
    assert story.api.tagged(["reports"]) == set()


def test_airflows_statsd_metrics_reach_prometheus_labelled_by_dag_and_task_group_task(airflow, tmp_path):
    env, _ = airflow
    url = env.exporter.url
    assert url and env.exporter.alive()
    prometheus = Prometheus(tmp_path / "prometheus", [url.removeprefix("http://").removesuffix("/metrics")])
    try:
        with env.api(timeout=60) as api:
            wait_for(lambda: "grouped" in {d["dag_id"] for d in api.dags()}, 90, "Airflow to serve grouped")
            api._send("PATCH", "/api/v2/dags/grouped", json={"is_paused": False}).raise_for_status()
            run_id = api.trigger("grouped", {}, "metrics")
            path = f"/api/v2/dags/grouped/dagRuns/{run_id}"
            wait_for(lambda: api._get(path, {})["state"] in FINISHED, 120, "the grouped run to finish")
            assert api._get(path, {})["state"] == "success"

        finished = 'airflow_ti_finish_total{dag_id="grouped",task_id="group.task",state="success"}'
        assert prometheus.until(finished, lambda v: v == 1) == 1
        took = 'airflow_task_duration_seconds_count{dag_id="grouped",task_id="group.task"}'
        assert prometheus.until(took, lambda v: v == 1) == 1
        run = 'airflow_dagrun_duration_success_seconds_count{dag_id="grouped"}'
        assert prometheus.until(run, lambda v: v == 1) == 1
        assert prometheus.until("sum(airflow_scheduler_heartbeat_total)", lambda v: v is not None and v > 0)
        # Tags, not legacy names: no series names a DAG, and nothing Airflow sent was unreadable.
        names = prometheus.api("label/__name__/values")
        assert isinstance(names, list) and not [n for n in names if "grouped" in n or "napper" in n], names
        assert not prometheus.query('airagent_statsd_lines_total{outcome="malformed"} > 0')
    finally:
        prometheus.stop()


def test_env_up_and_status_name_the_metrics_url(airflow, tmp_path):
    env, _ = airflow
    config = tmp_path / "airagent.yaml"
    target = f"{{type: local, path: {env.target.path}, port: {env.target.port}, metrics: {{statsd: true}}}}"
    config.write_text(f"pipelines:\n  main:\n    repo: {tmp_path}\n    environments:\n")
    config.write_text(config.read_text() + f"      - name: {env.name}\n        target: {target}\n")
    airagent = [binary("airagent")]

    up = subprocess.run([*airagent, "env", "up", env.name, "-c", config], capture_output=True, text=True, timeout=120)
    status = subprocess.run(
        [*airagent, "env", "status", env.name, "-c", config, "--json"], capture_output=True, text=True, timeout=120
    )

    assert up.returncode == 0 and "already running; API" in up.stdout, up.stdout + up.stderr
    assert f"metrics for Prometheus at {env.exporter.url}" in up.stdout.replace("\n", "")
    assert json.loads(status.stdout)["metrics"] == {"url": env.exporter.url, "alive": True}

    # An exporter that died is started again by the next `env up`, the components left as they run.
    exporter = env.exporter.record()
    os.kill(exporter.pid, signal.SIGKILL)
    wait_for(lambda: not exporter.alive, 10, "the exporter gone")
    again = subprocess.run(
        [*airagent, "env", "up", env.name, "-c", config], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "started statsd-exporter" in again.stdout, again.stdout + again.stderr
    assert env.exporter.alive() and env.running()
