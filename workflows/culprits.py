"""After a soak rollback: hold back the culprit and deploy the rest. Pure functions of the conductor's state.

Traced to DAGs, the train itself held their commits; the same head is deployed again
without them. Untraced, one suspect is the culprit; several are bisected on the
environment that failed, each step a train that rolls the middle suspect (with every
suspect before it) there only. The culprit is held back as a regression, and the head
is deployed again without it.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from airagent.models import Bisection, Commit, ConductorState, DeployRequest, HeldCommit, TrainState, TrainStatus


def after_rollback(
    state: ConductorState,
    sha: str,
    status: TrainStatus,
    held_before: set[str],
    now: datetime,
    retry_alone: bool = False,
) -> None:
    """`status` is the rolled-back train of `sha`; `held_before`, what was held when it started. `retry_alone`: as
    conductors did before, deploy the head again after holding its only suspect, which fails at diff."""
    held = {h.sha for h in status.held}
    suspects = [c for c in reversed(status.commits) if c.sha not in held]
    if held - held_before:
        if suspects:
            retry(state, sha)
        return
    assert status.soak_failed is not None
    why = status.reason.removeprefix(f"soak {status.soak_failed}: ").splitlines()[0][:300]
    if len(suspects) == 1:  # the rest of the train is held already: nothing is left to deploy again
        alone = f"the soak of {status.soak_failed} failed with it alone ({why})"
        hold(state, suspects[0], alone, sha, now, rest=retry_alone)
    elif suspects:
        state.bisection = Bisection(
            head=sha, environment=status.soak_failed, why=why, suspects=suspects, bad=len(suspects) - 1
        )


def after_step(state: ConductorState, bisection: Bisection, status: TrainStatus | None, now: datetime) -> None:
    """One step's verdict narrows the suspects; the last holds the culprit back and deploys the head again."""
    middle = (bisection.good + bisection.bad) // 2
    if status and status.state in (TrainState.succeeded, TrainState.noop):  # a noop step changed ignored files only
        bisection.good = middle
    elif status and status.state == TrainState.rolled_back and status.soak_failed == bisection.environment:
        bisection.bad = middle
    else:  # the step could not tell: it failed before soaking, or was stopped
        state.bisection = None
        return
    bisection.step += 1
    if culprit := bisection.found:
        state.bisection = None
        reason = (
            f"bisection: the soak of {bisection.environment} failed with it and passed without it ({bisection.why})"
        )
        hold(state, culprit, reason, bisection.head, now)


def hold(state: ConductorState, commit: Commit, reason: str, head: str, now: datetime, rest: bool = True) -> None:
    """Hold back a commit a soak failure was narrowed down to, and deploy the head again when it has `rest`,
    commits still to deploy without it (a train of held commits only would fail at diff, telling nothing); the
    next train fills in its paths."""
    held = HeldCommit(
        sha=commit.sha, author=commit.author, summary=commit.summary, reason=reason, since=now, regression=True
    )
    state.held = [*(h for h in state.held if h.sha != commit.sha), held]
    if rest:
        retry(state, head)


def retry(state: ConductorState, sha: str) -> None:
    """Deploy `sha` again, now that more of its commits are held back."""
    state.failed = [f for f in state.failed if f != sha]
    if all(r.sha != sha for r in state.requests):
        state.requests = [DeployRequest(sha=sha, by="airagent: deploy the rest"), *state.requests]
