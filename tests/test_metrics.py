"""The worker's metrics endpoint, scraped by a real Prometheus: the Temporal SDK's series and airagent's, after a
train that succeeded and one whose soak failed and rolled back; no label holds a commit; every query of the Grafana
dashboard and of the README's five figures answers with data."""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from airagent import example
from airagent.config.analysis import Analysis
from airagent.models import TrainState
from tests import grafana
from tests.conftest import make_pipeline, start_train
from tests.devserver import WorkerProcess, agent, cli_env, dev_server, free_port, until  # noqa: F401
from tests.prometheus import Prometheus


@pytest.fixture
def check():
    """A team's HTTP check, asked with the release's commit: 500 for the commits in `bad`, 200 for the others. A
    `webhook` metric reading it fails on a bad commit only, so the soak blames that train."""
    bad: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            commit = parse_qs(urlparse(self.path).query).get("commit", [""])[0]
            self.send_response(500 if commit in bad else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/check", bad
    server.shutdown()


@pytest.fixture
def metrics_worker(cli_env, tmp_path, check):
    port = free_port()
    env = {**cli_env, "AIRAGENT_METRICS_PORT": str(port), "AIRAGENT_METRICS_HOST": "127.0.0.1"}
    env |= {"AIRAGENT_DORA_EVERY_SECONDS": "1", "CHECK_URL": check[0]}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    yield f"127.0.0.1:{port}", worker
    worker.stop()


@pytest.fixture
def prometheus(tmp_path, metrics_worker):
    server = Prometheus(tmp_path / "prometheus", [metrics_worker[0]])
    yield server
    server.stop()


async def test_the_endpoint_counts_a_good_and_a_rolled_back_train(
    agent, metrics_worker, prometheus, check, monorepo, tmp_path
):
    address, worker = metrics_worker
    since = time.time()
    pipeline = make_pipeline(monorepo, tmp_path / "envs")
    good = await agent.deploy(pipeline, monorepo.head.commit.hexsha)
    assert (await until(agent, good.train, lambda s: s.state.finished, since=good.asked)).state == TrainState.succeeded
    # Seen once before the next train adds to it, so rate() and the quantiles over it have an increase to show: a
    # busy host fails many one-second scrapes, and a series first seen at its last value never increased.
    prometheus.until('sum(airagent_lead_time_seconds_count{environment="staging"})', lambda v: v == 1)

    checkout = {"name": "checkout", "provider": "webhook", "url_env": "CHECK_URL"}
    pipeline.environments[0].soak, pipeline.environments[0].probe_interval = "6s", "1s"  # type: ignore[assignment]
    pipeline.environments[0].analysis = Analysis.model_validate({"metrics": [checkout]})
    sha = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=4)}, "fx", "finance")
    check[1].add(sha)
    bad = await start_train(agent, pipeline, sha)  # not through the conductor, which would try the held sha again
    status = await until(agent, bad.id, lambda s: s.state.finished)
    assert status.state == TrainState.rolled_back, status.reason

    assert f"metrics for Prometheus at http://{address}/metrics" in worker.log.read_text()
    prometheus.until('sum(airagent_trains_ended_total{state="rolled_back"})', lambda v: v == 1)
    assert prometheus.value('count({__name__=~"temporal_.+"})') > 10  # the SDK's own: slots, polls, latencies
    assert prometheus.value("sum(temporal_workflow_completed_total)") >= 1
    assert prometheus.query("sum by (state) (airagent_trains_ended_total)") == {
        "state=rolled_back": 1,
        "state=succeeded": 1,
    }
    assert prometheus.value("sum(airagent_trains_started_total)") == 2
    assert prometheus.query("sum by (environment) (airagent_deploys_total)") == {
        "environment=prod": 1,
        "environment=staging": 2,
    }
    assert prometheus.query("sum by (environment, reason) (airagent_rollbacks_total)") == {
        "environment=staging,reason=checkout": 1
    }
    assert prometheus.query("sum by (metric, verdict) (airagent_analysis_verdicts_total)") == {
        "metric=checkout,verdict=failed": 1
    }
    rolls = prometheus.query('sum by (environment, outcome) (airagent_stage_seconds_count{stage="roll"})')
    assert rolls == {"environment=prod,outcome=ok": 1, "environment=staging,outcome=ok": 2}
    assert prometheus.value('sum(airagent_stage_seconds_bucket{stage="soak",environment="staging",le="1"})') >= 1
    # The first soak is 0 s; the second lasts until its first failed reading.
    assert prometheus.value('sum(airagent_stage_seconds_count{stage="soak",environment="staging"})') == 2
    assert prometheus.value('sum(airagent_stage_seconds_sum{stage="soak",environment="staging"})') > 0
    assert prometheus.query("sum by (environment) (airagent_lead_time_seconds_count)") == {
        "environment=prod": 1,
        "environment=staging": 2,  # the bad release went live there too, before its soak
    }
    # The conductor reports what it holds (nothing: it did not run the bad train).
    assert prometheus.query("sum by (pipeline, workflow_type) (airagent_held_commits)") == {
        "pipeline=main,workflow_type=Conductor": 0
    }
    prometheus.until('sum(airagent_dora_deployments{environment="staging"})', lambda v: v == 2)
    assert prometheus.value('sum(airagent_dora_change_fail_rate{environment="staging"})') == 0.5
    assert prometheus.value('sum(airagent_dora_change_fail_rate{environment="prod"})') == 0

    # No series carries a commit, a release or a train id: labels are bounded.
    series = prometheus.api("series", **{"match[]": '{__name__=~".+",job="airagent"}'})
    assert isinstance(series, list) and series
    labels = {v for s in series for k, v in s.items() if k != "__name__"}
    assert not [v for v in labels if re.search(r"[0-9a-f]{12}", v) or "train/" in v], labels
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as r:
        exposition = r.read().decode()
    assert sha[:12] not in exposition and monorepo.head.commit.hexsha[:12] not in exposition

    # The rolled-back train's series are the newest: increase() and rate() need two scrapes of them.
    prometheus.until("min(count_over_time(airagent_rollbacks_total[10m]))", lambda v: v is not None and v >= 5)
    dashboard_and_readme_answer(prometheus, since, pipeline="main", environments=["staging", "prod"])


def dashboard_and_readme_answer(prometheus: Prometheus, since: float, pipeline: str, environments: list[str]) -> None:
    """Each variable offers the trains' pipeline and environments, and each panel's queries, with the variables
    set to them as Grafana would, give data; so do the README's five figures."""
    dashboard = grafana.load()
    chosen = {"pipeline": pipeline, "environment": "|".join(environments), "task_queue": ".*"}
    offered = {
        name: grafana.label_values(prometheus, grafana.substitute(v["query"]["query"], chosen))
        for name, v in grafana.variables(dashboard).items()
        if v["type"] == "query"
    }
    assert pipeline in offered["pipeline"] and set(environments) <= offered["environment"], offered
    assert offered["task_queue"], offered
    span = f"{math.ceil(time.time() - since) + 5}s"
    chosen |= {"__range": span, "__rate_interval": "1m", "__interval": "15s"}
    empty = [
        f"{panel['title']} {target['refId']}: {target['expr']}"
        for panel in grafana.panels(dashboard)
        for target in panel["targets"]
        if not grafana.has_data(
            prometheus,
            grafana.substitute(target["expr"], chosen),
            instant=target.get("instant", False),
            since=since,
        )
    ]
    assert not empty, "\n".join(["panels without data:", *empty])
    figures = grafana.readme_figures()
    assert len(figures) == 5, figures
    assert [q for q in figures if not grafana.has_data(prometheus, q, instant=True, since=since)] == []


def test_the_dashboard_is_grafana_json_on_one_data_source():
    dashboard = grafana.load()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert grafana.shape_problems(dashboard) == []
    found = grafana.variables(dashboard)
    assert found["datasource"]["type"] == "datasource" and found["datasource"]["query"] == "prometheus"
    for name in ("pipeline", "environment", "task_queue"):
        assert found[name]["query"]["query"].startswith("label_values("), found[name]
        assert found[name]["includeAll"] and found[name]["allValue"] == ".*"
    titles = {p["title"] for p in grafana.panels(dashboard)}
    assert {"Trains per hour by outcome", "Commits held back now", "Task slots available"} <= titles
    exprs = " ".join(t["expr"] for p in grafana.panels(dashboard) for t in p["targets"])
    for series in ("airagent_trains_ended_total", "airagent_dora_recovery_seconds", "temporal_worker_task_slots"):
        assert series in exprs
    # Every airagent panel follows the pipeline chosen; those with environments, the environment too.
    for panel in grafana.panels(dashboard):
        for target in panel["targets"]:
            if "airagent_" in target["expr"]:
                assert 'pipeline=~"$pipeline"' in target["expr"], target
            if re.search(r"airagent_(deploys|rollbacks|lead_time|stage|dora|analysis)", target["expr"]):
                assert 'environment=~"$environment' in target["expr"], target
