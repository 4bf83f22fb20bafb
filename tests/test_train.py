"""DeployTrain on the time-skipping server, with real git, real Airflow parsing and real local environments."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus

from activities.targets.local import LocalEnvironment
from activities.validate import validate
from airagent import example
from airagent.models import Control, Outcome, TrainState, ValidateInput, ValidationReport
from tests.conftest import Drive, make_pipeline, running_worker, start_train
from worker.main import ACTIVITIES


def live_commit(pipeline, env: str) -> str | None:
    live = LocalEnvironment(pipeline.environment(env).target.path).live()
    return live.commit if live else None


def swaps(pipeline, env: str) -> list:
    return LocalEnvironment(pipeline.environment(env).target.path).record().history


def soaking(env: str):
    return lambda s: s.stage == "soak" and s.environment == env and s.stages[-1].outcome == Outcome.running


async def test_deploys_head_through_both_environments(agent, pipeline, monorepo, drive):
    head = monorepo.head.commit.hexsha
    handle = await start_train(agent, pipeline, head)
    assert handle.id == f"train/main/{head[:12]}"
    status = await drive.finish(handle.id)

    assert status.state == TrainState.succeeded, status.reason
    assert [(s.name, s.environment) for s in status.stages] == [
        ("diff", None),
        ("build", None),
        ("validate", None),
        ("roll", "staging"),
        ("soak", "staging"),
        ("roll", "prod"),
        ("soak", "prod"),
    ]
    assert all(s.ended and s.ended >= s.started for s in status.stages)
    assert live_commit(pipeline, "staging") == live_commit(pipeline, "prod") == head
    assert status.mode == "rebuild"  # a first deploy carries everything, the requirements too
    assert {c.author for c in status.commits} == {"Ada Lovelace", "Grace Hopper", "Linus Ops"}
    assert ", 4 DAGs (" in status.validation, status.validation
    assert all(e.live == status.release for e in status.environments)


async def test_second_train_is_dags_only_then_noop(agent, pipeline, monorepo, drive):
    first = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    assert first.state == TrainState.succeeded
    sha = example.commit(
        monorepo,
        {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)},
        "finance: more fx steps",
        "finance",
    )
    second = await drive.finish((await start_train(agent, pipeline, sha)).id)
    assert second.state == TrainState.succeeded, second.reason
    assert second.mode == "dags-only"
    assert [c.summary for c in second.commits] == ["finance: more fx steps"]
    assert second.environment_status("prod").previous == first.release

    # The same sha again is a new run of the same train id, and finds nothing to do.
    third = await drive.finish((await start_train(agent, pipeline, sha)).id)
    assert third.state == TrainState.noop
    assert len(swaps(pipeline, "prod")) == 2


async def test_a_stage_whose_worker_keeps_dying_is_tried_until_it_succeeds(client, temporal_env, pipeline, monorepo):
    """A worker lost again and again during one stage is a fault, not a verdict on the commits: the stage is
    tried again until its deadline, however many attempts that takes."""
    attempts: list[int] = []

    @activity.defn(name="validate")
    def validate_on_a_dying_worker(input: ValidateInput) -> ValidationReport:
        attempts.append(activity.info().attempt)
        if len(attempts) <= 5:
            raise RuntimeError("the worker running validate was lost")
        return validate(input)

    activities = [validate_on_a_dying_worker if a is validate else a for a in ACTIVITIES]
    async with running_worker(client, activities) as agent:
        handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
        status = await Drive(temporal_env, agent).finish(handle.id)

    assert status.state == TrainState.succeeded, status.reason
    assert attempts == [1, 2, 3, 4, 5, 6]
    assert live_commit(pipeline, "prod") == monorepo.head.commit.hexsha


@pytest.mark.parametrize(
    "path, content",
    [(example.BROKEN_PATH, example.BROKEN_DAG), ("plugins/example_plugin.py", "import pandas_but_misspelled\n")],
    ids=["dag", "plugin"],
)
async def test_a_broken_dag_or_plugin_fails_validate_and_touches_nothing(
    agent, pipeline, monorepo, drive, path, content
):
    good = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    assert good.state == TrainState.succeeded
    before = {env: swaps(pipeline, env) for env in ("staging", "prod")}
    sha = example.commit(monorepo, {path: content}, "v2 that does not import", "marketing")

    handle = await start_train(agent, pipeline, sha)
    status = await drive.finish(handle.id)

    assert status.state == TrainState.failed
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED  # red in Temporal's own list
    assert await agent.wait(handle.id) == status  # read the same way as a train that succeeded
    assert status.stage == "validate"
    assert path in status.reason
    assert "pandas_but_misspelled" in status.reason
    assert {env: swaps(pipeline, env) for env in ("staging", "prod")} == before
    assert live_commit(pipeline, "prod") == good.target


async def test_noop_when_only_ignored_files_changed(agent, pipeline, monorepo, drive):
    head = monorepo.head.commit.hexsha
    await drive.finish((await start_train(agent, pipeline, head)).id)
    sha = example.commit(monorepo, {"docs/runbook.md": "# Runbook\n"}, "docs: runbook")
    docs_only = await drive.finish((await start_train(agent, pipeline, sha)).id)
    assert docs_only.state == TrainState.noop, docs_only.reason
    assert docs_only.kinds == ["ignored"]
    assert [s.name for s in docs_only.stages] == ["diff"]
    # Nothing rolled: the environments keep the commit they ran, and get the runbook with their next change.
    assert live_commit(pipeline, "staging") == live_commit(pipeline, "prod") == head
    assert len(swaps(pipeline, "prod")) == 1


async def test_thirty_minute_soak_passes_on_skipped_time(agent, monorepo, tmp_path, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="10m")
    status = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    assert status.state == TrainState.succeeded, status.reason
    soaks = [s for s in status.stages if s.name == "soak"]
    assert [s.outcome for s in soaks] == [Outcome.ok, Outcome.ok]
    assert all(s.ended - s.started >= timedelta(minutes=30) for s in soaks)
    assert "3 checks" in soaks[0].detail


async def test_pause_during_soak_holds_until_resume(agent, monorepo, tmp_path, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="10m")
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    await drive.until(handle.id, soaking("staging"))

    ack = await agent.control(handle.id, "pause", Control(by="ops", reason="investigating"))
    assert ack.accepted
    paused = await drive.until(handle.id, lambda s: s.state == TrainState.paused)
    # Hours pass on the server's clock while paused; the soak does not move on.
    await drive.skip(timedelta(hours=2))
    held = await agent.status(handle.id)
    assert held.state == TrainState.paused and held.stage == "soak" and held.environment == "staging"
    assert live_commit(pipeline, "prod") is None

    assert (await agent.control(handle.id, "pause")).accepted is False
    assert (await agent.control(handle.id, "resume", Control(by="ops"))).accepted
    status = await drive.finish(handle.id)
    assert status.state == TrainState.succeeded
    assert [(e.control, e.by, e.accepted) for e in status.events] == [
        ("pause", "ops", True),
        ("resume", "ops", True),
    ]
    assert paused.events[0].reason == "investigating"


async def test_probes_go_on_while_paused_and_still_roll_back(agent, monorepo, tmp_path, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="5m")
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    await drive.until(handle.id, soaking("staging"))
    assert (await agent.control(handle.id, "pause", Control(by="ops"))).accepted
    await drive.until(handle.id, lambda s: s.state == TrainState.paused)
    await drive.skip(timedelta(minutes=20))
    held = await agent.status(handle.id)
    assert len(held.environment_status("staging").probes["marker"]) >= 3, "probes ran while paused"

    LocalEnvironment(pipeline.environment("staging").target.path).current.unlink()  # staging breaks
    status = await drive.finish(handle.id)

    assert status.state == TrainState.rolled_back, status.reason
    assert status.reason.startswith("soak staging: marker: `current` → None") and "threshold" in status.reason
    assert status.environment_status("staging").state == "rolled_back"
    assert live_commit(pipeline, "prod") is None


async def test_abort_during_prod_soak_rolls_back_prod_and_staging(agent, pipeline, monorepo, tmp_path, drive):
    first = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    soaky = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="10m")
    sha = example.commit(
        monorepo,
        {"plugins/example_plugin.py": "# v2\n" + example.FILES["plugins/example_plugin.py"]},
        "platform: plugin v2",
    )
    handle = await start_train(agent, soaky, sha)
    await drive.until(handle.id, soaking("prod"))
    assert live_commit(soaky, "prod") == sha

    ack = await agent.control(handle.id, "abort", Control(by="oncall", reason="pager went off"))
    assert ack.accepted, ack.message
    status = await drive.finish(handle.id)

    assert status.state == TrainState.aborted
    assert "oncall" in status.reason and "pager went off" in status.reason
    assert status.mode == "restart"
    assert [(s.name, s.environment) for s in status.stages[-2:]] == [("rollback", "prod"), ("rollback", "staging")]
    for env in ("staging", "prod"):
        assert live_commit(soaky, env) == first.target
        assert [s.action for s in swaps(soaky, env)] == ["roll", "roll", "rollback"]


async def test_rollback_update_rejected_before_any_roll_accepted_after(agent, monorepo, tmp_path, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="10m")
    pipeline.environments[0].require_approval = True  # holds the train before its first roll
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    await drive.until(handle.id, lambda s: s.stage == "approve")

    early = await agent.control(handle.id, "rollback", Control(by="ops"))
    assert not early.accepted
    assert "no environment has been rolled yet" in early.message

    assert (await agent.control(handle.id, "approve", Control(by="ops"))).accepted
    await drive.until(handle.id, soaking("staging"))
    wrong = await agent.control(handle.id, "rollback", Control(environment="prod"))
    assert not wrong.accepted and "prod was not rolled" in wrong.message
    ack = await agent.control(handle.id, "rollback", Control(by="ops", reason="bad numbers"))
    assert ack.accepted
    status = await drive.finish(handle.id)
    assert status.state == TrainState.rolled_back
    assert live_commit(pipeline, "staging") is None and live_commit(pipeline, "prod") is None
    assert status.environment_status("staging").state == "rolled_back"
    # Rejected updates never reach the train; accepted ones are in its event log.
    assert [(e.control, e.accepted) for e in status.events] == [("approve", True), ("rollback", True)]


async def test_signal_without_input_pauses(agent, monorepo, tmp_path, client, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", soak="30m", probe_interval="10m")
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    await drive.until(handle.id, soaking("staging"))
    await client.get_workflow_handle(handle.id).signal("pause")
    status = await drive.until(handle.id, lambda s: s.state == TrainState.paused)
    assert status.events[0].by is None and status.events[0].accepted
    await client.get_workflow_handle(handle.id).signal("abort")
    assert (await drive.finish(handle.id)).state == TrainState.aborted


async def test_approval_gate_holds_prod(agent, monorepo, tmp_path, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs")
    pipeline.environments[1].require_approval = True
    handle = await start_train(agent, pipeline, monorepo.head.commit.hexsha)
    waiting = await drive.until(handle.id, lambda s: s.stage == "approve")
    assert waiting.environment == "prod" and live_commit(pipeline, "prod") is None
    ack = await agent.control(handle.id, "approve", Control(by="release-manager", reason="CAB ok"))
    assert ack.accepted
    status = await drive.finish(handle.id)
    assert status.state == TrainState.succeeded
    assert live_commit(pipeline, "prod") == status.target


async def test_a_broken_dag_is_held_back_and_the_other_teams_change_reaches_prod(agent, pipeline, monorepo, drive):
    live = (await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)).target
    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: hourly v2", "marketing")
    good = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "finance: more fx", "finance"
    )

    status = await drive.finish((await start_train(agent, pipeline, good)).id)

    assert status.state == TrainState.succeeded, status.reason
    assert [(h.sha, h.author) for h in status.held] == [(broken, example.AUTHORS["marketing"][0])]
    assert example.BROKEN_PATH in status.held[0].reason and "pandas_but_misspelled" in status.held[0].reason
    prod = LocalEnvironment(pipeline.environment("prod").target.path)
    assert prod.record().live.commit == status.release_commit
    files = Path(prod.current) / "dags"
    assert (files / "finance/fx_rates.py").read_text() == example.dag_file("fx_rates", tasks=6)
    assert (files / "marketing/orders_hourly.py").read_text() == example.FILES[example.BROKEN_PATH]

    # The fix lifts the hold: the held commit and the fix ride the next train together.
    fix = example.commit(
        monorepo, {example.BROKEN_PATH: example.dag_file("orders_hourly", tasks=5)}, "fix", "marketing"
    )
    fixed = await drive.finish((await start_train(agent, pipeline, fix)).id)
    assert fixed.state == TrainState.succeeded and fixed.held == [], fixed.reason
    assert {c.sha for c in fixed.commits} >= {broken, fix} and live not in {c.sha for c in fixed.commits}
    assert live_commit(pipeline, "prod") == fix


async def test_isolation_off_fails_the_whole_train(agent, monorepo, tmp_path, drive):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", isolation=False)
    await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: hourly v2", "marketing")
    good = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance"
    )

    status = await drive.finish((await start_train(agent, pipeline, good)).id)
    assert status.state == TrainState.failed and status.stage == "validate" and status.held == []


async def test_requirements_that_do_not_resolve_are_held_back_and_the_rest_deploys(agent, pipeline, monorepo, drive):
    await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    unresolvable = example.FILES["requirements.txt"] + "airagent-no-such-package-anywhere==0.0.1\n"
    bad = example.commit(monorepo, {"requirements.txt": unresolvable}, "platform: a new package", "platform")
    good = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=6)}, "fx", "finance"
    )

    status = await drive.finish((await start_train(agent, pipeline, good)).id)

    assert status.state == TrainState.succeeded, status.reason
    [held] = status.held
    assert held.sha == bad and held.reason.startswith("requirements.txt: building the runtime")
    assert "airagent-no-such-package-anywhere" in held.reason
    prod = Path(LocalEnvironment(pipeline.environment("prod").target.path).current)
    assert (prod / "requirements.txt").read_text() == example.FILES["requirements.txt"]
    assert (prod / "dags/finance/fx_rates.py").read_text() == example.dag_file("fx_rates", tasks=6)
