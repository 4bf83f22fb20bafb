"""After a soak rollback, who is held back and what runs next: pure functions of the conductor's state."""

from __future__ import annotations

from datetime import UTC, datetime

from airagent.models import Commit, ConductorState, HeldCommit, TrainState, TrainStatus
from workflows import culprits

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def commits(n: int) -> list[Commit]:
    """Newest first, as a train's status lists them."""
    return [Commit(sha=f"{i:040x}", author=f"dev{i}", email="", summary=f"change {i}", at=NOW) for i in range(n)][::-1]


def rolled_back(train: list[Commit], held: list[HeldCommit] = ()) -> TrainStatus:
    return TrainStatus(
        pipeline="main",
        target=train[0].sha,
        state=TrainState.rolled_back,
        commits=train,
        held=list(held),
        soak_failed="staging",
        reason="soak staging: smoke: HTTP 500",
    )


def test_an_untraced_failure_over_eight_commits_takes_three_steps_to_its_culprit():
    train = commits(8)
    for culprit in range(8):
        state = ConductorState()
        culprits.after_rollback(state, train[0].sha, rolled_back(train), set(), NOW)
        steps = 0
        while state.bisection:
            probe = int(state.bisection.probe.sha, 16)
            verdict = TrainState.rolled_back if probe >= culprit else TrainState.succeeded
            culprits.after_step(
                state,
                state.bisection,
                TrainStatus(pipeline="main", target="", state=verdict, soak_failed="staging"),
                NOW,
            )
            steps += 1
        [held] = state.held
        assert int(held.sha, 16) == culprit and held.regression and "bisection" in held.reason
        assert steps <= 3
        assert [r.sha for r in state.requests] == [train[0].sha], "the head is deployed again without it"


def test_one_suspect_is_held_at_once_and_a_traced_failure_deploys_the_rest():
    [only] = commits(1)
    state = ConductorState(failed=[only.sha])
    culprits.after_rollback(state, only.sha, rolled_back([only]), set(), NOW)
    assert [h.sha for h in state.held] == [only.sha] and state.bisection is None
    assert state.requests == [] and only.sha in state.failed, "no train of its held commit alone is started"

    train = commits(3)
    traced = HeldCommit(sha=train[1].sha, author="dev1", summary="", reason="tasks failed", regression=True)
    state = ConductorState(held=[traced])
    culprits.after_rollback(state, train[0].sha, rolled_back(train, [traced]), set(), NOW)
    assert state.bisection is None and [r.sha for r in state.requests] == [train[0].sha]


def test_a_step_that_fails_before_its_soak_ends_the_bisection_and_holds_nothing():
    train = commits(4)
    state = ConductorState()
    culprits.after_rollback(state, train[0].sha, rolled_back(train), set(), NOW)
    culprits.after_step(state, state.bisection, TrainStatus(pipeline="main", target="", state=TrainState.failed), NOW)
    assert state.bisection is None and state.held == [] and state.requests == []
