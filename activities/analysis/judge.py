"""The verdict of a metric from its measurements, with its limits: pure, so recorded readings test it.

Failures beyond `failure_limit` fail a metric at once; errors in a row beyond
`consecutive_error_limit` too (its verdict is then `error`, which rolls back like a
failure: an environment that cannot answer for that long is not healthy). A metric that
has neither failed nor erred out is `running` until the soak ends, then `successful`,
or `inconclusive` when its newest conclusive measurement was inconclusive or it never
had one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airagent.config import promql
from airagent.config.analysis import AirflowMetric, Analysis, Metric, PrometheusMetric, WebhookMetric
from airagent.models.analysis import KEEP_MEASUREMENTS, Measurement, MetricState, Phase

ENDED = (Phase.failed, Phase.error)


def start(metric: Metric) -> MetricState:
    return MetricState(metric=metric.name, held_to=metric.held_to())


def due(metric: Metric, state: MetricState, now: datetime, interval: timedelta) -> bool:
    """Whether the metric is read on this round: not once it failed or erred out, and otherwise when its own
    interval has passed since its newest measurement. A round comes every probe interval, so a metric is read
    at most that often."""
    if state.verdict in ENDED:
        return False
    if not state.last:
        return True
    # Half a round of slack: a round a little early still reads a metric whose interval is the round's.
    return now - state.last[-1].at >= (metric.interval or interval) - interval / 2


def advance(metric: Metric, state: MetricState, measured: Measurement) -> MetricState:
    """The state after one more measurement."""
    s = state.model_copy(deep=True)
    s.measurements += 1
    s.last = [*s.last, measured][-KEEP_MEASUREMENTS:]
    if measured.phase == Phase.error:
        s.errors += 1
        s.consecutive_errors += 1
    else:
        s.consecutive_errors = 0
    if measured.phase == Phase.failed:
        s.failures += 1
    if measured.phase == Phase.inconclusive:
        s.inconclusives += 1
    if s.failures > metric.failure_limit:
        s.verdict = Phase.failed
    elif s.consecutive_errors > metric.consecutive_error_limit:
        s.verdict = Phase.error
    return s


def conclude(state: MetricState) -> MetricState:
    """The verdict of a metric still running when the soak ends: successful when its newest conclusive reading
    was; inconclusive when that one was inconclusive, or failed within the limit (the evidence came too late
    to confirm), or it never read anything conclusive."""
    if state.verdict != Phase.running:
        return state
    conclusive = [m for m in state.last if m.phase != Phase.error]
    newest = conclusive[-1].phase if conclusive else Phase.inconclusive
    verdict = Phase.successful if newest == Phase.successful else Phase.inconclusive
    return state.model_copy(update={"verdict": verdict})


def overall(analysis: Analysis, states: list[MetricState]) -> Phase:
    """The soak's verdict so far: failed when a metric rolls back (`failed`); inconclusive when one ended so
    with `inconclusive: pause`; running while any metric still is; successful otherwise."""
    if failed(analysis, states):
        return Phase.failed
    verdicts = {s.metric: s.verdict for s in states}
    if any(verdicts.get(m.name, Phase.running) == Phase.running for m in analysis.metrics):
        return Phase.running
    if any(verdicts[m.name] == Phase.inconclusive and m.inconclusive == "pause" for m in analysis.metrics):
        return Phase.inconclusive
    return Phase.successful


def failed(analysis: Analysis, states: list[MetricState]) -> list[Metric]:
    """The metrics whose verdict rolls the environment back: failed, erred out, or inconclusive where the metric
    says `inconclusive: rollback`."""
    verdicts = {s.metric: s.verdict for s in states}
    return [
        m
        for m in analysis.metrics
        if verdicts.get(m.name) in ENDED
        or (verdicts.get(m.name) == Phase.inconclusive and m.inconclusive == "rollback")
    ]


def environment_wide(metric: Metric) -> bool:
    """Whether a failure of the metric says something of the environment rather than of one release's files:
    such a failure is read again on the previous release before any commit is blamed for it."""
    if isinstance(metric, AirflowMetric):
        return metric.measure in ("health", "components")
    if isinstance(metric, PrometheusMetric):
        # A query of this release's series or of the changed DAGs judges the release; one over the soak's own
        # window would read the failed release's samples again on the previous one, so it would always confirm.
        return not promql.names(metric.query) & {"release", "dag_id", "soak_start", "soak_duration"}
    return isinstance(metric, WebhookMetric)  # a job runs in the release's runtime: it judges the release


def summary(states: list[MetricState]) -> str:
    """One line per metric that did not pass, or all passing: the rollback reason and the stage's detail."""
    bad = [s for s in states if s.verdict != Phase.successful and s.verdict != Phase.running]
    if bad:
        return "; ".join(s.line() for s in bad)
    return ", ".join(f"{s.metric} {s.verdict}" for s in states)
