"""The `prometheus` soak provider against a real Prometheus scraping a tiny exporter this file serves: conditions
on real answers, the template variables choosing the series judged (and no DAG id escaping its string), no data,
a Prometheus down or refusing the query, the config's refusals, and a soak that rolls back on a query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from pydantic import ValidationError

from activities.analysis import judge
from activities.analysis.prometheus import Soak, measure
from airagent import example
from airagent.config import promql
from airagent.config.analysis import Analysis, PrometheusMetric
from airagent.config.errors import ConfigError
from airagent.config.loading import load
from airagent.models import TrainState
from airagent.models.analysis import Phase
from tests.conftest import make_pipeline, start_train
from tests.devserver import free_port
from tests.prometheus import Prometheus

SERIES = "airagent_test_error_rate"
WEIRD = "we\"ird'\\id.x"
# environment, release, dag_id: value
ERROR_RATES = {
    ("east", "r1", "etl"): 0.01,
    ("east", "r2", "etl"): 0.3,
    ("east", "r1", "load"): 0.02,
    ("west", "r1", "etl"): 0.5,
    ("west", "r1", "load"): 0.7,
    ("east", "r1", WEIRD): 0.04,
}


@pytest.fixture(scope="module")
def exporter():
    """A process's own series, as an exporter would serve them: one gauge labelled as airagent's variables."""
    registry = CollectorRegistry()
    gauge = Gauge(SERIES, "errors per run", ["environment", "release", "dag_id"], registry=registry)
    for labels, value in ERROR_RATES.items():
        gauge.labels(*labels).set(value)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}", gauge
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, exporter):
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), [exporter[0]])
    server.until(f"count({SERIES})", lambda n: n == len(ERROR_RATES), timeout=60)
    yield server
    server.stop()


def metric(prometheus: Prometheus, query: str, **settings) -> PrometheusMetric:
    conditions = {"success": "result < 0.1", "failure": "result >= 0.1"}
    return PrometheusMetric(
        provider="prometheus", name="errors", address=prometheus.url, query=query, **(conditions | settings)
    )


def soak(environment: str = "east", release: str = "r1") -> Soak:
    return Soak(environment, release, datetime.now(UTC) - timedelta(seconds=30))


def test_a_query_is_held_to_its_conditions_and_the_variables_choose_the_series(prometheus):
    by_env = metric(prometheus, f'max({SERIES}{{environment="{{{{environment}}}}", release="{{{{release}}}}"}})')
    east = measure(by_env, soak("east"))
    assert (east.phase, east.value) == (Phase.successful, "0.04")
    assert measure(by_env, soak("east", "r2")).phase == Phase.failed
    failed = measure(by_env, soak("west"))
    assert (failed.phase, failed.value, failed.detail) == (Phase.failed, "0.7", "met result >= 0.1")

    # Several series: each judged, and those failing are named by their labels.
    each = metric(prometheus, f'{SERIES}{{environment="{{{{environment}}}}"}}')
    both = measure(each, soak("west"))
    assert both.phase == Phase.failed and both.value == "2 of 2 series failed"
    assert both.detail == 'met result >= 0.1: {dag_id="etl"} = 0.5; {dag_id="load"} = 0.7'
    assert measure(each, soak("east")).value == "1 of 4 series failed"  # release r2's


def test_a_query_naming_dag_id_is_asked_for_each_changed_dag_and_names_the_worse(prometheus):
    per_dag = metric(
        prometheus,
        f'{SERIES}{{environment="west", dag_id="{{{{dag_id}}}}"}}',
        failure="result > 0.6",
        success="result <= 0.6",
    )
    reading = measure(per_dag, soak(), ["etl", "load"])
    assert (reading.phase, reading.dag_ids) == (Phase.failed, ["load"]), reading
    assert measure(per_dag, soak(), ["etl"]).phase == Phase.successful
    assert measure(per_dag, soak(), []).value == "no changed DAGs"
    assert measure(per_dag, soak(), None).phase == Phase.inconclusive  # no Airflow to say which changed
    # A changed DAG with no series has told nothing yet.
    assert measure(per_dag, soak(), ["etl", "never_ran"]).phase == Phase.inconclusive


@pytest.mark.parametrize(
    "hostile",
    [
        'etl"} or vector(1) or up{job="',
        "etl'} or vector(1) or up{job='",
        "etl\\",
        ".*",
        "etl\n} or vector(1)",
    ],
)
def test_no_dag_id_can_leave_its_quoted_string(prometheus, hostile):
    for query in (
        f'{SERIES}{{dag_id="{{{{dag_id}}}}"}} > 0',
        f"{SERIES}{{dag_id='{{{{dag_id}}}}'}} > 0",
        f'{SERIES}{{dag_id=~"{{{{dag_id}}}}"}} > 0',
    ):
        # Escaped, it is a label value no series has: no data. Let out, `vector(1)` or `.*` would answer.
        reading = measure(metric(prometheus, query, failure="result > 0"), soak(), [hostile])
        assert reading.phase == Phase.inconclusive, (query, hostile, reading)
        assert reading.value == "no data"


def test_a_dag_id_with_quotes_and_dots_selects_its_own_series_exactly(prometheus):
    for query in (f'{SERIES}{{dag_id="{{{{dag_id}}}}"}}', f"{SERIES}{{dag_id=~'{{{{dag_id}}}}'}}"):
        reading = measure(metric(prometheus, query), soak(), [WEIRD])
        assert (reading.phase, reading.value) == (Phase.successful, "0.04"), (query, reading)


def test_no_data_and_nan_are_inconclusive(prometheus):
    assert measure(metric(prometheus, f'{SERIES}{{environment="nowhere"}}'), soak()).value == "no data"
    assert measure(metric(prometheus, f'{SERIES}{{environment="nowhere"}}'), soak()).phase == Phase.inconclusive
    nan = measure(metric(prometheus, "0 / 0"), soak())
    assert (nan.phase, nan.value) == (Phase.inconclusive, "NaN")
    # Where no series means none, the query says so.
    zero = measure(metric(prometheus, f'sum({SERIES}{{environment="nowhere"}}) or vector(0)'), soak())
    assert (zero.phase, zero.value) == (Phase.successful, "0")


def test_the_soak_start_and_duration_reach_the_query(prometheus):
    started = Soak("east", "r1", datetime.now(UTC) - timedelta(seconds=30))
    since = metric(prometheus, "time() - {{soak_start}}", success="result > 25 and result < 90", failure=None)
    assert measure(since, started).phase == Phase.successful
    # A range over the soak so far: one step a second.
    steps = metric(prometheus, "count_over_time(vector(1)[{{soak_duration}}:1s])", success="result > 25", failure=None)
    assert measure(steps, started).phase == Phase.successful


def test_a_malformed_query_is_an_error_naming_prometheus_message(prometheus):
    broken = measure(metric(prometheus, f"sum({SERIES}"), soak())
    assert broken.phase == Phase.error and "bad_data" in broken.detail and "parse error" in broken.detail
    ranged = measure(metric(prometheus, f"{SERIES}[1m]"), soak())
    assert ranged.phase == Phase.error and "answers a matrix" in ranged.detail


def test_a_prometheus_down_is_an_error_and_fails_only_past_the_consecutive_error_limit(tmp_path, exporter, monkeypatch):
    server = Prometheus(tmp_path / "prometheus", [exporter[0]])
    monkeypatch.setenv("AIRAGENT_TEST_PROMETHEUS", server.url)
    try:
        server.until(f"count({SERIES})", lambda n: n == len(ERROR_RATES), timeout=60)
        limited = PrometheusMetric(
            provider="prometheus",
            name="errors",
            address_env="AIRAGENT_TEST_PROMETHEUS",
            query=f'max({SERIES}{{environment="east", release="r1"}})',
            success="result < 0.1",
            consecutive_error_limit=2,
        )
        state = judge.advance(limited, judge.start(limited), measure(limited, soak()))
        assert state.last[-1].phase == Phase.successful
    finally:
        server.stop()

    down = measure(limited, soak())
    assert down.phase == Phase.error and "did not answer" in down.detail
    assert server.url.split("//")[1] not in down.detail  # the address may carry a login: never shown
    for _ in range(2):
        state = judge.advance(limited, state, measure(limited, soak()))
        assert state.verdict == Phase.running
    state = judge.advance(limited, state, measure(limited, soak()))
    assert state.verdict == Phase.error
    assert judge.failed(Analysis(metrics=[limited]), [state]) == [limited]

    monkeypatch.delenv("AIRAGENT_TEST_PROMETHEUS")
    unset = measure(limited, soak())
    assert unset.phase == Phase.error and "AIRAGENT_TEST_PROMETHEUS is not set on the worker" in unset.detail


def test_only_a_query_of_the_whole_environment_is_confirmed_on_the_previous_release():
    def wide(query: str) -> bool:
        settings = {"success": "result < 1", "address": "http://p:9090"}
        return judge.environment_wide(PrometheusMetric(provider="prometheus", name="m", query=query, **settings))

    assert wide('sum(rate(errors_total{environment="{{environment}}"}[1m]))')
    assert not wide('errors{release="{{release}}"}')
    assert not wide('errors{dag_id="{{dag_id}}"}')
    assert not wide("increase(errors_total[{{soak_duration}}])")


def test_the_config_refuses_unknown_variables_misplaced_values_and_incomplete_metrics():
    base = {"provider": "prometheus", "name": "m", "address": "http://p:9090", "success": "result < 1"}
    with pytest.raises(
        ValidationError,
        match=r"query\n.*\{\{dag\}\} is not a template variable; use environment, "
        "release, dag_id, soak_start, soak_duration",
    ):
        PrometheusMetric.model_validate({**base, "query": 'x{dag_id="{{dag}}"}'})
    with pytest.raises(
        ValidationError,
        match=r"must stand inside a double- or single-quoted label value, like "
        r'dag_id="\{\{dag_id\}\}"',
    ):
        PrometheusMetric.model_validate({**base, "query": "x{dag_id=`{{dag_id}}`}"})
    with pytest.raises(ValidationError, match="give a success and/or a failure condition"):
        PrometheusMetric.model_validate({**base, "query": "up", "success": None})
    with pytest.raises(ValidationError, match="in address, or the variable holding it in address_env"):
        PrometheusMetric.model_validate({**base, "query": "up", "address_env": "PROMETHEUS_URL"})
    # A `#` comment is PromQL's: nothing in it is a variable.
    PrometheusMetric.model_validate({**base, "query": "up  # per {{whatever}}"})


def test_loading_names_the_query_its_line_and_the_variables_allowed(tmp_path: Path):
    config = tmp_path / "airagent.yaml"
    config.write_text(
        f"""\
pipelines:
  main:
    repo: {tmp_path}
    environments:
      - name: staging
        target: {{type: local, path: {tmp_path / "staging"}}}
        analysis:
          metrics:
            - name: errors
              provider: prometheus
              address: http://prometheus:9090
              query: 'errors{{dag_id="{{{{dag}}}}"}}'
              failure: "result > 1"
              querry: up
"""
    )
    with pytest.raises(ConfigError) as refused:
        load(config)
    assert str(refused.value).splitlines() == [
        f"{config}:12: pipelines.main.environments.0.analysis.metrics.0.query: Value error, {{{{dag}}}} is not a "
        "template variable; use environment, release, dag_id, soak_start, soak_duration",
        f"{config}:14: pipelines.main.environments.0.analysis.metrics.0.querry: Extra inputs are not permitted; "
        "did you mean 'query'? (see `airagent config schema`)",
    ]


def test_a_template_knows_which_string_each_variable_stands_in():
    query = 'x{a="say \\"{{dag_id}}", b=~\'{{release}}\'}[{{soak_duration}}] # {{environment}}'
    assert promql.names(query) == {"dag_id", "release", "soak_duration"}  # nothing in the comment
    rendered = promql.render(query, {"dag_id": 'a"b', "release": "r.1'", "soak_duration": "5s"})
    assert rendered == 'x{a="say \\"a\\"b", b=~\'r\\\\.1\\\'\'}[5s] # {{environment}}'


def test_loading_refuses_a_prometheus_address_with_a_password_without_showing_it(tmp_path: Path):
    config = tmp_path / "airagent.yaml"
    config.write_text(
        f"""\
pipelines:
  main:
    repo: {tmp_path}
    environments:
      - name: staging
        target: {{type: local, path: {tmp_path / "staging"}}}
        analysis:
          metrics:
            - name: errors
              provider: prometheus
              address: http://grafana:s3cretpw@prometheus:9090
              query: up
              failure: "result < 1"
"""
    )
    with pytest.raises(ConfigError) as refused:
        load(config)
    message = str(refused.value)
    assert "environments.0.analysis.metrics.0.address: the URL carries a password" in message
    assert "address_env" in message and "s3cretpw" not in message

    config.write_text(
        config.read_text().replace("address: http://grafana:s3cretpw@prometheus:9090", "address_env: a-b")
    )
    with pytest.raises(ConfigError, match="metrics.0.address_env: not the name of an environment variable"):
        load(config)
    # A shared analysis is checked where it is written, and so is a webhook's variable.
    config.write_text(
        f"""\
pipelines:
  main:
    repo: {tmp_path}
    analyses:
      strict:
        metrics:
          - {{name: hook, provider: webhook, url_env: "https://hooks.example/check"}}
    environments:
      - {{name: staging, target: {{type: local, path: {tmp_path / "staging"}}}, analysis: strict}}
"""
    )
    with pytest.raises(ConfigError, match="analyses.strict.metrics.0.url_env: not the name of an environment var"):
        load(config)


async def test_a_soak_rolls_back_when_the_query_crosses_its_failure_condition(
    agent, drive, monorepo, tmp_path, prometheus, exporter
):
    _, gauge = exporter
    query = f'max_over_time({SERIES}{{environment="{{{{environment}}}}", dag_id="soak"}}[{{{{soak_duration}}}}])'
    errors = metric(prometheus, query, failure="result > 0.1", success="result <= 0.1")
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30s", environments=("staging",))
    pipeline.environments[0].analysis = Analysis(metrics=[errors])
    gauge.labels("staging", "any", "soak").set(0.0)
    prometheus.until(f'{SERIES}{{environment="staging"}}', lambda v: v == 0.0, timeout=60)

    first = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    assert first.state == TrainState.succeeded, first.reason

    gauge.labels("staging", "any", "soak").set(0.4)
    prometheus.until(f'{SERIES}{{environment="staging"}}', lambda v: v == 0.4, timeout=60)
    sha = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance")
    second = await drive.finish((await start_train(agent, pipeline, sha)).id)

    assert second.state == TrainState.rolled_back, second.reason
    assert "errors" in second.reason and "0.4" in second.reason and "result > 0.1" in second.reason
    assert second.environment_status("staging").live == first.release
