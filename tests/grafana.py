"""The Grafana dashboard (infra/grafana/airagent.json) and the README's five figures, as a test runs them: no
Grafana here, so its variables are replaced the way Grafana would and each query goes to a real Prometheus' HTTP
API, as an instant query for stat and table panels and over a range for the others."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from tests.prometheus import Prometheus

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "infra" / "grafana" / "airagent.json"
PANEL_TYPES = {"timeseries", "stat", "table"}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel that draws, including those inside a collapsed row."""
    found = []
    for panel in dashboard["panels"]:
        found += [panel] if panel["type"] != "row" else panel.get("panels", [])
    return found


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def shape_problems(dashboard: dict) -> list[str]:
    """What Grafana's JSON model needs of each panel: a unique id, a place on the 24-column grid, the dashboard's
    data source, and queries with a unique refId each."""
    problems = []
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    ids = [p["id"] for p in rows + panels(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids repeat: {sorted(ids)}")
    for panel in rows + panels(dashboard):
        name = f"panel {panel.get('id')} {panel.get('title')!r}"
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: gridPos {grid}")
    for panel in panels(dashboard):
        name = f"panel {panel['id']} {panel['title']!r}"
        if panel["type"] not in PANEL_TYPES:
            problems.append(f"{name}: type {panel['type']}")
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        if any(s != {"type": "prometheus", "uid": "${datasource}"} for s in sources):
            problems.append(f"{name}: data source {sources}")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(refs) != len(set(refs)) or not all(t.get("expr") for t in panel["targets"]):
            problems.append(f"{name}: targets {panel.get('targets')}")
    return problems


def substitute(text: str, values: dict[str, str]) -> str:
    """`$name` and `${name}` replaced by `values[name]`; a variable without a value fails the test."""

    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"{text}: no value for ${name}"
        return values[name]

    return VARIABLE.sub(one, text)


def has_data(prometheus: Prometheus, promql: str, instant: bool, since: float) -> bool:
    """Whether the query gives at least one number (NaN, as a quantile of nothing, is no data)."""
    if instant:
        data = prometheus.api("query", query=promql)
        samples = [s["value"] for s in data["result"]]  # type: ignore[call-overload]
    else:
        data = prometheus.api("query_range", query=promql, start=str(since), end=str(time.time()), step="2")
        samples = [v for s in data["result"] for v in s["values"]]  # type: ignore[call-overload]
    return any(not math.isnan(float(value)) for _, value in samples)


def label_values(prometheus: Prometheus, query: str) -> set[str]:
    """What Grafana's `label_values(selector, label)` offers, from the series Prometheus holds."""
    match = LABEL_VALUES.fullmatch(query)
    assert match, f"not a label_values(...) query: {query}"
    series = prometheus.api("series", **{"match[]": match["selector"]})
    return {s[match["label"]] for s in series if match["label"] in s}  # type: ignore[index,operator]


def readme_figures() -> list[str]:
    """The PromQL of the README's `Five figures first` block, one query a line under its `#` title."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Five figures first\n.*?```promql\n(.*?)```", readme, re.S)
    assert block, "README.md has no `### Five figures first` section with a ```promql block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
