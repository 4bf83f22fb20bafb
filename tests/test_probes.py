"""Probe verdicts on answers recorded from a real Airflow 3.3 api-server, and on broken, slow and malformed ones.

The recordings in tests/airflow_api/ were taken from the demo's staging environment. The
API-level tests replay them over real HTTP from a small server that can also stall,
garble or refuse, so the client code runs exactly as against Airflow.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from activities import probes
from activities.airflow_api import AirflowApi, Credentials
from activities.targets.components import Process, _start_ticks
from airagent.config import Probes, WebhookProbe
from airagent.models import Baseline, Release
from tests.airflow_api import Replaying, recorded, serving


def baseline(**fields) -> Baseline:
    return Baseline(at=datetime.now(UTC) - timedelta(minutes=1), **fields)


# --- verdicts on recorded answers ---------------------------------------------------------


def test_health_reads_each_part_of_the_json_not_the_status_code():
    assert probes.health(recorded("health")).ok
    down = probes.health(recorded("health_triggerer_down"))  # Airflow answered 200 for this
    assert not down.ok and "triggerer unhealthy" in down.reading and "scheduler healthy" in down.reading


@pytest.mark.parametrize(
    "answer, seen",
    [
        (["not", "a", "mapping"], "malformed answer"),
        ({"metadatabase": {"status": "healthy"}}, "scheduler missing"),
        ({**recorded("health"), "dag_processor": {"status": None}}, "dag_processor missing"),
        ({**recorded("health"), "scheduler": "healthy"}, "scheduler missing"),
    ],
)
def test_malformed_health_answers_fail_with_what_was_wrong(answer, seen):
    verdict = probes.health(answer)
    assert not verdict.ok and seen in verdict.reading


def test_only_import_errors_new_since_the_roll_fail():
    errors = recorded("import_errors_one")["import_errors"]
    new = probes.import_errors(errors, baseline())
    assert not new.ok and "zz_broken.py" in new.reading and "ModuleNotFoundError" in new.reading
    assert probes.import_errors(errors, baseline(import_errors=["zz_broken.py"])).ok
    assert probes.import_errors(recorded("import_errors")["import_errors"], baseline()).ok


def test_failure_rate_against_the_rate_before_the_roll():
    failed = recorded("task_instances_failed")["total_entries"]
    finished = recorded("task_instances_finished")["total_entries"]
    settings = Probes(failure_rate_tolerance=0.1)
    assert failed and finished > failed
    verdict = probes.failure_rate(failed, finished, baseline(), settings, dags=["orders_feed_check"])
    assert not verdict.ok and f"{failed} of {finished} task instances failed" in verdict.reading
    assert verdict.dag_ids == ["orders_feed_check"]  # what a regression is traced from
    assert "before the roll 0%" in verdict.threshold
    # The same share failing before the roll is no worse.
    assert probes.failure_rate(failed, finished, baseline(failed=failed, finished=finished), settings).ok
    assert probes.failure_rate(0, 0, baseline(), settings).ok
    assert probes.failure_rate(1, 1, baseline(), Probes(min_failed_tasks=2)).ok


def test_components_fail_when_one_is_gone_or_its_pid_was_reused():
    me = Process(name="scheduler", pid=os.getpid(), ticks=_start_ticks(os.getpid()), started=datetime.now(UTC))
    reused = me.model_copy(update={"name": "triggerer", "ticks": me.ticks - 1})
    verdict = probes.components({"scheduler": me, "triggerer": reused}, ["scheduler", "triggerer", "api-server"])
    assert not verdict.ok
    assert "not running: triggerer, api-server" in verdict.reading and f"scheduler {os.getpid()}" in verdict.reading
    assert probes.components({"scheduler": me}, ["scheduler"]).ok


# --- over HTTP: slow, garbled and refusing answers ------------------------------------------


class Replay(Replaying):
    """Serves the recordings by path; `mode` makes every answer slow, garbled, failing or refused."""

    mode = "ok"
    stale: ClassVar[set[str]] = set()  # DAGs Airflow serves as stale: their file is gone
    routes: ClassVar[dict[str, str]] = {
        "/api/v2/monitor/health": "health",
        "/api/v2/importErrors": "import_errors_one",
        "/api/v2/dags": "dags",
    }

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.mode == "refuse" or body != {"username": "airagent", "password": "s3cret"}:
            return self.send_json({"detail": "Invalid credentials"}, 401)
        self.send_json({"access_token": "token"}, 201)

    def do_GET(self):
        url = urlparse(self.path)
        if self.mode == "slow":
            time.sleep(1.5)
        if self.mode == "garbled":
            return self.send_json(b"<html>proxy error</html>")
        if self.mode == "error":
            return self.send_json({"detail": "unavailable"}, 503)
        if url.path != "/api/v2/monitor/health" and self.headers.get("Authorization") != "Bearer token":
            return self.send_json({"detail": "Not authenticated"}, 401)
        if url.path.endswith("/taskInstances"):
            states = parse_qs(url.query)["state"]
            return self.send_json(
                recorded("task_instances_failed" if states == ["failed"] else "task_instances_finished")
            )
        if url.path.startswith("/api/v2/dags/"):
            dag_id = url.path.rsplit("/", 1)[1]
            return self.send_json({"dag_id": dag_id, "is_stale": dag_id in self.stale})
        self.send_json(recorded(self.routes[url.path]))


@pytest.fixture
def airflow():
    with serving(Replay) as server:
        yield server
    Replay.mode, Replay.stale = "ok", set()


def api(server, password: str = "s3cret") -> AirflowApi:
    return AirflowApi(f"http://127.0.0.1:{server.server_port}", Credentials("airagent", password), timeout=0.5)


def test_recorded_answers_over_http(airflow):
    with api(airflow) as client:
        readings = {r.probe: r for r in probes.airflow_probes(client, baseline(), Probes())}
    assert readings["health"].ok
    assert not readings["import_errors"].ok and "zz_broken.py" in readings["import_errors"].reading
    assert not readings["task_failure_rate"].ok


def test_failures_of_a_dag_no_longer_deployed_are_left_out_of_the_rate(airflow):
    """After a rollback took a DAG's file away, a run of it already under way can still fail: not this release's."""
    Replay.stale = {"orders_feed_check"}
    with api(airflow) as client:
        verdict = {r.probe: r for r in probes.airflow_probes(client, baseline(), Probes())}["task_failure_rate"]
    assert verdict.ok and "0 of 0" in verdict.reading and "no longer deployed: orders_feed_check" in verdict.reading
    assert verdict.dag_ids == []


@pytest.mark.parametrize(
    "mode, seen",
    [
        ("slow", "no answer within the timeout"),
        ("garbled", "malformed answer"),
        ("error", "HTTP 503 from /api/v2/monitor/health"),
    ],
)
def test_slow_garbled_and_failing_answers_are_failing_readings_not_crashes(airflow, mode, seen):
    Replay.mode = mode
    with api(airflow) as client:
        readings = probes.airflow_probes(client, baseline(), Probes())
    assert [r.probe for r in readings] == ["health", "import_errors", "task_failure_rate"]
    assert all(not r.ok for r in readings)
    assert seen in readings[0].reading


def test_refused_credentials_name_the_user_and_never_the_password(airflow):
    with api(airflow, password="wrong-password") as client:
        readings = probes.airflow_probes(client, baseline(), Probes())
    refused = readings[1]
    assert not refused.ok and "refused airagent's credentials (user 'airagent')" in refused.reading
    assert all("wrong-password" not in r.model_dump_json() for r in readings)
    assert "wrong-password" not in repr(Credentials("airagent", "wrong-password"))


def test_nothing_listening_is_a_clear_failing_reading():
    client = AirflowApi("http://127.0.0.1:9", Credentials("airagent", "x"), timeout=0.5)
    with client:
        readings = probes.airflow_probes(client, baseline(), Probes())
    assert "cannot reach the api-server" in readings[0].reading


SMOKE = WebhookProbe(name="smoke", url_env="AIRAGENT_CHECK_URL")
RELEASE = Release(
    id="abc-123",
    commit="a" * 40,
    runtime_hash="h",
    runtime="/r",
    bundle="/b",
    dag_folder="dags",
    plugins_folder="plugins",
)


@pytest.mark.parametrize(
    "mode, ok, seen",
    [("ok", True, "HTTP 200"), ("error", False, "HTTP 503"), ("slow", False, "no answer (ReadTimeout)")],
)
def test_a_webhook_probe_is_healthy_on_2xx_and_never_shows_its_url(airflow, monkeypatch, mode, ok, seen):
    Replay.mode = mode
    url = f"http://127.0.0.1:{airflow.server_port}/api/v2/monitor/health?token=s3cret-token"
    monkeypatch.setenv("AIRAGENT_CHECK_URL", url)
    reading = probes.webhook(SMOKE, RELEASE, timeout=0.5)
    assert (reading.probe, reading.ok, reading.reading) == ("smoke", ok, seen)
    assert "s3cret-token" not in reading.model_dump_json()


def test_a_webhook_probe_without_its_url_on_the_worker_fails_naming_the_variable(monkeypatch):
    monkeypatch.delenv("AIRAGENT_CHECK_URL", raising=False)
    reading = probes.webhook(SMOKE, RELEASE, timeout=0.5)
    assert not reading.ok and "AIRAGENT_CHECK_URL is not set on the worker" in reading.reading
