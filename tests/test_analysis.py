"""Soak analysis on recorded readings: conditions, limits, verdicts, and the outside providers for real."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from activities.airflow_api import AirflowApi, Credentials
from activities.analysis import judge, outside
from activities.analysis.airflow_samples import smoke
from airagent.config import EnvironmentSettings, PipelineDeclaration
from airagent.config.analysis import AirflowMetric, Analysis, JobMetric, WebhookMetric, holds
from airagent.models import Release
from airagent.models.analysis import Measurement, Phase
from tests.airflow_api import Replaying, serving

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def measured(phase: Phase, second: int = 0) -> Measurement:
    return Measurement(metric="health", phase=phase, value=str(phase), at=T0 + timedelta(seconds=second))


def run(metric, phases: list[Phase], final: bool = True):
    state = judge.start(metric)
    for i, phase in enumerate(phases):
        state = judge.advance(metric, state, measured(phase, i))
    return judge.conclude(state) if final else state


HEALTH = AirflowMetric(name="health", measure="health", failure_limit=1, consecutive_error_limit=2)


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("result < 0.1", "0.05", True),
        ("result < 0.1", "0.1", False),
        ("result <= 0.1", "0.1", True),
        ("result > 3", "4", True),
        ("result >= 3", "2.9", False),
        ("result == pass", "PASS", True),
        ("result != pass", "fail", True),
        ("result == 2", "2.0", True),
        ("result > 1 and result < 3", "2", True),
        ("result > 1 and result < 3", "3", False),
        ("result == fail or result > 5", "6", True),
        ("result < 5", "many", False),  # words have no order
    ],
)
def test_each_condition_operator(condition, result, expected):
    assert holds(condition, result) is expected


def test_a_condition_that_cannot_be_read_is_refused_naming_the_forms():
    with pytest.raises(ValidationError, match="is not a condition; write one like `result < 0.1`"):
        WebhookMetric(provider="webhook", name="w", url_env="X", success="value is low")


def test_one_stall_is_an_error_not_a_rollback():
    state = run(HEALTH, [Phase.successful, Phase.error, Phase.successful, Phase.successful])
    assert state.verdict == Phase.successful and state.errors == 1


def test_errors_in_a_row_beyond_the_limit_fail_the_metric_at_once():
    state = run(HEALTH, [Phase.successful, Phase.error, Phase.error, Phase.error], final=False)
    assert state.verdict == Phase.error
    assert judge.overall(Analysis(metrics=[HEALTH]), [state]) == Phase.failed


def test_errors_that_are_not_in_a_row_never_add_up():
    state = run(HEALTH, [Phase.error, Phase.error, Phase.successful] * 3)
    assert state.verdict == Phase.successful and state.errors == 6


def test_failures_beyond_the_failure_limit_fail_the_metric():
    assert run(HEALTH, [Phase.failed], final=False).verdict == Phase.running
    assert run(HEALTH, [Phase.failed, Phase.successful, Phase.failed], final=False).verdict == Phase.failed


def test_an_import_error_fails_at_once_by_default():
    imports = next(
        m for m in EnvironmentSettings(name="e", target=LOCAL).metrics().metrics if m.name == "import_errors"
    )
    state = judge.advance(imports, judge.start(imports), measured(Phase.failed))
    assert state.verdict == Phase.failed


def test_too_little_data_is_inconclusive_and_does_what_the_metric_says():
    for action, expected in [("continue", Phase.successful), ("pause", Phase.inconclusive), ("rollback", Phase.failed)]:
        metric = AirflowMetric(name="health", measure="changed_dags", inconclusive=action)
        state = run(metric, [Phase.inconclusive, Phase.error])
        assert state.verdict == Phase.inconclusive
        assert judge.overall(Analysis(metrics=[metric]), [state]) == expected, action


def test_a_metric_is_running_until_the_soak_ends():
    state = run(HEALTH, [Phase.successful], final=False)
    assert judge.overall(Analysis(metrics=[HEALTH]), [state]) == Phase.running
    assert judge.conclude(state).verdict == Phase.successful


def test_a_metric_is_read_on_its_own_interval():
    slow = HEALTH.model_copy(update={"interval": timedelta(seconds=30)})
    state = judge.advance(slow, judge.start(slow), measured(Phase.successful))
    assert not judge.due(slow, state, T0 + timedelta(seconds=10), timedelta(seconds=10))
    assert judge.due(slow, state, T0 + timedelta(seconds=30), timedelta(seconds=10))


def test_only_health_components_and_webhooks_are_environment_wide():
    wide = {m.name: judge.environment_wide(m) for m in EnvironmentSettings(name="e", target=LOCAL).metrics().metrics}
    assert wide == {"health": True, "components": True, "import_errors": False, "changed_dags": False}


LOCAL = {"type": "local", "path": "/tmp/analysis-env"}


def test_environments_share_an_analysis_by_name_and_an_unknown_name_is_named():
    shared = {"strict": {"metrics": [{"name": "h", "provider": "airflow", "measure": "health"}]}}
    pipeline = PipelineDeclaration(
        analyses=shared, environments=[{"name": "staging", "target": LOCAL, "analysis": "strict"}]
    )
    assert [m.name for m in pipeline.environments[0].metrics().metrics] == ["h"]
    with pytest.raises(
        ValidationError, match="environment staging: analysis 'lax' is not under `analyses` \\(strict\\)"
    ):
        PipelineDeclaration(analyses=shared, environments=[{"name": "staging", "target": LOCAL, "analysis": "lax"}])


def test_a_probes_block_still_works_as_metrics():
    env = EnvironmentSettings(
        name="e", target=LOCAL, probes={"min_failed_tasks": 3, "webhooks": [{"name": "synthetic", "url_env": "U"}]}
    )
    names = [m.name for m in env.metrics().metrics]
    assert names == ["health", "components", "import_errors", "changed_dags", "synthetic", "task_failure_rate"]


# --- outside providers, for real ------------------------------------------------------------------


@pytest.fixture
def check_server():
    """A team's check: answers what the test puts in `answers`, and records what it was asked."""
    answers: list[tuple[int, bytes]] = []
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            code, body = answers.pop(0)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/check", answers, asked
    server.shutdown()


RELEASE = Release(
    id="r1",
    commit="c" * 40,
    runtime_hash="h",
    runtime=sys.prefix,
    bundle="/",
    dag_folder="dags",
    plugins_folder="plugins",
)


def test_a_webhook_answers_pass_fail_inconclusive_or_a_number(check_server, monkeypatch):
    url, answers, asked = check_server
    monkeypatch.setenv("CHECK_URL", url)
    metric = WebhookMetric(provider="webhook", name="w", url_env="CHECK_URL")
    numeric = metric.model_copy(update={"success": "result < 0.1", "failure": "result >= 0.5"})
    answers += [(200, b'{"result": "pass"}'), (200, b'{"result": "fail"}'), (200, b'{"result": "inconclusive"}')]
    answers += [(503, b"down"), (200, b'{"result": 0.7}')]
    phases = [outside.webhook(metric, RELEASE).phase for _ in range(4)] + [outside.webhook(numeric, RELEASE).phase]
    assert phases == [Phase.successful, Phase.failed, Phase.inconclusive, Phase.failed, Phase.failed]
    assert "release=r1" in asked[0] and "commit=" + "c" * 40 in asked[0]


def test_a_webhook_that_does_not_answer_is_an_error(monkeypatch):
    monkeypatch.setenv("CHECK_URL", "http://127.0.0.1:9/never")
    reading = outside.webhook(WebhookMetric(provider="webhook", name="w", url_env="CHECK_URL"), RELEASE)
    assert reading.phase == Phase.error and "127.0.0.1" not in reading.detail


def test_a_job_reads_its_last_line_and_exit_code_in_the_sandbox(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AIRAGENT_TEST_SECRET", "s3cret")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    release = RELEASE.model_copy(update={"bundle": str(bundle)})
    script = "import os; print('checking'); print(os.environ.get('AIRAGENT_TEST_SECRET', 'no secret'))"
    reading = outside.job(JobMetric(provider="job", name="j", command=["python", "-c", script]), release, True)
    assert (reading.phase, reading.value) == (Phase.successful, "no secret")
    failing = JobMetric(provider="job", name="j", command=["python", "-c", "print(0.9); raise SystemExit(1)"])
    assert outside.job(failing, release, True).phase == Phase.failed
    rated = JobMetric(provider="job", name="j", command=["python", "-c", "print(0.9)"], failure="result > 0.5")
    assert outside.job(rated, release, True).phase == Phase.failed
    missing = JobMetric(provider="job", name="j", command=["no-such-program"])
    assert outside.job(missing, release, False).phase == Phase.error


def test_an_environment_read_back_from_history_keeps_its_analysis():
    env = EnvironmentSettings(name="e", target=LOCAL)
    again = EnvironmentSettings.model_validate_json(env.model_dump_json())
    assert [m.name for m in again.metrics().metrics] == [m.name for m in env.metrics().metrics]


def test_a_probes_block_beside_an_analysis_is_refused_naming_the_replacement():
    env = {
        "name": "staging",
        "target": LOCAL,
        "probes": {"webhooks": [{"name": "w", "url_env": "U"}]},
        "analysis": {"metrics": [{"name": "h", "provider": "airflow", "measure": "health"}]},
    }
    with pytest.raises(ValidationError, match="probes.webhooks is not read when `analysis:` is set"):
        PipelineDeclaration(environments=[env])
    PipelineDeclaration(environments=[{**env, "probes": {"timeout": "5s"}}])


def test_a_failure_in_the_last_round_within_the_limit_ends_inconclusive_not_successful():
    state = run(HEALTH, [Phase.successful, Phase.successful, Phase.failed])
    assert state.verdict == Phase.inconclusive
    assert run(HEALTH, [Phase.failed, Phase.successful]).verdict == Phase.successful


class BusyAirflow(Replaying):
    """Airflow's token endpoint and its trigger: `busy` answers 500 (SQLite locked) before taking the run, `ran`
    has this train's run already (409), any other DAG is unknown (404)."""

    posts: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self):
        if self.path == "/auth/token":
            return self.send_json({"access_token": "token"}, 201)
        dag_id = self.path.split("/")[4]
        run_id = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["dag_run_id"]
        self.posts.append((dag_id, run_id))
        if dag_id == "busy" and len([p for p in self.posts if p[0] == "busy"]) < 3:
            return self.send_json({"detail": "database is locked"}, 500)
        if dag_id == "ran":
            return self.send_json({"detail": "exists"}, 409)
        if dag_id == "busy":
            return self.send_json({"dag_run_id": run_id})
        self.send_json({"detail": f"DAG {dag_id} not found"}, 404)


def test_smoke_asks_a_busy_airflow_again_and_takes_a_run_it_already_started_as_started():
    BusyAirflow.posts = []
    with serving(BusyAirflow) as server:
        api = AirflowApi(f"http://127.0.0.1:{server.server_port}", Credentials("airagent", "pw"), timeout=5)
        with api:
            runs = smoke(api, ["busy", "ran", "gone"], train="train/main/0123456789ab", release="r-1", pause=0.01)

    mine = "airagent__train_main_0123456789ab"
    assert runs == {"busy": mine, "ran": mine, "gone": "error: 404 DAG gone not found"}
    assert [p[0] for p in BusyAirflow.posts] == ["busy"] * 3 + ["ran", "gone"]  # a 4xx is not asked again
    assert {p[1] for p in BusyAirflow.posts} == {mine}
