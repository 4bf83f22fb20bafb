"""What every target refuses alike, kept apart so the local and kubernetes targets need not import each other."""

from __future__ import annotations

from airagent.models import Expected


class UnexpectedLive(RuntimeError):
    """The environment's record names another live release than the roll's diff saw: someone moved it since."""

    def __init__(self, environment: str, expected: str | None, live: str | None, live_commit: str | None,
                 release: str):
        self.environment, self.expected, self.live, self.release = environment, expected, live, release
        runs = f"{live} (commit {live_commit[:12]})" if live and live_commit else live or "nothing"
        super().__init__(f"{environment} runs {runs} but this train expected {expected or 'nothing'} there, to "
                         f"replace with {release}: another train or a person changed it since the diff; nothing "
                         "was changed, and the next train will diff again")


def check_live(environment: str, replaces: Expected | None, live: str | None, live_commit: str | None,
               release: str) -> None:
    """Refuse a roll over anything but what its diff saw, or `release` itself (a retry); None checks nothing."""
    if replaces is not None and live not in (replaces.live, release):
        raise UnexpectedLive(environment, replaces.live, live, live_commit, release)
