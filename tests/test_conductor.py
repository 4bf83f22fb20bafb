"""The conductor on the time-skipping server: batching, order, failures that do not stall, pause and freeze."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.service import RPCError

from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import DeployWindow
from airagent.models import Control
from tests.conftest import make_pipeline, start_train


@pytest.fixture(autouse=True)
async def conductor_ends_with_the_test(client):
    """Conductors run for ever; this one must not outlive its test's worker."""
    yield
    try:
        await client.get_workflow_handle("pipeline/main").terminate("test over")
    except RPCError:
        pass


def settled(head: str):
    """The conductor has deployed (or given up on) `head` and runs nothing."""
    return lambda s: s.state.running is None and s.state.head == head and s.queued is None


def live_commits(pipeline, env: str) -> list[str]:
    return [h.commit for h in LocalEnvironment(pipeline.environment(env).target.path).manifest().history]


async def test_a_burst_of_commits_rides_few_trains_in_order(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1h")
    await agent.start_pipeline(pipeline)
    shas = []
    for i in range(50):
        shas.append(example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=2 + i)},
                                   f"fx v{i}", "finance"))
        await agent.notify(pipeline, shas[-1], by="ci")

    status = await drive.pipeline_until("main", settled(shas[-1]), step=timedelta(seconds=5))

    trains = status.state.trains
    assert all(t.state == "succeeded" for t in trains), [(t.id, t.reason) for t in trains]
    assert len(trains) <= 10, f"{len(trains)} trains for 50 commits"
    assert status.state.last_deployed == shas[-1]
    assert sum(t.commits for t in trains) == 53  # every commit rode exactly one train (3 from the repo's creation)
    order = [shas.index(t.sha) if t.sha in shas else -1 for t in trains]
    assert order == sorted(order)
    for env in ("staging", "prod"):
        deployed = live_commits(pipeline, env)
        assert deployed[-1] == shas[-1]
        assert [shas.index(c) for c in deployed[1:]] == sorted(shas.index(c) for c in deployed[1:])


async def test_a_failed_commit_is_not_retried_but_the_fix_flows(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1m")
    await agent.start_pipeline(pipeline)
    await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha))

    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "break", "marketing")
    status = await drive.pipeline_until("main", settled(broken))
    assert status.state.trains[-1].state == "failed" and broken in status.state.failed
    # Polls come and go; the failed commit is not tried again on its own.
    await drive.env.sleep(timedelta(seconds=600))
    assert len((await agent.pipeline_status("main")).state.trains) == 2

    repaired = example.dag_file("orders_hourly", tasks=4, schedule="@hourly")
    fix = example.commit(monorepo, {example.BROKEN_PATH: repaired}, "fix", "marketing")
    status = await drive.pipeline_until("main", settled(fix))
    assert [t.state for t in status.state.trains] == ["succeeded", "failed", "succeeded"]
    assert status.state.last_deployed == fix
    assert live_commits(pipeline, "prod")[-1] == fix


async def test_one_teams_broken_dag_is_held_while_another_teams_change_flows(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1m",
                             teams={"marketing": ["dags/marketing/*"], "finance": ["dags/finance/*"]})
    await agent.start_pipeline(pipeline)
    await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha))

    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: hourly v2", "marketing")
    good = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance")
    await agent.notify(pipeline, good)
    status = await drive.pipeline_until("main", settled(good))

    assert status.state.trains[-1].state == "succeeded" and status.state.last_deployed == good
    [held] = status.state.held
    assert (held.sha, held.author, held.teams) == (broken, example.AUTHORS["marketing"][0], ["marketing"])
    assert example.BROKEN_PATH in held.reason and "pandas_but_misspelled" in held.reason
    assert broken not in live_commits(pipeline, "prod")

    fix = example.commit(monorepo, {example.BROKEN_PATH: example.dag_file("orders_hourly", tasks=4)}, "fix",
                         "marketing")
    await agent.notify(pipeline, fix)
    status = await drive.pipeline_until("main", settled(fix))
    assert status.state.held == [] and live_commits(pipeline, "prod")[-1] == fix


async def test_pause_and_freeze_hold_new_trains_while_the_running_one_finishes(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="15m", poll_interval="1m")
    await agent.start_pipeline(pipeline)
    first = await drive.pipeline_until("main", lambda s: s.state.running is not None)
    conductor = "pipeline/main"

    assert (await agent.control(conductor, "pause", Control(by="ops", reason="release freeze week"))).accepted
    newer = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    held = await drive.pipeline_until("main", lambda s: s.state.running is None and s.queued == newer)
    assert [t.sha for t in held.state.trains] == [first.state.running.sha]
    assert held.state.trains[0].state == "succeeded"  # the running train was not touched

    no_reason = await agent.control(conductor, "freeze", Control(by="ops"))
    assert not no_reason.accepted and "needs a reason" in no_reason.message
    assert (await agent.control(conductor, "freeze", Control(by="ops", reason="incident 42"))).accepted
    assert (await agent.control(conductor, "resume", Control(by="ops"))).accepted
    await drive.env.sleep(timedelta(seconds=600))
    frozen = await agent.pipeline_status("main")
    assert frozen.state.frozen == "incident 42" and frozen.state.running is None and len(frozen.state.trains) == 1

    assert (await agent.control(conductor, "unfreeze", Control(by="ops", reason="resolved"))).accepted
    done = await drive.pipeline_until("main", settled(newer), step=timedelta(seconds=300))
    assert done.state.last_deployed == newer
    # A rejected update never reaches the conductor; the accepted controls are its log, with who and why.
    assert [(e.control, e.by, e.reason) for e in done.state.events] == [
        ("pause", "ops", "release freeze week"), ("freeze", "ops", "incident 42"), ("resume", "ops", None),
        ("unfreeze", "ops", "resolved"),
    ]




async def test_a_deny_window_delays_the_train_until_it_closes(agent, drive, monorepo, tmp_path):
    now = await drive.env.get_current_time()
    opened = now - timedelta(minutes=1)
    deny = DeployWindow(kind="deny", name="change freeze", cron=f"{opened.minute} {opened.hour} * * *",
                        duration="2h")
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="10m", windows=[deny])
    await agent.start_pipeline(pipeline)

    held = await drive.pipeline_until("main", lambda s: s.queued == monorepo.head.commit.hexsha)
    assert not held.window_open and "change freeze" in held.window and held.state.trains == []
    await drive.env.sleep(timedelta(minutes=90))
    assert (await agent.pipeline_status("main")).state.trains == []

    done = await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha), step=timedelta(minutes=5))
    assert done.window_open
    assert done.state.trains[0].started >= opened.replace(second=0, microsecond=0) + timedelta(hours=2)


async def test_deploy_after_the_conductor_polled_the_same_commit_is_its_train(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="5m", poll_interval="1h")
    head = monorepo.head.commit.hexsha
    await agent.start_pipeline(pipeline)
    polled = await drive.pipeline_until("main", lambda s: s.state.running is not None)

    answer = await agent.deploy(pipeline, head)

    assert answer.train == polled.state.running.id and "is deploying it" in answer.message
    done = await drive.pipeline_until("main", settled(head), step=timedelta(minutes=2))
    assert [t.sha for t in done.state.trains] == [head]
    assert live_commits(pipeline, "prod") == [head]


async def test_a_deploy_before_the_conductor_polls_rides_one_train(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="5m", poll_interval="1h")
    head = monorepo.head.commit.hexsha
    answer = await agent.deploy(pipeline, head)  # starts a conductor that does not follow the branch
    await agent.start_pipeline(pipeline)  # now it does, and its first poll sees the same head

    done = await drive.pipeline_until("main", settled(head), step=timedelta(minutes=2))
    assert [t.id for t in done.state.trains] == [answer.train]
    assert live_commits(pipeline, "prod") == [head]


async def test_a_train_started_by_hand_for_the_same_commit_does_not_stall_the_conductor(agent, drive, monorepo,
                                                                                        tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="5m")
    pipeline.environments[0].require_approval = True
    head = monorepo.head.commit.hexsha
    by_hand = await start_train(agent, pipeline, head)
    await drive.until(by_hand.id, lambda s: s.stage == "approve")

    await agent.start_pipeline(pipeline)
    waiting = await drive.pipeline_until("main", lambda s: s.state.blocked is not None)
    assert "started outside the conductor" in waiting.state.blocked and waiting.state.trains == []

    assert (await agent.control(by_hand.id, "approve")).accepted
    await drive.finish(by_hand.id)
    # The conductor's own train for that commit then finds nothing left to do.
    done = await drive.pipeline_until("main", settled(head), step=timedelta(minutes=1))
    assert [t.state for t in done.state.trains] == ["noop"]
