"""The conductor's look at the branch: fetch (for a cloned URL) and read its head."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import keep_alive
from airagent.models import PollInput, PollResult
from airagent.repo import RepoError, open_repository, resolve


@activity.defn(name="poll_branch")
def poll_branch(input: PollInput) -> PollResult:
    try:
        with keep_alive("poll"):  # a fetch from a remote can take a while; a dead worker shows in seconds
            return PollResult(head=resolve(open_repository(input.pipeline), input.pipeline))
    except RepoError as err:
        raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
