"""How long each kind of activity may take and how it is retried: one typed value per kind.

A stage's activity retries transient failures (a killed worker, a restarting server, a timeout)
until the stage's own deadline, `schedule_to_close_timeout`, not for a count of attempts: a
good train must not fail because its worker died three times. Only a non-retryable error (a
broken DAG, bad input, a rollout that failed) ends a stage early. Every activity heartbeats or
is short, so a killed worker's activity is retried elsewhere within HEARTBEAT.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityConfig

# Activities that may run long heartbeat every few seconds: a lost worker shows within HEARTBEAT.
HEARTBEAT = timedelta(seconds=30)
# Retried with no count: the stage's deadline bounds the tries, and a retry waits at most this long.
UNTIL_DEADLINE = RetryPolicy(maximum_attempts=0, maximum_interval=timedelta(seconds=30))


def stage(attempt: timedelta, deadline: timedelta) -> ActivityConfig:
    """A stage's activity: each try may take `attempt`, all tries together `deadline`."""
    return ActivityConfig(
        start_to_close_timeout=attempt,
        schedule_to_close_timeout=deadline,
        heartbeat_timeout=HEARTBEAT,
        retry_policy=UNTIL_DEADLINE,
    )


QUICK = stage(attempt=timedelta(minutes=5), deadline=timedelta(minutes=30))
LONG = stage(attempt=timedelta(minutes=45), deadline=timedelta(hours=2))
ROLL = stage(attempt=timedelta(minutes=15), deadline=timedelta(minutes=45))
# A rollback is how an environment gets well again: keep trying for longer.
ROLLBACK = stage(attempt=timedelta(minutes=15), deadline=timedelta(hours=2))
# Reading an environment's record: short, and cheap to ask again.
READ = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=UNTIL_DEADLINE,
)
# Not stages: each gives up after a few tries, as what calls it carries on without it (the conductor
# polls again next interval, a notification never holds a train, gc runs again after the next train).
FEW_TRIES = RetryPolicy(maximum_attempts=3)
POLL = ActivityConfig(start_to_close_timeout=timedelta(minutes=2), heartbeat_timeout=HEARTBEAT, retry_policy=FEW_TRIES)
ANNOUNCE = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
)
BEST_EFFORT = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5), heartbeat_timeout=HEARTBEAT, retry_policy=FEW_TRIES
)
CLOCK = ActivityConfig(start_to_close_timeout=timedelta(seconds=10))


def on(queue: str, options: ActivityConfig) -> ActivityConfig:
    """`options` for an activity that runs on `queue`: a host's own, for what is bound to it."""
    routed = options.copy()
    routed["task_queue"] = queue
    return routed
