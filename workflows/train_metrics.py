"""airagent's series, emitted from workflow code through the SDK's replay-safe meter.

`workflow.metric_meter()` records nothing while a workflow replays, so a train replayed on
another worker counts once; recording issues no command, so history is the same with or
without a metrics endpoint. The worker's Prometheus endpoint (worker/metrics.py) serves them
beside the SDK's own. Labels are bounded: pipeline, environment, stage, state, a soak metric's
name from airagent.yaml, a verdict; never a commit, a release or a train id.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from airagent.models import Outcome, StageRecord, TrainControl, TrainStatus
    from airagent.models.analysis import Phase

# Names as the endpoint shows them, less the `_total` it adds to counters. Histograms are in seconds.
TRAINS_STARTED = "airagent_trains_started"
TRAINS_ENDED = "airagent_trains_ended"
STAGE_SECONDS = "airagent_stage_seconds"
DEPLOYS = "airagent_deploys"
LEAD_TIME_SECONDS = "airagent_lead_time_seconds"
ROLLBACKS = "airagent_rollbacks"
VERDICTS = "airagent_analysis_verdicts"
HELD_COMMITS = "airagent_held_commits"

# Why an environment was put back: a failed soak metric's name, or one of these.
ROLL_FAILURE, SOAK, MANUAL, ABORT, OUTSIDE = "roll_failure", "soak", "manual", "abort", "outside_train"

BUCKETS = {
    STAGE_SECONDS: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
    LEAD_TIME_SECONDS: [60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800],
}


def train_started(pipeline: str) -> None:
    _meter().create_counter(TRAINS_STARTED, "trains started").add(1, {"pipeline": pipeline})


def stage_ended(pipeline: str, record: StageRecord, status: TrainStatus) -> None:
    """A stage's duration; a roll that ended ok is a deploy, with the lead time of the train's oldest commit."""
    if record.ended is None:
        return
    labels = {"pipeline": pipeline, "stage": record.name, "outcome": record.outcome.value}
    if record.environment:
        labels["environment"] = record.environment
    meter = _meter()
    meter.create_histogram_timedelta(STAGE_SECONDS, "stage durations", "s").record(
        record.ended - record.started, labels
    )
    if record.name != "roll" or record.outcome != Outcome.ok or not record.environment:
        return
    env = {"pipeline": pipeline, "environment": record.environment}
    meter.create_counter(DEPLOYS, "releases rolled live").add(1, env)
    if status.commits:
        lead = record.ended - min(c.at for c in status.commits)
        meter.create_histogram_float(LEAD_TIME_SECONDS, "oldest commit of a train to live", "s").record(
            max(lead.total_seconds(), 0.0), env
        )


def train_ended(pipeline: str, status: TrainStatus, stop: TrainControl | None) -> None:
    """How the train ended, each environment it put back and why, and every soak metric's verdict."""
    meter = _meter()
    meter.create_counter(TRAINS_ENDED, "trains ended").add(1, {"pipeline": pipeline, "state": status.state.value})
    verdicts = meter.create_counter(VERDICTS, "soak metrics' verdicts")
    for env in status.environments:
        for metric in env.analysis:
            labels = {"pipeline": pipeline, "environment": env.name, "metric": metric.metric}
            verdicts.add(1, {**labels, "verdict": metric.verdict.value})
        if env.state == "rolled_back":
            rolled_back(pipeline, env.name, _why(status, env.name, stop))


def rolled_back(pipeline: str, environment: str, reason: str) -> None:
    _meter().create_counter(ROLLBACKS, "environments put back on their release before").add(
        1, {"pipeline": pipeline, "environment": environment, "reason": reason}
    )


def held_commits(pipeline: str, count: int) -> None:
    _meter().create_gauge(HELD_COMMITS, "commits held back now").set(count, {"pipeline": pipeline})


def _why(status: TrainStatus, environment: str, stop: TrainControl | None) -> str:
    """A person's control, else the soak metric that judged it (failed, or inconclusive set to roll back), else
    the soak without one (its smoke runs), else its roll."""
    if stop is not None:
        return ABORT if stop == TrainControl.abort else MANUAL
    analysis = status.environment_status(environment).analysis
    for verdict in (Phase.failed, Phase.inconclusive):
        if names := [m.metric for m in analysis if m.verdict == verdict]:
            return names[0]
    return SOAK if status.soak_failed == environment else ROLL_FAILURE


def _meter():
    return workflow.metric_meter()
