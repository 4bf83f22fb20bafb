"""The local environment's StatsD exporter: the line parser and the series it makes, on lines as Airflow 3.3 sends
them with InfluxDB tags (recorded from a real scheduler and task runner), and the exporter as a process."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from activities.targets.local_metrics import statsd_settings
from activities.targets.statsd_exporter import BUCKETS, Sample, Store, parse
from airagent.config import LocalTarget
from tests.devserver import free_port

# What Airflow 3.3 sent with statsd_influxdb_enabled and legacy_names_on = False (one datagram per line).
RECORDED = [
    "airflow.ti.start,dag_id=reports.daily,task_id=extract.orders:1|c",
    "airflow.ti.finish,dag_id=reports.daily,task_id=extract.orders,state=success:1|c",
    "airflow.ti_successes,dag_id=reports.daily,task_id=extract.orders:1|c",
    "airflow.operator_successes,dag_id=reports.daily,task_id=extract.orders,operator_name=BashOperator:1|c",
    "airflow.task.duration,dag_id=reports.daily,task_id=extract.orders:1520.4|ms",
    "airflow.dagrun.duration.success,dag_id=reports.daily,run_type=manual:4210|ms",
    "airflow.dag_processing.last_duration,bundle_name=dags-folder,file_name=daily:84.2|ms",
    "airflow.scheduler_heartbeat:1|c",
    "airflow.executor.open_slots,executor_class_name=LocalExecutor:32|g",
    "airflow.pool.open_slots,pool_name=default_pool:128|g",
]


def exposition(store: Store) -> dict[str, float]:
    """The store's series as Prometheus' own parser reads them back: {'name{label="value",...}': value}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(store)
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}"] = s.value
    return found


def fed(*lines: str) -> dict[str, float]:
    store = Store()
    for line in lines:
        store.receive(line.encode())
    return exposition(store)


def test_a_tagged_line_keeps_a_task_group_task_id_whole():
    sample = parse("airflow.ti.finish,dag_id=reports.daily,task_id=extract.orders,state=success:1|c")
    assert sample == Sample(
        "airflow.ti.finish",
        "c",
        1.0,
        tags=(("dag_id", "reports.daily"), ("task_id", "extract.orders"), ("state", "success")),
    )


def test_sample_rates_gauge_deltas_and_dogstatsd_tags_are_read():
    assert parse("airflow.scheduler_heartbeat:1|c|@0.25").rate == 0.25
    assert parse("airflow.dag_processing.processes:+2|g").delta and not parse("airflow.x:2|g").delta
    assert parse("airflow.x:-2|g").value == -2
    assert parse("airflow.ti.finish:1|c|#dag_id:d,task_id:g.t").tags == (("dag_id", "d"), ("task_id", "g.t"))


@pytest.mark.parametrize(
    "line",
    [
        "airflow.x",
        "airflow.x:1",
        "airflow.x:one|c",
        "airflow.x:1|s",
        "airflow.x:1|c|@0",
        "airflow.x,dag_id:1|c",
        ":1|c",
    ],
)
def test_a_malformed_line_is_refused_with_why(line):
    with pytest.raises(ValueError):
        parse(line)


def test_recorded_airflow_lines_become_labelled_series():
    got = fed(*RECORDED)

    assert got['airflow_ti_finish_total{dag_id="reports.daily",state="success",task_id="extract.orders"}'] == 1
    assert got['airflow_ti_start_total{dag_id="reports.daily",task_id="extract.orders"}'] == 1
    assert got["airflow_scheduler_heartbeat_total{}"] == 1
    assert got['airflow_executor_open_slots{executor_class_name="LocalExecutor"}'] == 32
    assert got['airflow_pool_open_slots{pool_name="default_pool"}'] == 128
    # Timers are histograms in seconds.
    duration = 'airflow_task_duration_seconds_{}{{dag_id="reports.daily",task_id="extract.orders"}}'
    assert got[duration.format("count")] == 1 and got[duration.format("sum")] == pytest.approx(1.5204)
    bucket = 'airflow_task_duration_seconds_bucket{{dag_id="reports.daily",le="{}",task_id="extract.orders"}}'
    assert (got[bucket.format("1.0")], got[bucket.format("2.5")], got[bucket.format("+Inf")]) == (0, 1, 1)
    assert got['airflow_dagrun_duration_success_seconds_sum{dag_id="reports.daily",run_type="manual"}'] == 4.21
    assert got['airagent_statsd_lines_total{outcome="exported"}'] == len(RECORDED)


def test_counters_add_up_scaled_by_their_sample_rate():
    got = fed("airflow.ti_failures,dag_id=d,task_id=t:1|c", "airflow.ti_failures,dag_id=d,task_id=t:2|c|@0.5")
    assert got['airflow_ti_failures_total{dag_id="d",task_id="t"}'] == 5
    timed = fed("airflow.task.duration,dag_id=d,task_id=t:3000|ms|@0.5")
    assert timed['airflow_task_duration_seconds_count{dag_id="d",task_id="t"}'] == 2
    assert timed['airflow_task_duration_seconds_sum{dag_id="d",task_id="t"}'] == 6


def test_gauges_are_set_or_moved_and_a_negative_value_is_set_through_zero():
    moved = fed("airflow.triggers.running:3|g", "airflow.triggers.running:+2|g", "airflow.triggers.running:-1|g")
    assert moved["airflow_triggers_running{}"] == 4
    # The statsd client sends a negative value that is no delta as `0|g` then `-5|g`, in one datagram.
    store = Store()
    store.receive(b"airflow.scheduler.tasks.starving:7|g")
    store.receive(b"airflow.scheduler.tasks.starving:0|g\nairflow.scheduler.tasks.starving:-5|g")
    assert exposition(store)["airflow_scheduler_tasks_starving{}"] == -5


def test_what_cannot_be_exported_is_dropped_and_counted_by_why():
    got = fed(
        "airflow.dag_processing.processes:1|c",
        "airflow.dag_processing.processes:-1|c",  # Airflow's decr: a counter never goes down
        "airflow.dag_processing.processes:4|g",  # the same series as another kind
        "garbage",
    )
    assert got["airflow_dag_processing_processes_total{}"] == 1
    outcomes = {k: v for k, v in got.items() if k.startswith("airagent_statsd_lines_total")}
    assert outcomes == {
        'airagent_statsd_lines_total{outcome="exported"}': 1,
        'airagent_statsd_lines_total{outcome="negative_counter"}': 1,
        'airagent_statsd_lines_total{outcome="type_conflict"}': 1,
        'airagent_statsd_lines_total{outcome="malformed"}': 1,
    }


def test_airflow_is_told_to_send_tags_to_the_environments_exporter(tmp_path):
    off = LocalTarget(path=tmp_path, port=30000)
    on = LocalTarget(path=tmp_path, port=30000, metrics={"statsd": True})
    assert statsd_settings(off) == {} and list(off.ports) == list(range(30000, 30005))
    settings = statsd_settings(on)
    assert settings["AIRFLOW__METRICS__STATSD_PORT"] == "30005" and list(on.ports) == list(range(30000, 30006))
    assert settings["AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED"] == "True"
    assert settings["AIRFLOW__METRICS__LEGACY_NAMES_ON"] == "False"


def test_the_exporter_process_serves_what_it_hears_over_udp():
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "activities.targets.statsd_exporter", "--statsd", address, "--web", address]
    )
    try:
        url = f"http://{address}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "the exporter never served"
                time.sleep(0.2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto("\n".join(RECORDED).encode(), ("127.0.0.1", port))
        series = 'airflow_ti_finish_total{dag_id="reports.daily",state="success",task_id="extract.orders"} 1.0'
        while series not in httpx.get(url, timeout=5).text:
            assert time.monotonic() < deadline, "the exporter never served the datagram's series"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_charts_statsd_exporter_names_the_series_as_the_local_exporter_does():
    """infra/airflow-values.yaml's mappings, read as statsd_exporter reads them (a regex mapping's `${1}` expanded,
    then every character Prometheus does not allow made `_`; an unmapped metric keeps its escaped name), give the
    recorded lines the names the local exporter serves, so one PromQL query reads a local and a kubernetes
    environment."""
    values = yaml.safe_load((Path(__file__).parents[1] / "infra" / "airflow-values.yaml").read_text())
    assert values["statsd"]["enabled"] and values["config"]["metrics"] == {
        "statsd_influxdb_enabled": "True",
        "legacy_names_on": "False",
    }
    mappings = values["statsd"]["overrideMappings"]
    kinds = {"c": "counter", "g": "gauge", "ms": "observer"}

    def chart_name(sample: Sample) -> str:
        for m in mappings:
            if m["match_type"] == "regex" and m["match_metric_type"] == kinds[sample.kind]:
                if found := re.search(m["match"], sample.name):
                    return re.sub(r"[^a-zA-Z0-9_]", "_", m["name"].replace("${1}", found.group(1)))
        return re.sub(r"[^a-zA-Z0-9_]", "_", sample.name)

    local = {re.sub(r"\{.*", "", series).removesuffix("_count") for series in fed(*RECORDED)}
    for line in RECORDED:
        sample = parse(line)
        name = chart_name(sample)
        assert name in local, (line, name)
        if sample.kind == "ms":
            assert mappings[1]["histogram_options"]["buckets"] == list(BUCKETS)
