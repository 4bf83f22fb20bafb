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

from airagent.repair import reset_point
from worker.main import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays(path: Path):
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))


def test_histories_are_recorded():
    assert {p.stem for p in HISTORIES} >= {
        "train_succeeded",
        "train_aborted",
        "train_failed_validate",
        "conductor",
        "train_under_faults",
        "conductor_window_under_faults",
        "conductor_bisection",
        "train_bisection_step",
        "train_held_back_after_bisection",
        "train_succeeded_before_soak_analysis",
        "train_aborted_before_soak_analysis",
        "preview_local",
        "preview_kubernetes",
    }


async def test_the_wedged_train_of_the_evidence_is_repaired_by_a_reset_to_the_task_that_went_wrong():
    """Its live worker soaked on a clock reading history does not hold, so no code replays all of it;
    everything up to that workflow task does, and `airagent repair --reset` runs the task again from there."""
    path = Path(__file__).parent / "evidence" / "nondeterminism-train-history.json"
    history = WorkflowHistory.from_json("train/evidence", path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is not None

    assert await reset_point(history, WORKFLOWS) == 58  # the task that started the timer at event 59
