"""How long each kind of activity may take and how often it is tried: one typed value per kind.

Every activity heartbeats or is short, so a killed worker's activity is retried elsewhere
within HEARTBEAT.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityConfig

# Activities that may run long heartbeat every few seconds: a lost worker shows within HEARTBEAT.
HEARTBEAT = timedelta(seconds=30)

QUICK = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5),
    heartbeat_timeout=HEARTBEAT,
    retry_policy=RetryPolicy(maximum_attempts=3),
)
LONG = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=45),
    heartbeat_timeout=HEARTBEAT,
    retry_policy=RetryPolicy(maximum_attempts=3),
)
ROLL = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=15),
    heartbeat_timeout=HEARTBEAT,
    retry_policy=RetryPolicy(maximum_attempts=5),
)
# A rollback is how an environment gets well again: keep trying for longer.
ROLLBACK = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=15),
    heartbeat_timeout=HEARTBEAT,
    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
)
# Deliveries retry for a few minutes, then give up: a notification never holds a train.
ANNOUNCE = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
)
POLL = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=2),
    heartbeat_timeout=HEARTBEAT,
    retry_policy=RetryPolicy(maximum_attempts=3),
)
CLOCK = ActivityConfig(start_to_close_timeout=timedelta(seconds=10))
# Reading an environment's record: short, and cheap to ask again.
READ = ActivityConfig(start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=3))


def on(queue: str, options: ActivityConfig) -> ActivityConfig:
    """`options` for an activity that runs on `queue`: a host's own, for what is bound to it."""
    routed = options.copy()
    routed["task_queue"] = queue
    return routed
