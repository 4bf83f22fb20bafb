"""DORA figures: from a sequence of trains written by hand, equal to figures worked out by hand; and
`airagent metrics` on a real dev server's trains, as a table and as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from airagent import example
from airagent.dora import OutsideRollback, delivery, figures
from airagent.models import Commit, Outcome, StageRecord, TrainState, TrainStatus
from tests.conftest import make_pipeline, start_train
from tests.devserver import agent, airagent, cli_env, dev_server, until, worker  # noqa: F401

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def train(first_commit: datetime, *stages: tuple[str, str, datetime, Outcome], state=TrainState.succeeded):
    """A train's status as Temporal recorded it: its commits and its stage records (name, environment, end)."""
    commit = Commit(sha="a" * 40, author="Ada", email="a@x", summary="s", at=first_commit)
    later = commit.model_copy(update={"sha": "b" * 40, "at": first_commit + timedelta(minutes=5)})
    records = [
        StageRecord(name=name, environment=env, started=end - timedelta(minutes=1), ended=end, outcome=outcome)
        for name, env, end, outcome in stages
    ]
    return TrainStatus(pipeline="main", target="b" * 40, state=state, commits=[later, commit], stages=records)


def ok_roll(env: str, at: datetime):
    return ("roll", env, at, Outcome.ok)


def rollback(env: str, at: datetime, outcome: Outcome = Outcome.ok):
    return ("rollback", env, at, outcome)


SEQUENCE = {
    "before-window": train(T0 - 2 * D, ok_roll("prod", T0 - D)),
    "a": train(T0, ok_roll("staging", T0 + 0.5 * H), ok_roll("prod", T0 + H)),
    "b-soak-fails": train(
        T0 + D, ok_roll("prod", T0 + D + 2 * H), rollback("prod", T0 + D + 2.5 * H), state=TrainState.rolled_back
    ),
    "c": train(T0 + 2 * D, ok_roll("prod", T0 + 2 * D + 4 * H)),
    "d-rolled-back-by-hand-later": train(T0 + 3 * D, ok_roll("prod", T0 + 3 * D + H)),
    "e": train(T0 + 4 * D, ok_roll("prod", T0 + 4 * D + 0.5 * H)),
    "noop": train(T0 + 4 * D, state=TrainState.noop),
    "roll-fails-on-prod": train(
        T0 + 4 * D,
        ok_roll("staging", T0 + 4 * D + H),
        ("roll", "prod", T0 + 4 * D + 2 * H, Outcome.failed),
        rollback("prod", T0 + 4 * D + 2.1 * H),
        state=TrainState.failed,
    ),
    "h-rollback-fails": train(
        T0 + 5 * D, ok_roll("prod", T0 + 5 * D + H), rollback("prod", T0 + 5 * D + 2 * H, Outcome.failed)
    ),
    "i": train(T0 + 5 * D + 2 * H, ok_roll("prod", T0 + 6 * D)),
}
OUTSIDE = [OutsideRollback(environment="prod", at=T0 + 3 * D + 5 * H)]


def test_figures_from_a_recorded_sequence_equal_the_hand_worked_ones():
    deliveries = [delivery(name, status) for name, status in SEQUENCE.items()]
    prod = figures(deliveries, OUTSIDE, "prod", T0, T0 + 10 * D)
    # Deploys to prod in the window: a, b, c, d, e, h, i (a roll that failed is no deploy; `before-window` is out).
    assert prod.deployments == 7
    assert prod.deployment_frequency_per_day == 0.7
    # Failed: b (its soak), d (rolled back outside the train), h (put back, though the rollback failed).
    assert (prod.failures, prod.change_fail_rate) == (3, 3 / 7)
    # Lead times of the healthy deploys, from each train's oldest commit: a 1 h, c 4 h, e 0.5 h, i 22 h.
    assert prod.lead_time_seconds.model_dump() == {"median": (3600 + 14400) / 2, "p90": 79200.0, "trains": 4}
    # Recovery: b's rollback took 0.5 h; d was rolled back by hand 4 h after it went live; h's rollback failed,
    # so i, live 23 h after h, recovered it.
    assert prod.recovery_seconds.model_dump() == {"median": 14400.0, "p90": 82800.0, "trains": 3}
    # Rework: c, e and i each follow a failed deploy.
    assert (prod.reworks, prod.rework_rate) == (3, 3 / 7)

    staging = figures(deliveries, OUTSIDE, "staging", T0, T0 + 10 * D)
    assert (staging.deployments, staging.failures, staging.reworks) == (2, 0, 0)
    assert staging.lead_time_seconds.median == (1800 + 3600) / 2  # a, and the train whose prod roll failed
    assert staging.recovery_seconds.trains == 0 and staging.recovery_seconds.median is None

    empty = figures(deliveries, OUTSIDE, "prod", T0 + 20 * D, T0 + 30 * D)
    assert (empty.deployments, empty.change_fail_rate, empty.rework_rate) == (0, None, None)


async def test_the_cli_prints_the_figures_and_their_json(agent, cli_env, worker, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs")
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    await until(agent, handle.id, lambda s: s.state.finished, timeout=300)
    sha = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=4)}, "fx", "finance")
    handle = await start_train(agent, pipeline, sha)
    await until(agent, handle.id, lambda s: s.state == TrainState.succeeded, timeout=300)

    answer = json.loads(airagent("metrics", "-p", "main", "--json", env=cli_env).stdout)
    for _ in range(30):  # visibility lists a closed train within a second or so
        if [e["deployments"] for e in answer["environments"]] == [2, 2]:
            break
        answer = json.loads(airagent("metrics", "-p", "main", "--json", env=cli_env).stdout)
    assert answer["pipeline"] == "main"
    staging, prod = answer["environments"]
    assert (staging["environment"], prod["environment"]) == ("staging", "prod")
    assert prod["deployments"] == 2 and prod["deployment_frequency_per_day"] == 2 / 30
    assert prod["change_fail_rate"] == 0 and prod["rework_rate"] == 0
    assert set(prod["lead_time_seconds"]) == {"median", "p90", "trains"} and prod["lead_time_seconds"]["trains"] == 2
    assert prod["lead_time_seconds"]["median"] > 0
    assert prod["recovery_seconds"] == {"median": None, "p90": None, "trains": 0}

    shown = airagent("metrics", "-p", "main", "--env", "prod", "--since", "7d", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "main: DORA over the last 7d" in shown.stdout and "prod" in shown.stdout and "staging" not in shown.stdout
    assert "0% (0 of 2)" in shown.stdout
    refused = airagent("metrics", "-p", "Main!", env=cli_env)
    assert refused.returncode == 2 and "not a pipeline name" in refused.stderr
