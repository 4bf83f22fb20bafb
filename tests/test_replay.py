"""Recorded histories of trains and conductors replay against the current workflow code.

Some were recorded under faults (tests/histories/record_faults.py). A failure here means
a change to workflow code would break workflows already running when a new worker
version rolls out: guard the change with `workflow.patched`.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker.main import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays(path: Path):
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))


def test_histories_are_recorded():
    assert {p.stem for p in HISTORIES} >= {"train_succeeded", "train_aborted", "train_failed_validate", "conductor",
                                          "train_under_faults", "conductor_window_under_faults"}
