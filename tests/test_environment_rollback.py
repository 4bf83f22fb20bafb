"""Rolling an environment back outside any train: no rebuild, the pipeline frozen so nothing undoes it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from temporalio.client import WorkflowFailureError

from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.models import ConductorStatus, Control, EnvironmentRollbackInput
from interface.cli.pipeline import live_releases
from interface.display import render_pipeline
from tests.conftest import make_pipeline, start_train
from workflows.environment_rollback import EnvironmentRollback


async def roll_back(agent, pipeline, env: str, **kwargs):
    return await agent.client.execute_workflow(
        EnvironmentRollback.run,
        EnvironmentRollbackInput(pipeline=pipeline, environment=env, **kwargs),
        id=f"rollback/main/{env}",
        task_queue=agent.task_queue,
    )


def rendered(status: ConductorStatus) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_pipeline(status, live_releases(status)))
    return console.export_text()


async def test_rollback_puts_the_previous_release_back_and_freezes_the_pipeline(agent, drive, monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs", poll_interval="1h")
    await agent.start_pipeline(pipeline)
    first = await drive.pipeline_until("main", lambda s: s.state.last_deployed == monorepo.head.commit.hexsha)
    bad = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=9)}, "fx", "finance")
    await agent.notify(pipeline, bad)
    await drive.pipeline_until("main", lambda s: s.state.last_deployed == bad)
    prod = LocalEnvironment(pipeline.environment("prod").target.path)
    good_release = prod.record().previous.id

    result = await roll_back(agent, pipeline, "prod", by="oncall", reason="numbers look off")

    assert result.live == good_release and prod.live().commit == first.state.last_deployed
    assert [s.action for s in prod.record().history] == ["roll", "roll", "rollback"]
    assert LocalEnvironment(pipeline.environment("staging").target.path).live().commit == bad
    frozen = await agent.pipeline_status("main")
    assert "prod rolled back" in frozen.state.frozen and "oncall" in frozen.state.frozen
    assert "numbers look off" in frozen.state.frozen
    # `last deployed` is still the bad commit; beside it, what prod runs now.
    shown = rendered(frozen)
    assert f"last deployed │ {bad[:12]}" in shown
    assert "rolled back   │ " in shown and f"prod rolled back from {result.replaced} to {good_release}" in shown
    assert f"prod runs     │ {good_release} at {first.state.last_deployed[:12]}" in shown  # its own record says

    newer = example.commit(
        monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=3)}, "fix", "finance"
    )
    await agent.notify(pipeline, newer)
    held = await drive.pipeline_until("main", lambda s: s.queued == newer)
    assert held.state.running is None and len(held.state.trains) == 2

    assert (await agent.control("pipeline/main", "unfreeze", Control(by="oncall", reason="fixed"))).accepted
    done = await drive.pipeline_until("main", lambda s: s.state.last_deployed == newer)
    assert done.state.trains[-1].state == "succeeded" and prod.live().commit == newer
    assert "rolled back   │" not in rendered(done)  # the train since deployed over it
    await agent.client.get_workflow_handle("pipeline/main").terminate("test over")


async def test_rollback_to_a_release_never_live_there_is_refused(agent, drive, pipeline, monorepo):
    await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    with pytest.raises(WorkflowFailureError) as refused:
        await roll_back(agent, pipeline, "prod", to_release="0123456789ab-deadbeef")
    assert "was never live on prod" in refused.value.cause.message
    with pytest.raises(WorkflowFailureError) as nothing:
        await roll_back(agent, pipeline, "staging")
    assert "no earlier release" in nothing.value.cause.message


async def test_rollback_without_a_conductor_still_rolls(agent, drive, pipeline, monorepo):
    first = await drive.finish((await start_train(agent, pipeline, monorepo.head.commit.hexsha)).id)
    sha = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=9)}, "fx", "finance")
    await drive.finish((await start_train(agent, pipeline, sha)).id)
    result = await roll_back(agent, pipeline, "prod")
    assert result.live == first.release and result.replaced != first.release
