"""Worker crashes and a dev-server restart in the middle of trains fail no good train and leave nothing
wedged, doubled or wrong.

Two files-only pipelines, a handful of trains between them, the worker SIGKILLed at seeded
random moments and the dev server restarted once; tests/faults.py is the harness and says
what each check reads.
"""

from __future__ import annotations

import pytest

from tests.devserver import cli_env, dev_server  # noqa: F401  fixtures
from tests.faults import Scenario, run

pytestmark = [pytest.mark.devserver, pytest.mark.slow]


async def test_trains_survive_worker_kills_and_a_server_restart(dev_server, cli_env, tmp_path):
    scenario = Scenario(seed=7, pipelines=2, rounds=2, faults=5, restarts=1, restart_every=3, timeout=420)
    report = await run(tmp_path, dev_server, cli_env, scenario)

    assert report.trains >= 2 * scenario.rounds, report
    assert report.kills == 4 and report.restarts == 1, report
    assert report.problems() == [], report
