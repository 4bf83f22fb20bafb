"""`make demo`: the whole embedded default, end to end, checked as it goes.

Starts (or finds) the dev server, starts a worker, makes the example monorepo and
starts its pipeline's conductor, which deploys the head through staging and prod; then
one team commits a broken DAG and another a good one, notifying the conductor as CI
would: the good one goes live, the broken one is held back and never reaches an
environment, and its fix lifts the hold; last, a DAG whose task fails makes staging roll
back by itself. Every step is checked: the exit code is non-zero if anything did not
behave as described.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import git

from activities.runtime import ensure_runtime
from activities.targets.local import LocalEnvironment
from activities.targets.local_airflow import LocalAirflow
from activities.targets.local_metrics import metrics_url
from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings, home, load_pipeline
from airagent.devserver import DevServer, binary, register_search_attributes
from airagent.models import TrainState, TrainStatus, train_id
from interface.client import AirAgent
from interface.demo_prometheus import WORKER_PORT, DemoPrometheus, port
from interface.display import follow, render_pipeline
from interface.terminal import console, labelled

TRAIN_TIMEOUT = timedelta(minutes=15)


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        console.print(f"  {'✓' if ok else '✗'} {what}", style="green" if ok else "red")
        if not ok:
            self.failed.append(what)


def main(once: bool, repo: Path | None) -> int:
    state = home()
    state.mkdir(parents=True, exist_ok=True)
    server = DevServer(state)
    worker: subprocess.Popen | None = None
    prometheus: DemoPrometheus | None = None
    try:
        started = server.start()
        console.print(
            labelled(
                "Temporal",
                "bold",
                f"{'started' if started else 'already running'} on {server.address}, "
                f"Web UI http://localhost:{server.ui_port} (state in {server.db})",
            )
        )
        metrics = os.environ.get("AIRAGENT_METRICS_PORT") or str(port(WORKER_PORT))
        with open(state / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [binary("airagent"), "worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "AIRAGENT_HOME": str(state), "AIRAGENT_METRICS_PORT": metrics}
                | {"AIRAGENT_METRICS_HOST": "127.0.0.1", "AIRAGENT_DORA_EVERY_SECONDS": "30"},
            )
        console.print(labelled("worker", "bold", f"started (pid {worker.pid}, log {state / 'worker.log'})"))
        on_example = repo is None
        repo = repo or prepare_example(state / "demo")
        pipeline = load_pipeline("main", Path(repo) / "airagent.yaml")
        prometheus = watch(state, metrics, pipeline)
        checks = asyncio.run(scenario(repo, pipeline, on_example))
        if prometheus:
            scraped(checks, prometheus, pipeline)
        hints(server, prometheus)
        if checks.failed:
            console.print(f"demo: {len(checks.failed)} check(s) failed", style="red bold")
            return 1
        console.print("demo: every step behaved as described", style="green bold")
        if not once:
            console.print("Services stay up for you to explore; Ctrl-C stops them.")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 130 if once else 0
    finally:
        if prometheus:
            prometheus.stop()
        if worker and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.stop()
        console.print("stopped what the demo started")


async def scenario(repo: Path, pipeline: PipelineSettings, on_example: bool) -> Checks:
    checks = Checks()
    agent = await AirAgent.connect()
    await register_search_attributes(agent.client)

    console.rule("0. staging and prod: real Airflow, running on their own")
    for env in pipeline.environments:
        target = local_target(env)
        if target.airflow:
            local = LocalAirflow(env.name, target, env.probes)
            runtime = None if local.files.live() else ensure_runtime(pipeline.runtime, None)[1]
            console.print(f"{env.name}: {local.up(runtime)} (API http://127.0.0.1:{target.port})")

    console.rule("1. the conductor deploys the head of main through staging and prod")
    conductor = await agent.start_pipeline(pipeline)
    console.print(labelled(conductor.id, "bold", f"running: every commit on {pipeline.branch} deploys itself"))
    head = git.Repo(repo).head.commit.hexsha
    status = await train_for(agent, pipeline, head)
    checks.expect(status.state in (TrainState.succeeded, TrainState.noop), f"train ended {status.state.value}")
    for env in pipeline.environments:
        live = LocalEnvironment(local_target(env).path).live()
        checks.expect(
            live is not None and live.commit == head,
            f"{env.name} runs {head[:12]} ({live.id if live else 'nothing'}) at {local_target(env).path}",
        )
    if not on_example:
        console.print("(a repository was given: the broken-commit step runs only on the example)")
        return checks

    console.rule("2. marketing commits a broken DAG, finance a good one: finance's goes live, marketing's is held")
    broken = example.commit(
        git.Repo(repo),
        {example.BROKEN_PATH: example.BROKEN_DAG},
        "marketing: orders_hourly reads the new orders feed",
        "marketing",
    )
    fx = example.dag_file("fx_rates", tasks=3, schedule="@hourly", note=f"currency rates, {broken[:8]}")
    good = example.commit(git.Repo(repo), {"dags/finance/fx_rates.py": fx}, "finance: one more fx step", "finance")
    ack = await agent.notify(pipeline, good, by="demo (as CI would after a merge)")
    console.print(f"notified the conductor: {ack.message}")
    status = await train_for(agent, pipeline, good)
    checks.expect(status.state == TrainState.succeeded, f"train ended {status.state.value}: {status.reason}")
    checks.expect([h.sha for h in status.held] == [broken], f"held back: {[h.sha[:12] for h in status.held]}")
    checks.expect(
        bool(status.held)
        and example.BROKEN_PATH in status.held[0].reason
        and "pandas_but_misspelled" in status.held[0].reason,
        f"the hold names {example.BROKEN_PATH} and its error",
    )
    for env in pipeline.environments:
        files = LocalEnvironment(local_target(env).path).current / "dags"
        checks.expect(
            (files / "finance/fx_rates.py").read_text() == fx
            and (files / example.BROKEN_PATH.removeprefix("dags/")).read_text() != example.BROKEN_DAG,
            f"{env.name} has finance's DAG and not marketing's broken one",
        )
    console.print(render_pipeline(await agent.pipeline_status(pipeline.name)))

    console.rule("3. marketing repairs its DAG: the held commit and the fix go live together, the hold lifts")
    fix = example.commit(
        git.Repo(repo),
        {example.BROKEN_PATH: example.dag_file("orders_hourly", schedule="@hourly")},
        "marketing: repair orders_hourly",
        "marketing",
    )
    await agent.notify(pipeline, fix, by="demo (as CI would after a merge)")
    status = await train_for(agent, pipeline, fix)
    checks.expect(status.state == TrainState.succeeded and not status.held, f"train ended {status.state.value}")
    checks.expect(not (await agent.pipeline_status(pipeline.name)).state.held, "nothing is held any more")

    console.rule("4. add a DAG whose task fails when it runs: staging must roll back by itself")
    before = {e.name: LocalEnvironment(local_target(e).path).record() for e in pipeline.environments}
    failing = example.commit(
        git.Repo(repo), {example.FAILING_PATH: example.FAILING_DAG}, "marketing: check the new orders feed", "marketing"
    )
    await agent.notify(pipeline, failing, by="demo (as CI would after a merge)")
    status = await train_for(agent, pipeline, failing)
    staging, prod = pipeline.environments[0].name, pipeline.environments[-1].name
    checks.expect(
        status.state == TrainState.rolled_back and status.environment == staging,
        f"train ended {status.state.value} in {status.environment}",
    )
    checks.expect(
        "changed_dags: failed" in status.reason and "orders_feed_check" in status.reason,
        f"the reason names the metric and the DAG: {status.reason}",
    )
    untouched(checks, pipeline, before)
    checks.expect(
        all(
            not local_target(e).airflow or LocalAirflow(e.name, local_target(e)).running()
            for e in pipeline.environments
        ),
        f"{staging} and {prod} still running",
    )
    return checks


def exporters(pipeline: PipelineSettings) -> dict[str, str]:
    """Each environment's StatsD exporter (`metrics: {statsd: true}` on its target) as `host:port`."""
    urls = {env.name: metrics_url(local_target(env)) for env in pipeline.environments}
    return {name: url.removeprefix("http://").removesuffix("/metrics") for name, url in urls.items() if url}


def watch(state: Path, metrics: str, pipeline: PipelineSettings) -> DemoPrometheus | None:
    """Prometheus on the worker's metrics and the environments' Airflow metrics, where it is installed."""
    worker, airflows = f"127.0.0.1:{metrics}", exporters(pipeline)
    prometheus = DemoPrometheus.start(state / "prometheus", worker, airflows)
    if prometheus is None:
        console.print(
            labelled("Prometheus", "bold", f"not installed (`make setup` as root installs it); metrics at {worker}")
        )
        return None
    scraping = ", ".join([f"the worker at {worker}", *(f"{env}'s Airflow at {a}" for env, a in airflows.items())])
    console.print(labelled("Prometheus", "bold", f"{prometheus.url} scraping {scraping} ({prometheus.folder})"))
    if without := [env.name for env in pipeline.environments if env.name not in airflows]:
        console.print(f"  {', '.join(without)}: no `metrics: {{statsd: true}}` on the target, so none of Airflow's")
    return prometheus


def scraped(checks: Checks, prometheus: DemoPrometheus, pipeline: PipelineSettings) -> None:
    """Prometheus holds what the worker counted (the trains, the DORA figures it works out from Temporal) and
    each environment's Airflow metrics."""
    ended = prometheus.until("sum(airagent_trains_ended_total)")
    checks.expect(bool(ended), f"Prometheus counts {ended or 0:.0f} trains ended on this worker")
    deploys = prometheus.until('max(airagent_dora_deployments{environment="prod"})')
    checks.expect(bool(deploys), f"Prometheus has the DORA figures: {deploys or 0:.0f} deploys to prod in 30 days")
    for env in exporters(pipeline):
        beats = prometheus.until(f'sum(airflow_scheduler_heartbeat_total{{environment="{env}"}})')
        checks.expect(bool(beats), f"Prometheus has {env}'s Airflow metrics: {beats or 0:.0f} scheduler heartbeats")


def local_target(env: EnvironmentSettings) -> LocalTarget:
    """The demo runs local environments only; a kubernetes one stops it here."""
    assert isinstance(env.target, LocalTarget)
    return env.target


def untouched(checks: Checks, pipeline: PipelineSettings, before: dict) -> None:
    """Each environment runs what it ran before, by its own record."""
    for env in pipeline.environments:
        after = LocalEnvironment(local_target(env).path).record()
        live = after.live.id if after.live else "-"
        checks.expect(after.live == before[env.name].live, f"{env.name} runs what it ran before: {live}")


async def train_for(agent: AirAgent, pipeline: PipelineSettings, sha: str) -> TrainStatus:
    """Follow, stage by stage, the conductor's train that deploys `sha`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRAIN_TIMEOUT.total_seconds()
    wf_id = train_id(pipeline.name, sha)
    while loop.time() < deadline:
        state = (await agent.pipeline_status(pipeline.name)).state
        if (state.running and state.running.sha == sha) or any(t.sha == sha for t in state.trains):
            console.print(wf_id, style="bold")
            return await follow(agent, wf_id, timeout=TRAIN_TIMEOUT)
        if state.running:
            console.print(f"an earlier train is still running: {state.running.id}; following it first")
            await follow(agent, state.running.id, timeout=TRAIN_TIMEOUT)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the conductor started no train for {sha[:12]} within {TRAIN_TIMEOUT}")


def prepare_example(root: Path) -> Path:
    """The example monorepo: created the first time; later, a repaired and changed head to deploy."""
    path = root / "repo"
    if not (path / ".git").exists():
        example.create(path, root / "envs", metrics=True)
        console.print(f"created the example monorepo at {path}")
        return path
    repo = git.Repo(path)
    version = sum(1 for _ in repo.iter_commits())
    good = example.dag_file(
        "orders_hourly", tasks=3 + version % 3, schedule="@hourly", note=f"orders by hour, v{version}"
    )
    example.commit(
        repo,
        {example.BROKEN_PATH: good, example.FAILING_PATH: None},
        f"marketing: orders_hourly v{version}, without the feed check",
        "marketing",
    )
    console.print(f"reusing the example monorepo at {path} (committed a fresh change to deploy)")
    return path


def hints(server: DevServer, prometheus: DemoPrometheus | None) -> None:
    console.rule("explore")
    if prometheus:
        console.print(f"""Prometheus: {prometheus.url}   (the README's "Five figures first" queries; \
Grafana: import infra/grafana/airagent.json with it as the data source)""")
    console.print(f"""Web UI:  http://localhost:{server.ui_port}   (filter: AiragentPipeline = "main")
airagent pipeline status --pipeline main   # the conductor: running, queued, recent trains
airagent history --pipeline main
airagent status --pipeline main            # latest train; add --json for machines
airagent pipeline pause --pipeline main --reason "hold on"   # or freeze / unfreeze / resume
airagent notify --pipeline main -c {home() / "demo" / "repo" / "airagent.yaml"}   # after a commit there
airagent pause TRAIN --reason "looking"    # then: resume, abort, rollback, approve
airagent env status staging -c {home() / "demo" / "repo" / "airagent.yaml"}   # components, health
airagent env down staging -c ...           # the environments keep running after the demo; this stops one
temporal workflow list --query 'AiragentPipeline="main"'
temporal workflow signal -w pipeline/main --name notify
temporal workflow query  -w TRAIN --type status
temporal workflow signal -w TRAIN --name pause --input '{{"by": "you", "reason": "why"}}'""")
