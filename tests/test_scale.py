"""A monorepo of tens of thousands of files deploys: nothing in a train's history grows with the repository."""

from __future__ import annotations

import git
import pytest

from airagent.generated import beside, generate
from airagent.models import TrainState
from tests.conftest import make_pipeline, start_train

# The Airflow runtime parses 2,000 DAG files: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

DAG_FILES, OTHER_FILES = 2_000, 18_000
MAX_PAYLOAD = 256 * 1024


def monorepo(root) -> git.Repo:
    beside(generate(root, DAG_FILES), OTHER_FILES)
    repo = git.Repo.init(root, initial_branch="main")
    repo.git.add("-A")
    repo.git.commit("-m", "twenty teams, twenty thousand files", "--author", "Ada Lovelace <ada@example.com>")
    return repo


async def test_a_first_deploy_of_20000_files_keeps_every_payload_small(agent, drive, tmp_path):
    repo = monorepo(tmp_path / "repo")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    head = repo.head.commit.hexsha

    handle = await start_train(agent, pipeline, head)
    status = await drive.finish(handle.id)

    assert status.state == TrainState.succeeded, status.reason
    assert status.validation.startswith(f"{DAG_FILES} files, ")
    history = await handle.fetch_history()
    largest = max(history.events, key=lambda e: e.ByteSize())
    assert largest.ByteSize() < MAX_PAYLOAD, (largest.event_type, largest.ByteSize())
    diff = next(s for s in status.stages if s.name == "diff")
    assert f"{DAG_FILES + OTHER_FILES} files" in diff.detail
