"""Previews on real Airflow: a branch served by its own environment, followed, and torn down leaving nothing.

The tests run in order and share the module's previews, as each Airflow costs the host half a minute to start:
feat-a is started, followed and deleted; feat-b runs beside it, fills the cap and is taken down; feat-c expires.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.targets.local_airflow import LocalAirflow
from airagent import example
from airagent.config import LocalTarget, load_pipeline
from airagent.devserver import binary, port_open
from airagent.models import PreviewState, PreviewStatus, preview_id
from interface.client import AirAgent
from tests.conftest import current_details
from tests.devserver import WorkerProcess, dev_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.airflow, pytest.mark.devserver, pytest.mark.slow]

# Above the kernel's ephemeral range (32768-60999), where no test's client socket lands.
FIRST_PORT = 61500
SERVE = 400  # seconds a preview may take to serve on a loaded host: a build, a runtime check, Airflow's start
PREVIEWS = f"""\
    previews:
      cap: 2
      ttl: 1h
      poll_interval: 2s
      first_port: {FIRST_PORT}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, dev_server):
    """The example's monorepo (its own environments never run here), a config with previews, and a worker."""
    root = tmp_path_factory.mktemp("preview")
    repo = example.create(root / "repo", root / "envs", airflow=False)
    config = root / "repo" / "previews.yaml"  # beside the repo's own, untracked
    text = (root / "repo" / "airagent.yaml").read_text()
    config.write_text(text.replace("    poll_interval: 30s\n", "    poll_interval: 30s\n" + PREVIEWS, 1))
    env = {**os.environ, "TEMPORAL_ADDRESS": dev_server.address, "AIRAGENT_TASK_QUEUE": f"q-{root.name}"}
    worker = WorkerProcess(env, root / "worker.log")
    worker.start()
    yield repo, config, env
    for left in json.loads(cli((repo, config, env), "list", "--json").stdout or "[]"):  # a failed test's
        cli((repo, config, env), "down", "--branch", left["branch"])
    worker.stop()


@pytest.fixture
async def agent(world, dev_server):
    client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    return AirAgent(client, world[2]["AIRAGENT_TASK_QUEUE"])


def cli(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary("airagent"), "preview", *args], env=world[2], capture_output=True, text=True, timeout=SERVE + 60
    )


def on_branch(repo, branch: str, files: dict[str, str | None], message: str, new: bool = False) -> str:
    """Commit on `branch` (made from main when `new`) and go back to main."""
    repo.git.checkout(*(["-b"] if new else []), branch)
    sha = example.commit(repo, files, message, "marketing")
    repo.git.checkout("main")
    return sha


def airflow_of(status: PreviewStatus) -> LocalAirflow:
    assert status.url and status.login_file
    folder = Path(status.login_file).parent.parent
    return LocalAirflow("preview", LocalTarget(path=folder, port=int(status.url.rsplit(":", 1)[1])))


def served(status: PreviewStatus) -> set[str]:
    with airflow_of(status).api(timeout=60) as api:
        return {d["dag_id"] for d in api.dags()}


def assert_gone(status: PreviewStatus, pids: list[int]) -> None:
    """No process, port or folder of the preview is left."""
    folder = Path(str(status.login_file)).parent.parent
    port = int(str(status.url).rsplit(":", 1)[1])
    assert not folder.exists(), f"{folder} left behind"
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and _not_zombie(p)], "a component still runs"
    assert not [p for p in range(port, port + 5) if port_open(p)], "a port is still listened on"


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def pids_of(status: PreviewStatus) -> dict[str, int]:
    return {name: p.pid for name, p in airflow_of(status).processes().items()}


async def test_a_preview_serves_its_branch_and_follows_new_commits_without_a_restart(world, agent):
    repo, config, _ = world
    head = on_branch(repo, "feat-a", {"dags/marketing/preview_a.py": example.dag_file("preview_a")}, "a", new=True)

    done = cli(world, "up", "--branch", "feat-a", "-c", str(config), "--json")

    assert done.returncode == 0, done.stderr
    status = PreviewStatus.model_validate(json.loads(done.stdout) | {"pipeline": "main"})
    assert status.state == PreviewState.serving and status.commit == head, status
    assert "preview_a" in served(status) and "ledger_daily" in served(status)
    assert stat.S_IMODE(Path(str(status.login_file)).stat().st_mode) == 0o600
    assert not (Path(config).parent.parent / "envs").exists(), "the pipeline's environments are never touched"
    pids = pids_of(status)

    newer = on_branch(repo, "feat-a", {"dags/marketing/preview_a2.py": example.dag_file("preview_a2")}, "a2")
    status = await agent.wait_preview("main", "feat-a", lambda s: s.commit == newer, timeout=SERVE)

    assert "preview_a2" in served(status)
    assert status.event and status.event.startswith("dags-only"), status.event
    assert pids_of(status) == pids, "a DAG-only commit restarts nothing"

    broken = on_branch(repo, "feat-a", {example.BROKEN_PATH: example.BROKEN_DAG}, "broken")
    status = await agent.wait_preview("main", "feat-a", lambda s: s.head == broken and s.error, timeout=SERVE)
    assert status.state == PreviewState.serving and status.commit == newer, "it keeps serving the head before"
    assert status.error.startswith("validate:") and "orders_hourly.py" in status.error, status.error


async def test_two_previews_side_by_side_and_the_cap_refuses_a_third(world, agent):
    repo, config, _ = world
    on_branch(repo, "feat-b", {"dags/finance/preview_b.py": example.dag_file("preview_b")}, "b", new=True)
    pipeline = load_pipeline("main", config)

    await agent.preview_up(pipeline, "feat-b")
    b = await agent.wait_preview("main", "feat-b", timeout=SERVE)
    a = await agent.preview_status("main", "feat-a")

    assert b.state == a.state == PreviewState.serving, (a, b)
    assert a.url != b.url and a.login_file != b.login_file
    assert "preview_b" in served(b) and "preview_b" not in served(a) and "preview_a" not in served(b)
    listed = cli(world, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    previews = {p["branch"]: p for p in json.loads(listed.stdout)}
    assert set(previews) == {"feat-a", "feat-b"}
    for key in ("branch", "commit", "url", "expires", "login_file"):
        assert previews["feat-b"][key], key
    assert previews["feat-b"]["commit"] == b.commit and previews["feat-b"]["url"] == b.url
    human = cli(world, "list").stdout
    assert f"Airflow {b.url}; log in with the username:password in {b.login_file}" in human, human

    on_branch(repo, "feat-c", {"dags/finance/preview_c.py": example.dag_file("preview_c")}, "c", new=True)
    refused = cli(world, "up", "--branch", "feat-c", "-c", str(config))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "cap" in message and "feat-a" in message and "feat-b" in message, message

    # At the cap, `up` on a running preview is no new one: it extends it.
    extended = await agent.preview_up(pipeline, "feat-a", ttl=timedelta(hours=3))
    assert a.expires and extended.expires and extended.expires > a.expires + timedelta(hours=1), (a, extended)
    details = await current_details(agent, preview_id("main", "feat-b"))
    assert str(b.url) in details and str(b.login_file) in details and str(b.commit)[:12] in details, details
    assert set(await agent.running_previews("main")) == {"feat-a", "feat-b"}

    pids = list(pids_of(b).values())
    down = cli(world, "down", "--branch", "feat-b")
    assert down.returncode == 0, down.stderr
    assert_gone(b, pids)


async def test_a_deleted_branch_ends_its_preview(world, agent):
    repo, _, _ = world
    a = await agent.preview_status("main", "feat-a")
    pids = list(pids_of(a).values())

    repo.git.branch("-D", "feat-a")
    ended = await agent.wait_preview("main", "feat-a", lambda s: s.state == PreviewState.ended, timeout=120)

    assert "deleted" in str(ended.ended_because), ended
    assert_gone(a, pids)


async def test_a_preview_ends_when_its_ttl_passes(world, agent):
    pipeline = load_pipeline("main", world[1])

    await agent.preview_up(pipeline, "feat-c", ttl=timedelta(seconds=150))
    c = await agent.wait_preview("main", "feat-c", timeout=SERVE)
    assert c.state == PreviewState.serving and "preview_c" in served(c), c
    pids = list(pids_of(c).values())

    ended = await agent.wait_preview("main", "feat-c", lambda s: s.state == PreviewState.ended, timeout=SERVE)

    assert "TTL" in str(ended.ended_because), ended
    assert_gone(c, pids)


async def test_a_merged_branch_ends_its_preview_and_a_broken_head_is_reported(world, agent):
    repo, config, _ = world
    on_branch(repo, "feat-d", {example.BROKEN_PATH: example.BROKEN_DAG}, "broken d", new=True)
    pipeline = load_pipeline("main", config)

    await agent.preview_up(pipeline, "feat-d")
    d = await agent.wait_preview("main", "feat-d", timeout=SERVE)
    assert d.state == PreviewState.broken and d.commit is None and "orders_hourly.py" in str(d.error), d

    repo.git.merge("feat-d", "--no-ff", "-m", "merge feat-d")
    ended = await agent.wait_preview("main", "feat-d", lambda s: s.state == PreviewState.ended, timeout=120)

    assert "merged" in str(ended.ended_because), ended
    assert not Path(str(d.login_file)).parent.parent.exists()
