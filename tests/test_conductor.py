"""The conductor on the time-skipping server: batching, order, failures that do not stall, pause and freeze."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError

from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import DeployWindow, Probes, WebhookProbe
from airagent.models import Control, train_id
from airagent.repo import stands_for
from tests.conftest import current_details, make_pipeline, start_train


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
    return [h.commit for h in LocalEnvironment(pipeline.environment(env).target.path).record().history]


async def test_a_burst_of_commits_rides_few_trains_in_order(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1h")
    await agent.start_pipeline(pipeline)
    shas = []
    for i in range(50):
        shas.append(
            example.commit(
                monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=2 + i)}, f"fx v{i}", "finance"
            )
        )
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
    history = await agent.client.get_workflow_handle("pipeline/main").fetch_history()
    collected = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "collect_garbage"
    ]
    assert len(collected) == len(trains)  # disk is pruned after every train


async def test_a_failed_commit_is_not_retried_but_the_fix_flows(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1m")
    await agent.start_pipeline(pipeline)
    await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha))

    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "break", "marketing")
    status = await drive.pipeline_until("main", settled(broken))
    assert status.state.trains[-1].state == "failed" and broken in status.state.failed
    # Polls come and go; the failed commit is not tried again on its own.
    await drive.skip(timedelta(seconds=600))
    assert len((await agent.pipeline_status("main")).state.trains) == 2

    repaired = example.dag_file("orders_hourly", tasks=4, schedule="@hourly")
    fix = example.commit(monorepo, {example.BROKEN_PATH: repaired}, "fix", "marketing")
    status = await drive.pipeline_until("main", settled(fix))
    assert [t.state for t in status.state.trains] == ["succeeded", "failed", "succeeded"]
    assert status.state.last_deployed == fix
    assert live_commits(pipeline, "prod")[-1] == fix


async def test_one_teams_broken_dag_is_held_while_another_teams_change_flows(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(
        monorepo,
        tmp_path / "envs",
        poll_interval="1m",
        teams={"marketing": ["dags/marketing/*"], "finance": ["dags/finance/*"]},
    )
    await agent.start_pipeline(pipeline)
    await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha))

    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: hourly v2", "marketing")
    good = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance"
    )
    await agent.notify(pipeline, good)
    status = await drive.pipeline_until("main", settled(good))

    assert status.state.trains[-1].state == "succeeded" and status.state.last_deployed == good
    [held] = status.state.held
    assert (held.sha, held.author, held.teams) == (broken, example.AUTHORS["marketing"][0], ["marketing"])
    assert example.BROKEN_PATH in held.reason and "pandas_but_misspelled" in held.reason
    assert broken not in live_commits(pipeline, "prod")
    assert broken[:8] in await current_details(agent, "pipeline/main")

    fix = example.commit(
        monorepo, {example.BROKEN_PATH: example.dag_file("orders_hourly", tasks=4)}, "fix", "marketing"
    )
    await agent.notify(pipeline, fix)
    status = await drive.pipeline_until("main", settled(fix))
    assert status.state.held == [] and live_commits(pipeline, "prod")[-1] == fix


async def test_pause_and_freeze_hold_new_trains_while_the_running_one_finishes(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="15m", poll_interval="1m")
    await agent.start_pipeline(pipeline)
    first = await drive.pipeline_until("main", lambda s: s.state.running is not None)
    conductor = "pipeline/main"

    assert (await agent.control(conductor, "pause", Control(by="ops", reason="release freeze week"))).accepted
    newer = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance"
    )
    held = await drive.pipeline_until("main", lambda s: s.state.running is None and s.queued == newer)
    assert [t.sha for t in held.state.trains] == [first.state.running.sha]
    assert held.state.trains[0].state == "succeeded"  # the running train was not touched

    no_reason = await agent.control(conductor, "freeze", Control(by="ops"))
    assert not no_reason.accepted and "needs a reason" in no_reason.message
    assert (await agent.control(conductor, "freeze", Control(by="ops", reason="incident 42"))).accepted
    assert (await agent.control(conductor, "resume", Control(by="ops"))).accepted
    await drive.skip(timedelta(seconds=600))
    frozen = await agent.pipeline_status("main")
    assert frozen.state.frozen == "incident 42" and frozen.state.running is None and len(frozen.state.trains) == 1

    assert (await agent.control(conductor, "unfreeze", Control(by="ops", reason="resolved"))).accepted
    done = await drive.pipeline_until("main", settled(newer), step=timedelta(seconds=300))
    assert done.state.last_deployed == newer
    # A rejected update never reaches the conductor; the accepted controls are its log, with who and why.
    assert [(e.control, e.by, e.reason) for e in done.state.events] == [
        ("pause", "ops", "release freeze week"),
        ("freeze", "ops", "incident 42"),
        ("resume", "ops", None),
        ("unfreeze", "ops", "resolved"),
    ]


async def test_a_deny_window_delays_the_train_until_it_closes(agent, drive, monorepo, tmp_path):
    now = await drive.env.get_current_time()
    opened = now - timedelta(minutes=1)
    deny = DeployWindow(kind="deny", name="change freeze", cron=f"{opened.minute} {opened.hour} * * *", duration="2h")
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="10m", windows=[deny])
    await agent.start_pipeline(pipeline)

    held = await drive.pipeline_until("main", lambda s: s.queued == monorepo.head.commit.hexsha)
    assert not held.window_open and "change freeze" in held.window and held.state.trains == []
    await drive.skip(timedelta(minutes=90))
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


async def test_a_train_started_by_hand_for_the_same_commit_does_not_stall_the_conductor(
    agent, drive, monorepo, tmp_path
):
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


@contextmanager
def monitoring(env: Path, mood: dict[str, str] | None = None):
    """An outside check of an environment, as a synthetic monitor would be: 500 while its live files carry
    BREAKS_MONITORING. It names no DAG, so a failure it finds cannot be traced. `mood["is"]` set to `down`
    fails whatever is live; to `lenient`, passes whatever is live."""
    mood = mood if mood is not None else {}

    class Check(BaseHTTPRequestHandler):
        def do_GET(self):
            broken = any("BREAKS_MONITORING" in p.read_text() for p in (env / "current").rglob("*.py"))
            failing = {"down": True, "lenient": False}.get(mood.get("is", ""), broken)
            self.send_response(500 if failing else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Check)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/check"
    finally:
        server.shutdown()


def monitored(monorepo, tmp_path: Path, **settings):
    """The example's pipeline, whose staging soak asks the monitoring check at $AIRAGENT_MONITORING_URL."""
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="20s", poll_interval="1h", **settings)
    staging, prod = pipeline.environments
    webhooks = [WebhookProbe(name="monitoring", url_env="AIRAGENT_MONITORING_URL")]
    return pipeline.model_copy(
        update={"environments": [staging.model_copy(update={"probes": Probes(webhooks=webhooks)}), prod]}
    )


async def test_an_untraced_soak_failure_is_bisected_to_its_commit_and_the_rest_deploys(
    agent, drive, monorepo, tmp_path, monkeypatch
):
    mood: dict[str, str] = {}
    with monitoring(tmp_path / "envs" / "staging", mood) as url:
        monkeypatch.setenv("AIRAGENT_MONITORING_URL", url)
        pipeline = monitored(
            monorepo, tmp_path, teams={"marketing": ["dags/marketing/*"], "finance": ["dags/finance/*"]}
        )
        prod = pipeline.environments[1]
        await agent.start_pipeline(pipeline)
        await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha))
        edits = [
            ("finance", "dags/finance/fx_rates.py", example.dag_file("fx_rates", tasks=6)),
            ("finance", "dags/finance/ledger_daily.py", example.dag_file("ledger_daily", tasks=3)),
            (
                "marketing",
                "dags/marketing/campaigns.py",
                example.dag_file("campaigns", tasks=2) + "# BREAKS_MONITORING\n",
            ),
            ("finance", "dags/finance/fx_rates.py", example.dag_file("fx_rates", tasks=7)),
        ]
        shas = [example.commit(monorepo, {path: text}, f"{team}: {path}", team) for team, path, text in edits]
        await agent.notify(pipeline, shas[-1])

        bisecting = await drive.pipeline_until("main", lambda s: s.state.bisection is not None)
        step = bisecting.state.bisection.step_input()
        assert (step.step, step.steps, step.environment) == (1, 2, "staging")
        assert "monitoring: failed — HTTP 500" in step.why and shas[1][:12] in step.why
        assert "bisection step 1 of ~2 on staging" in await current_details(agent, "pipeline/main")
        without_staging = pipeline.model_copy(update={"environments": [prod]})
        refused = await agent.reconfigure(without_staging, by="ops")
        assert not refused.accepted and "a bisection runs on staging" in refused.message
        status = await drive.pipeline_until(
            "main", lambda s: s.state.last_deployed == shas[-1] and s.state.running is None
        )

    assert [t.state for t in status.state.trains] == [
        "succeeded",
        "rolled_back",
        "succeeded",
        "rolled_back",
        "succeeded",
    ]
    assert [t.sha for t in status.state.trains[2:4]] == [shas[1], shas[2]]
    [held] = status.state.held
    assert (held.sha, held.regression, held.teams) == (shas[2], True, ["marketing"])
    assert "bisection" in held.reason and "monitoring" in held.reason
    live = LocalEnvironment(prod.target.path).record().live.commit
    assert stands_for(monorepo, live) == (shas[-1], [shas[2]])
    dags = prod.target.path / "current" / "dags"
    assert "BREAKS_MONITORING" not in (dags / "marketing/campaigns.py").read_text()
    assert (dags / "finance/fx_rates.py").read_text() == example.dag_file("fx_rates", tasks=7)
    assert (dags / "finance/ledger_daily.py").read_text() == example.dag_file("ledger_daily", tasks=3)

    # The monitor was wrong to mind the marker; a person lifts the hold, and the next train deploys the commit.
    mood["is"] = "lenient"
    refused = await agent.unhold("main", shas[2][:12], "ops", "")
    assert not refused.accepted and "needs a reason" in refused.message
    assert not (await agent.unhold("main", shas[0], "ops", "not held")).accepted
    ack = await agent.unhold("main", shas[2][:12], "ops", "the monitor flagged a comment")
    assert ack.accepted and "next train deploys it" in ack.message
    lifted = await drive.pipeline_until(
        "main", lambda s: s.state.running is None and s.state.trains[-1].sha == shas[-1] and len(s.state.trains) == 6
    )
    assert lifted.state.trains[-1].state == "succeeded" and lifted.state.held == []
    event = next(e for e in reversed(lifted.state.events) if e.control == "unhold")
    assert (event.by, event.reason) == ("ops", "the monitor flagged a comment")
    assert "BREAKS_MONITORING" in (dags / "marketing/campaigns.py").read_text()


async def test_an_environment_unwell_on_the_previous_release_too_blames_no_commit(
    agent, drive, monorepo, tmp_path, monkeypatch
):
    mood: dict[str, str] = {}
    with monitoring(tmp_path / "envs" / "staging", mood) as url:
        monkeypatch.setenv("AIRAGENT_MONITORING_URL", url)
        pipeline = monitored(monorepo, tmp_path)
        await agent.start_pipeline(pipeline)
        await drive.pipeline_until("main", settled(monorepo.head.commit.hexsha))
        mood["is"] = "down"
        sha = example.commit(
            monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance"
        )
        await agent.notify(pipeline, sha)
        status = await drive.pipeline_until("main", lambda s: s.state.running is None and len(s.state.trains) == 2)
        train = await drive.finish(train_id("main", sha))

    assert status.state.trains[-1].state == "failed" and status.state.held == [] and status.state.bisection is None
    assert "staging is just as unwell on" in train.reason and "no commit is blamed" in train.reason, train.reason
    assert train.soak_failed is None and [s.name for s in train.stages][-2:] == ["rollback", "confirm"]
