"""The StatsD exporter of a local environment: Airflow's StatsD datagrams in over UDP, Prometheus series out.

    python -m activities.targets.statsd_exporter --statsd 127.0.0.1:PORT --web 127.0.0.1:PORT

No exporter from the package registries serves here (Prometheus' own statsd_exporter is a Go program
that Debian 12 does not package; what PyPI has are clients), so this one is kept small. It needs no
mapping of dotted names: Airflow 3 names each metric without its variables (`ti.finish`, not
`ti.finish.<dag_id>.<task_id>.<state>`) and sends dag_id, task_id, state... as tags, which the local
target asks for in InfluxDB's form (`airflow.ti.finish,dag_id=d,task_id=group.task,state=success:1|c`).
A task id with dots inside a task group is then a label value, never a guess at where a name splits.
DogStatsD's tags (`|#dag_id:d`) are read too.

Each metric's name becomes the series' name (`airflow.ti.finish` -> `airflow_ti_finish`) and its tags
its labels: counters end in `_total` (a sample rate scales them up), gauges are set or moved (`+3`,
`-3`), timers are histograms in seconds (`airflow_task_duration_seconds`). Prometheus' own client
writes the exposition; `airagent_statsd_lines_total` counts what was exported and what was dropped, why.
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

# Airflow's timings run from milliseconds (a scheduler loop) to hours (a DAG run).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
KINDS = {"c": "counter", "g": "gauge", "ms": "histogram"}
_INVALID = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One StatsD line: `name[,tag=value...]:value|type[|@rate][|#tag:value,...]`."""

    name: str
    kind: str
    value: float
    rate: float = 1.0
    delta: bool = False  # a gauge's `+N` or `-N`: moved by N, not set to it
    tags: Labels = ()


def parse(line: str) -> Sample:
    """One line as a Sample; ValueError says what is wrong with it."""
    head, *fields = line.strip().split("|")
    name, colon, value = head.rpartition(":")
    if not colon or not name or not fields:
        raise ValueError(f"not `name:value|type`: {line!r}")
    kind, rate, tags = fields[0], 1.0, []
    if kind not in KINDS:
        raise ValueError(f"type {kind!r} is not one of {', '.join(KINDS)}")
    name, *influx = name.split(",")
    for tag in influx:
        key, equals, tag_value = tag.partition("=")
        if not equals or not key:
            raise ValueError(f"tag {tag!r} is not `key=value`")
        tags.append((key, tag_value))
    for extra in fields[1:]:
        if extra.startswith("@"):
            rate = float(extra[1:])
            if not 0 < rate <= 1:
                raise ValueError(f"sample rate {extra[1:]} is not in (0, 1]")
        elif extra.startswith("#"):
            tags += [(k, v) for k, _, v in (t.partition(":") for t in extra[1:].split(",") if t)]
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"value {value!r} is not a finite number")
    return Sample(name, kind, number, rate, kind == "g" and value[:1] in "+-", tuple(tags))


def metric_name(name: str) -> str:
    """The Prometheus name of a StatsD name: every character Prometheus does not allow becomes `_`."""
    cleaned = _INVALID.sub("_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def labels_of(tags: Labels) -> Labels:
    """Tags as labels, sorted by name; a tag sent twice keeps its last value."""
    return tuple(sorted({metric_name(k): v for k, v in tags}.items()))


@dataclass
class _Histogram:
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    count: float = 0.0
    total: float = 0.0


class Store:
    """Everything heard so far, by series; safe to add to from the UDP loop while a scrape collects."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, str] = {}  # series name -> the kind it was first heard as
        self.values: dict[str, dict[Labels, float]] = {}
        self.histograms: dict[str, dict[Labels, _Histogram]] = {}
        self.lines: dict[str, float] = {}

    def receive(self, packet: bytes) -> None:
        """A datagram: one line or several, each counted as exported or dropped with why."""
        for line in packet.decode("utf-8", "replace").splitlines():
            if line.strip():
                outcome = self._add(line)
                with self.lock:
                    self.lines[outcome] = self.lines.get(outcome, 0) + 1

    def _add(self, line: str) -> str:
        try:
            sample = parse(line)
        except ValueError:
            return "malformed"
        kind = KINDS[sample.kind]
        name = metric_name(sample.name) + ("_seconds" if kind == "histogram" else "")
        labels = labels_of(sample.tags)
        with self.lock:
            if self.kinds.setdefault(name, kind) != kind:
                return "type_conflict"
            if kind == "counter":
                if sample.value < 0:
                    return "negative_counter"  # a Prometheus counter never goes down
                series = self.values.setdefault(name, {})
                series[labels] = series.get(labels, 0.0) + sample.value / sample.rate
            elif kind == "gauge":
                series = self.values.setdefault(name, {})
                series[labels] = (series.get(labels, 0.0) if sample.delta else 0.0) + sample.value
            else:
                seconds, weight = sample.value / 1000, 1 / sample.rate
                histogram = self.histograms.setdefault(name, {}).setdefault(labels, _Histogram())
                for i, bound in enumerate(BUCKETS):
                    if seconds <= bound:
                        histogram.buckets[i] += weight
                histogram.count += weight
                histogram.total += seconds * weight
        return "exported"

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            for name, series in sorted(self.values.items()):
                kind = self.kinds[name]
                metric = Metric(name, f"Airflow's StatsD {kind} {name}", kind)
                for labels, value in series.items():
                    metric.add_sample(name + ("_total" if kind == "counter" else ""), dict(labels), value)
                yield metric
            for name, histograms in sorted(self.histograms.items()):
                metric = Metric(name, f"Airflow's StatsD timer {name}, in seconds", "histogram")
                for labels, h in histograms.items():
                    for bound, count in zip(BUCKETS, h.buckets, strict=True):
                        metric.add_sample(f"{name}_bucket", {**dict(labels), "le": repr(float(bound))}, count)
                    metric.add_sample(f"{name}_bucket", {**dict(labels), "le": "+Inf"}, h.count)
                    metric.add_sample(f"{name}_count", dict(labels), h.count)
                    metric.add_sample(f"{name}_sum", dict(labels), h.total)
                yield metric
            lines = Metric("airagent_statsd_lines", "StatsD lines received, by what became of them", "counter")
            for outcome, count in sorted(self.lines.items()):
                lines.add_sample("airagent_statsd_lines_total", {"outcome": outcome}, count)
            yield lines


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statsd", required=True, type=_address, help="HOST:PORT to receive StatsD on (UDP)")
    parser.add_argument("--web", required=True, type=_address, help="HOST:PORT to serve /metrics on (TCP)")
    args = parser.parse_args(argv)
    store, registry = Store(), CollectorRegistry(auto_describe=False)
    registry.register(store)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(args.statsd)  # before serving: a scrape that answers means datagrams are heard
        start_http_server(args.web[1], args.web[0], registry=registry)
        print(
            f"StatsD on udp://{args.statsd[0]}:{args.statsd[1]}, /metrics on http://{args.web[0]}:{args.web[1]}",
            flush=True,
        )
        while True:
            store.receive(udp.recv(65535))


if __name__ == "__main__":
    main()
