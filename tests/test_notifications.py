"""Train outcomes reach a real local HTTP receiver; a receiver that is down never fails a train."""

from __future__ import annotations

import pytest

from airagent import example
from airagent.config import Notification
from airagent.config.analysis import Analysis
from airagent.models import Control, TrainState
from airagent.models.analysis import Phase
from tests.conftest import make_pipeline, start_train
from tests.receiver import Receiver


@pytest.fixture
def receivers(monkeypatch):
    webhook, slack, down = Receiver(), Receiver(), Receiver(fail=True)
    monkeypatch.setenv("HOOK_URL", webhook.url)
    monkeypatch.setenv("SLACK_URL", slack.url)
    monkeypatch.setenv("DOWN_URL", down.url)
    yield webhook, slack, down
    for r in (webhook, slack, down):
        r.close()


async def test_outcomes_are_delivered_and_a_dead_receiver_fails_nothing(agent, drive, monorepo, tmp_path, receivers):
    webhook, slack, down = receivers
    pipeline = make_pipeline(
        monorepo,
        tmp_path / "envs",
        notifications=[
            Notification(type="webhook", url_env="HOOK_URL"),
            Notification(type="slack", url_env="SLACK_URL", on=["failed"]),
            Notification(type="webhook", url_env="DOWN_URL"),
        ],
        teams={"marketing": ["dags/marketing/*"], "finance": ["dags/finance/*"]},
    )

    good = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    assert good.state == TrainState.succeeded
    assert webhook.received[-1]["state"] == "succeeded"
    assert webhook.received[-1]["authors"] == ["Ada Lovelace", "Grace Hopper", "Linus Ops"]
    assert slack.received == []  # only failures go to this one
    # Retried, then given up after five tries; on a busy host a try can time out before it reaches this receiver.
    assert 2 <= len(down.received) <= 5
    assert "not delivered" in good.events[-1].message and "DOWN_URL" in good.events[-1].message
    assert down.url not in good.model_dump_json()  # the URL is a secret: never in history

    sha = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "orders v2", "marketing")
    bad = await drive.finish((await start_train(agent, pipeline, sha)).id)
    assert bad.state == TrainState.failed
    failed = webhook.received[-1]
    assert failed["state"] == "failed" and failed["broken"] == [example.BROKEN_PATH]
    assert failed["teams"] == ["marketing"] and failed["authors"] == ["Ada Lovelace"]
    text = slack.received[-1]["text"]
    assert "failed" in text and "owning team: marketing" in text and "orders v2 — Ada Lovelace" in text


async def test_the_team_whose_commit_is_held_back_is_told(agent, drive, monorepo, tmp_path, receivers):
    webhook, slack, _ = receivers
    pipeline = make_pipeline(
        monorepo,
        tmp_path / "envs",
        notifications=[
            Notification(type="webhook", url_env="HOOK_URL"),
            Notification(type="slack", url_env="SLACK_URL", on=["failed", "held"]),
        ],
        teams={"marketing": ["dags/marketing/*"], "finance": ["dags/finance/*"]},
    )
    await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "orders v2", "marketing")
    good = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance"
    )

    status = await drive.finish((await start_train(agent, pipeline, good)).id)

    assert status.state == TrainState.succeeded
    told = webhook.received[-1]
    assert told["teams"] == ["marketing"] and [h["sha"] for h in told["held"]] == [broken]
    assert example.BROKEN_PATH in told["held"][0]["reason"]
    text = slack.received[-1]["text"]
    assert f"held back: `{broken[:8]}` by Ada Lovelace" in text and "pandas_but_misspelled" in text


async def test_an_inconclusive_soak_pauses_tells_the_receivers_and_approve_lets_it_go_on(
    agent, drive, monorepo, tmp_path, receivers
):
    """A files-only environment has no Airflow to read, so an Airflow metric there stays inconclusive: with
    `inconclusive: pause` the train waits for a person; with `rollback` it rolls back."""
    webhook, _, _ = receivers
    waiting = {"metrics": [{"name": "health", "provider": "airflow", "measure": "health", "inconclusive": "pause"}]}
    pipeline = make_pipeline(
        monorepo,
        tmp_path / "envs",
        soak="30s",
        environments=("staging",),
        notifications=[Notification(type="webhook", url_env="HOOK_URL")],
    )
    pipeline.environments[0].analysis = Analysis.model_validate(waiting)
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)

    paused = await drive.until(handle.id, lambda s: s.state == TrainState.paused)
    assert paused.stage == "soak" and "inconclusive, waiting for approve or abort" in paused.stages[-1].detail
    [health] = paused.environment_status("staging").analysis
    assert health.verdict == Phase.inconclusive and "no Airflow here" in health.line()
    assert webhook.received[-1]["state"] == "paused"
    assert (await agent.control(handle.id, "approve", Control(by="ops", reason="read it myself"))).accepted
    status = await drive.finish(handle.id)
    assert status.state == TrainState.succeeded, status.reason

    # Read again on the release before, an environment-wide metric as inconclusive there blames no commit: a
    # metric of the release's own DAGs shows the rollback.
    judged = {"name": "changed_dags", "provider": "airflow", "measure": "changed_dags", "inconclusive": "rollback"}
    pipeline.environments[0].analysis = Analysis.model_validate({"metrics": [judged]})
    sha = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance")
    status = await drive.finish((await start_train(agent, pipeline, sha)).id)
    assert status.state == TrainState.rolled_back and "changed_dags: inconclusive" in status.reason, status.reason
