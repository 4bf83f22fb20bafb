"""A local environment running real Airflow 3, driven directly: up, dags-only and restart rolls, probes, down."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent

import httpx
import pytest

from activities.build import build
from activities.runtime import ensure_runtime
from activities.targets.base import NotLive
from activities.targets.local_airflow import LocalAirflow
from activities.targets.local_settings import airflow_home, component_env, ensure_secrets, migrate
from activities.validation.parse import parse_release
from airagent import example
from airagent.config import LocalTarget
from airagent.devserver import binary
from airagent.models import BuildInput, Release, RolloutMode
from tests.conftest import airflow_ports, make_pipeline

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SLEEPER = dedent("""\
    from datetime import datetime
    from airflow.sdk import DAG
    from airflow.providers.standard.operators.bash import BashOperator

    with DAG("sleeper", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
        BashOperator(task_id="nap", bash_command="sleep 12")
    """)


def target(path, **settings) -> LocalTarget:
    return LocalTarget(path=path, port=airflow_ports(), drain_timeout="60s", live_timeout="90s", **settings)


def built(pipeline, sha: str) -> tuple[Release, dict[str, list[str]]]:
    release = build(BuildInput(pipeline=pipeline, target=sha))
    return release, {f.path: f.dag_ids for f in parse_release(release).files}


def trigger(env: LocalAirflow, dag_id: str) -> str:
    with env.api(timeout=60) as api:  # a loaded host can keep an answer waiting past the default
        headers = api._auth()
        api.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=headers).raise_for_status()
        response = api.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None}, headers=headers)
        response.raise_for_status()
        return response.json()["dag_run_id"]


def task_state(env: LocalAirflow, dag_id: str, run_id: str, task_id: str) -> str | None:
    with env.api(timeout=60) as api:
        response = api.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", headers=api._auth())
        return response.json().get("state") if response.status_code == 200 else None


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds}s")


def parse_requests(env: LocalAirflow, since: datetime) -> int:
    """How many parse requests Airflow's audit log holds since `since` (it masks which file: tokens are secret)."""
    with env.api(timeout=60) as api:
        body = api._get("/api/v2/eventLogs", {"event": "reparse_dag_file", "after": since.isoformat()})
    return body["total_entries"]


def pids(env: LocalAirflow) -> dict[str, int]:
    return {name: p.pid for name, p in env.processes().items()}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One running environment for the module, with the example's head live."""
    root = tmp_path_factory.mktemp("airflow-env")
    repo = example.create(root / "repo", root / "envs")
    example.commit(repo, {"dags/platform/sleeper.py": SLEEPER}, "platform: a DAG that naps", "platform")
    pipeline = make_pipeline(repo, root / "envs")
    env = LocalAirflow("staging", target(root / "envs" / "staging"))
    _, runtime = ensure_runtime(pipeline.runtime, None)
    env.up(runtime)
    release, dags = built(pipeline, repo.head.commit.hexsha)
    env.roll(release, RolloutMode.restart, dags)
    yield env, repo, pipeline
    env.down()


@pytest.fixture(autouse=True)
def running(live):
    """Each test starts with every component running, whatever the test before it left."""
    env, _, _ = live
    if not env.running():
        env.up()


def test_a_database_is_migrated_once_per_runtime_and_again_once_it_is_gone(live, tmp_path):
    env, _, _ = live
    python = Path(env.files.live().runtime) / "bin" / "python"
    place = LocalTarget(path=tmp_path / "env", port=env.target.port)
    ensure_secrets(place)
    settings, home = component_env("scratch", place, python, None), airflow_home(place)

    assert migrate(python.with_name("airflow"), settings, home)
    assert not migrate(python.with_name("airflow"), settings, home)
    (home / "airflow.db").unlink()
    assert migrate(python.with_name("airflow"), settings, home) and (home / "airflow.db").is_file()


def test_up_is_found_by_a_new_driver_and_up_again_starts_nothing(live):
    env, _, _ = live
    again = LocalAirflow(env.name, env.target)  # as a restarted worker would see it
    assert again.running() and pids(again) == pids(env)
    assert again.up() == "already running"
    assert pids(again) == pids(env)
    assert all(r.ok for r in again.probe(again.files.live(), again.baseline())), again.probe(again.files.live(), None)


def test_dags_only_roll_is_live_without_restarting_anything(live):
    env, repo, pipeline = live
    before = pids(env)
    sha = example.commit(
        repo,
        {"dags/finance/fx_rates.py": example.dag_file("fx_rates_v2", tasks=2)},
        "finance: fx rates, second version",
        "finance",
    )
    release, dags = built(pipeline, sha)
    rolled = datetime.now(UTC)

    record, changed, detail = env.roll(release, RolloutMode.dags_only, dags)

    assert changed and record.live.id == release.id
    assert "nothing restarted" in detail and "1 re-parsed" in detail, detail
    # The file's DAG took a new id: its file is still the one Airflow knew, and is asked for by that.
    assert "parse asked for 1 file" in detail and parse_requests(env, rolled) == 1, detail
    assert pids(env) == before
    with env.api(timeout=60) as api:
        assert "fx_rates_v2" in {d["dag_id"] for d in api.dags()}


def test_a_new_dag_file_is_confirmed_once_the_dag_processor_lists_it(live):
    """Airflow cannot be asked to parse a file it has no DAG from: the roll waits for the folder's next listing."""
    env, repo, pipeline = live
    sha = example.commit(
        repo, {"dags/finance/fx_forwards.py": example.dag_file("fx_forwards")}, "finance: forward rates", "finance"
    )
    release, dags = built(pipeline, sha)
    rolled = datetime.now(UTC)

    _, _, detail = env.roll(release, RolloutMode.dags_only, dags)

    assert "1 re-parsed" in detail and "parse asked for 0 files" in detail, detail
    assert parse_requests(env, rolled) == 0
    with env.api(timeout=60) as api:
        served = {d["dag_id"]: d for d in api.dags()}
    assert served["fx_forwards"]["relative_fileloc"] == "finance/fx_forwards.py"


def test_restart_roll_drains_a_running_task_before_restarting(live):
    env, repo, pipeline = live
    run_id = trigger(env, "sleeper")
    wait_for(lambda: task_state(env, "sleeper", run_id, "nap") == "running", 90, "the nap task running")
    before = pids(env)
    sha = example.commit(
        repo,
        {"plugins/example_plugin.py": example.FILES["plugins/example_plugin.py"] + "# v2\n"},
        "platform: touch the plugin",
        "platform",
    )
    release, dags = built(pipeline, sha)

    _, _, detail = env.roll(release, RolloutMode.restart, dags)

    assert "drained 1 running task instance (sleeper.nap" in detail, detail
    assert task_state(env, "sleeper", run_id, "nap") == "success"
    after = pids(env)
    assert all(after[name] != before[name] for name in before), (before, after)
    assert {p.release for p in env.processes().values()} == {release.id}


def test_a_dags_only_roll_that_does_not_go_live_in_time_fails(live):
    env, repo, pipeline = live
    impatient = LocalAirflow(env.name, env.target.model_copy(update={"live_timeout": timedelta(seconds=3)}))
    sha = example.commit(
        repo,
        {"dags/finance/ledger_daily.py": example.dag_file("ledger_daily", tasks=2)},
        "finance: shorter ledger",
        "finance",
    )
    release, dags = built(pipeline, sha)
    dags["dags/finance/ledger_daily.py"].append("never_defined")  # a DAG Airflow will never serve

    with pytest.raises(NotLive, match=r"not live within 0:00:03: still waiting for .*never_defined \(not served\)"):
        impatient.roll(release, RolloutMode.dags_only, dags)


def test_api_answers_throughout_a_restart(live):
    env, repo, pipeline = live
    sha = example.commit(
        repo,
        {"config/airflow.cfg": example.FILES["config/airflow.cfg"] + "\n# tuned\n"},
        "platform: tune config",
        "platform",
    )
    release, dags = built(pipeline, sha)
    url = f"http://127.0.0.1:{env.target.port}/api/v2/monitor/health"
    answers: list[str] = []
    done = threading.Event()

    def poll():
        # Downtime is a refused request, an error answer, or a request dropped twice running; a slow answer, as a
        # host busy with other tests gives, is still an answer. A connection the old api-server closes or resets
        # unanswered as it stops is asked again at once on a new one, as HTTP clients and load balancers do for a GET.
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                try:
                    try:
                        answer = http.get(url)
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        answer = http.get(url)
                    answers.append(str(answer.status_code))
                except httpx.HTTPError as err:
                    answers.append(type(err).__name__)
                time.sleep(0.1)

    migrated = (env.home / "migrated").stat().st_mtime_ns
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        env.roll(release, RolloutMode.restart, dags)
    finally:
        done.set()
        poller.join()
    failed = [a for a in answers if a != "200"]
    assert len(answers) > 20 and not failed, f"{len(failed)} of {len(answers)} failed: {sorted(set(failed))}"
    assert (env.home / "migrated").stat().st_mtime_ns == migrated  # the same runtime: its schema was there


def test_a_killed_component_fails_the_components_probe(live):
    env, _, _ = live
    triggerer = env.processes()["triggerer"]
    os.kill(triggerer.pid, signal.SIGKILL)
    wait_for(lambda: not triggerer.alive, 10, "the triggerer gone")
    readings = {r.probe: r for r in env.probe(env.files.live(), env.baseline())}
    assert not readings["components"].ok and "triggerer" in readings["components"].reading
    assert not env.running()
    assert "started triggerer" == env.up()
    assert env.running()


def listening(env: LocalAirflow) -> list[str]:
    """The TCP addresses the environment's processes (each component's whole process group) listen on."""
    groups = {p.pid for p in env.components.records()}
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) in groups:
                pids.add(int(stat.parent.name))
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
    sockets = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in sockets if pids & {int(p) for p in re.findall(r"pid=(\d+)", line)}]


def test_every_port_listens_on_loopback_only(live):
    """Like the API, nothing of the environment answers from outside the host: no log server on every interface."""
    env, _, _ = live
    addresses = listening(env)
    assert f"127.0.0.1:{env.target.port}" in addresses
    assert all(a.startswith(("127.0.0.1:", "[::1]:")) for a in addresses), addresses


def test_cli_env_status_and_up_on_a_running_environment(live, tmp_path):
    env, repo, _ = live
    config = tmp_path / "airagent.yaml"
    config.write_text(
        dedent(f"""\
        pipelines:
          main:
            repo: {repo.working_tree_dir}
            environments:
              - name: staging
                target: {{type: local, path: {env.target.path}, port: {env.target.port}}}
        """)
    )
    airagent = [binary("airagent")]

    status = subprocess.run(
        [*airagent, "env", "status", "staging", "-c", config, "--json"], capture_output=True, text=True, timeout=120
    )
    up = subprocess.run([*airagent, "env", "up", "staging", "-c", config], capture_output=True, text=True, timeout=120)
    missing = subprocess.run([*airagent, "env", "up", "qa", "-c", config], capture_output=True, text=True, timeout=120)

    data = json.loads(status.stdout)
    assert status.returncode == 0 and data["running"] and data["live"] == env.files.live().id
    assert set(data["components"]) == {"scheduler", "dag-processor", "triggerer", "api-server"}
    assert data["health"]["scheduler"]["status"] == "healthy"
    assert up.returncode == 0 and "staging: already running" in up.stdout
    assert missing.returncode == 2 and "no environment 'qa'" in missing.stderr
