"""Soak scenarios on one real Airflow: a regression or noise injected into a train's soak, and what the analysis
made of it (the train's state and reason, what it held, how soon it saw the regression).

Used by tests/test_analysis_scenarios.py (a few, to prove the judge) and bench/analysis.py (many, for the figures).
One local staging environment serves every scenario; each scenario has DAGs of its own (ids end in its number), so
one scenario's versions and runs never weigh on another's. Trains are started directly, as the conductor would
(tests.conftest.start_train), so each can have a soak of its own and the base a soak of none; what a rolled-back
train held is in its own status.

History: a changed DAG's task is mapped six times, three at a time, with `schedule=None`. Before the roll the
harness triggers one run on the previous version (six task instances: enough for the judge's five durations and
three finished per side); `smoke: trigger` starts one on the new version when soak begins. That is faster and
steadier than `@continuous`: a continuous DAG runs one run at a time (six 20 s tasks would take two minutes of
soak) and keeps both cores busy between scenarios.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent

import git

from activities.runtime import ensure_runtime
from activities.targets.local_airflow import LocalAirflow
from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from airagent.config.analysis import Analysis
from airagent.models import TrainState, TrainStatus
from airagent.models.analysis import MetricState, Phase
from interface.client import AirAgent, NotFound
from tests.conftest import airflow_ports, make_pipeline, start_train

MAPPED, AT_ONCE = 6, 3
# Seconds a task sleeps before and after the x3 regression. A task's duration includes its start-up, 0.5 s on a
# quiet host and up to 6 s on a busy one, and history and soak need not see the same load: the work must outweigh
# that swing (8 s made 24 s reads at least x1.7 whatever the load), as a real DAG's minutes of work do.
BASE_SLEEP, SLOW_SLEEP = 8, 24
# A slow answer: well within a probe's 10 s timeout.
SLOW_ANSWER = 5.0
# Six 24 s tasks, three at a time, each with its start-up: about 60 s from the smoke run to the last duration on a
# quiet host, twice that on one busy with other tests; a hung scheduler shows in health after 30 s. Either fails
# the soak as soon as it shows, so a long soak costs nothing when the analysis is right.
LONG_SOAK = timedelta(seconds=240)
FINISHED = ("success", "failed")

# What each kind does, and whether it is a regression (the train must not succeed) or noise (it must).
REGRESSIONS = ("fails", "slower", "import_error", "component_dies")
NOISE = ("stall", "slow_answer", "flaky_unchanged", "flaky_changed", "idle", "harmless")
# The environment is unwell whatever runs on it (its scheduler hangs for the rest of the train): the train must fail
# and blame no commit.
UNWELL = ("scheduler_hangs",)
TEAM = {"fails": "marketing", "slower": "finance", "flaky_changed": "marketing", "flaky_unchanged": "finance"}


@dataclass(frozen=True)
class Scenario:
    kind: str
    n: int

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.n}"

    @property
    def regression(self) -> bool:
        return self.kind in REGRESSIONS

    @property
    def dag_id(self) -> str:
        """The scenario's own DAG: the one it changes, or the one it adds."""
        return self.name if self.kind in TEAM else f"report_{self.name}"

    @property
    def path(self) -> str:
        return f"dags/{TEAM.get(self.kind, 'finance')}/{self.dag_id}.py"

    def base(self) -> str | None:
        """The DAG file the environment runs before the scenario's train, if it has one."""
        match self.kind:
            case "fails":
                return mapped_dag(self.dag_id, ["true"] * MAPPED)
            case "slower":
                return mapped_dag(self.dag_id, [f"sleep {BASE_SLEEP}"] * MAPPED)
            case "flaky_changed" | "flaky_unchanged":
                return mapped_dag(self.dag_id, flaky(), doc="fails a third of its tasks, as it always did")
        return None

    def changed(self) -> str:
        """The file the scenario's train changes or adds."""
        match self.kind:
            case "fails":
                return mapped_dag(self.dag_id, ["exit 1"] * MAPPED)
            case "slower":
                return mapped_dag(self.dag_id, [f"sleep {SLOW_SLEEP}"] * MAPPED)
            case "flaky_changed":
                return mapped_dag(self.dag_id, flaky(), doc="fails a third of its tasks; its owners reworded this")
            case "import_error":
                return breaks_on_a_later_parse(self.dag_id)
            case "idle":
                return mapped_dag(self.dag_id, ["true"] * MAPPED, doc="nobody runs it during soak")
        return example.dag_file(f"report_{self.name}", tasks=3, note="another team's new report")

    @property
    def changed_path(self) -> str:
        """A flaky DAG left unchanged: the train adds another team's DAG beside it."""
        return f"dags/marketing/report_{self.name}.py" if self.kind == "flaky_unchanged" else self.path

    @property
    def smoke(self) -> bool:
        return self.kind != "idle"


def mapped_dag(dag_id: str, commands: list[str], doc: str = "") -> str:
    return dedent(f'''\
        """{dag_id}: {doc or "one task mapped over its commands"}."""
        from datetime import datetime

        from airflow.sdk import DAG
        from airflow.providers.standard.operators.bash import BashOperator

        with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, catchup=False,
                 default_args={{"retries": 0}}, doc_md={doc!r}):
            BashOperator.partial(task_id="work", max_active_tis_per_dagrun={AT_ONCE}).expand(
                bash_command={commands!r}
            )
        ''')


def flaky() -> list[str]:
    """A third of the commands fail, whichever version runs them."""
    return ["exit 1" if i % 3 == 0 else "true" for i in range(MAPPED)]


def breaks_on_a_later_parse(dag_id: str) -> str:
    """A DAG whose first parse in an environment passes and a parse ten seconds later raises, as parse-time code
    reading the clock or outside state does: validation and the roll's own parse pass, soak sees the import error.
    The first parse's time is kept in AIRFLOW_HOME, which the environment's processor has."""
    return dedent(f'''\
        """{dag_id}: reads a lookup that expires after its first parse."""
        import os
        import time
        from datetime import datetime

        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator

        home = os.environ.get("AIRFLOW_HOME", "")
        stamp = os.path.join(home, ".first_parse_{dag_id}")
        if home and os.path.isdir(home):
            if not os.path.exists(stamp):
                with open(stamp, "w") as out:
                    out.write(str(time.time()))
            elif time.time() - float(open(stamp).read()) > 10:
                raise RuntimeError("the lookup table {dag_id} reads at parse time has expired")

        with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
            EmptyOperator(task_id="load")
        ''')


@dataclass
class Outcome:
    scenario: Scenario
    state: TrainState
    reason: str
    held: list[str] = field(default_factory=list)
    metric: str | None = None  # the metric whose verdict ended the soak
    intervals: int | None = None  # probe intervals from its first measurement showing the regression to the verdict
    seconds: float = 0.0  # from the train's start to its end
    errors: int = 0  # error measurements over every metric: what a stall cost
    train: str = ""
    status: TrainStatus | None = None

    @property
    def caught(self) -> bool:
        return self.state != TrainState.succeeded

    @property
    def right(self) -> bool:
        if self.scenario.kind in UNWELL:
            return self.state == TrainState.failed and not self.held
        return self.caught == self.scenario.regression

    def line(self) -> str:
        seen = f"{self.metric} after {self.intervals} intervals" if self.metric else "no metric failed"
        seen += f", {self.errors} error readings"
        held = f"; held {', '.join(self.held)}" if self.held else ""
        verdict = "ok" if self.right else "WRONG"
        took = f"{self.seconds:.0f} s"
        line = f"{verdict} {self.scenario.name}: {self.state.value} ({seen}, {took}){held} — {self.reason}"
        if self.right or self.status is None or not self.status.environments:
            return line
        return "\n    ".join([line, *(m.line() for m in self.status.environment_status("staging").analysis)])


def detection(states: list[MetricState], interval: timedelta) -> tuple[str | None, int | None]:
    """The metric that ended the soak first, and how many intervals its verdict came after the first of its kept
    measurements that showed the regression (failed, or errors for an `error` verdict)."""
    ended = [s for s in states if s.verdict in (Phase.failed, Phase.error) and s.last]
    if not ended:
        return None, None
    first = min(ended, key=lambda s: s.last[-1].at)
    bad = Phase.failed if first.verdict == Phase.failed else Phase.error
    shown = next(m.at for m in first.last if m.phase == bad)
    return first.metric, round((first.last[-1].at - shown) / interval)


class Soaks:
    """One real Airflow (staging), the monorepo it deploys, and the trains of the scenarios run on it.

    The caller runs the dev server and an `airagent worker` on `agent`'s task queue."""

    def __init__(
        self,
        root: Path,
        scenarios: list[Scenario],
        soak: timedelta = timedelta(seconds=60),
        interval: timedelta = timedelta(seconds=4),
    ):
        self.scenarios, self.soak, self.interval = scenarios, soak, interval
        self.repo: git.Repo = example.create(root / "repo", root / "envs")
        target = LocalTarget(
            path=root / "envs" / "staging",
            port=airflow_ports(),
            drain_timeout=timedelta(seconds=30),
            live_timeout=timedelta(seconds=90),
        )
        self.settings = EnvironmentSettings(name="staging", probe_interval=interval, target=target)
        self.pipeline = make_pipeline(self.repo, root / "envs").model_copy(update={"environments": [self.settings]})
        self.env = LocalAirflow("staging", target, self.settings.probes)
        self.history_runs: dict[str, list[str]] = {}
        self.hung: list[int] = []  # process groups stopped until the train ends

    # --- the environment ----------------------------------------------------------------------

    def up(self) -> None:
        self.env.up(ensure_runtime(self.pipeline.runtime, None)[1])

    def down(self) -> None:
        self.env.down()

    async def prepare(self, agent: AirAgent) -> None:
        """Trains without soak deploy the example, then every scenario's base DAG. Two trains: the first restarts
        Airflow on the example's config, and the dag-processor it replaces, still running on none, parses what the
        roll swapped in meanwhile; a DAG it creates then stays paused, as Airflow's default says."""
        files: dict[str, str | None] = {s.path: base for s in self.scenarios if (base := s.base())}
        shas = [self.repo.head.commit.hexsha]
        if files:
            shas.append(example.commit(self.repo, files, "the scenarios' DAGs", "platform"))
        for sha in shas:
            status = await self.train(agent, sha, timedelta(0), smoke=False, timeout=600)
            assert status.state == TrainState.succeeded, f"a base train: {status.state}: {status.reason}"

    def trigger_history(self, scenario: Scenario) -> None:
        """One run of the scenario's DAG on the version before its train, for the judge to compare with."""
        if scenario.base() is None:
            return
        with self.env.api(timeout=60) as api:
            self.history_runs[scenario.name] = [api.trigger(scenario.dag_id, {}, "history before the roll")]

    def finish_history(self, scenario: Scenario, timeout: float = 240) -> None:
        with self.env.api(timeout=60) as api:
            for run_id in self.history_runs.pop(scenario.name, []):
                path = f"/api/v2/dags/{scenario.dag_id}/dagRuns/{run_id}"
                wait(lambda p=path: api._get(p, {})["state"] in FINISHED, timeout, f"{scenario.dag_id} {run_id}")

    # --- one scenario ----------------------------------------------------------------------

    async def run(self, agent: AirAgent, scenario: Scenario, history: bool = True) -> Outcome:
        """The scenario's history (unless already triggered), its train with the fault during soak, and what the
        train made of it. A train that did not succeed is reverted in the repo, so the next scenario's train does
        not bring its change back; every component runs again before the next."""
        if history:
            self.trigger_history(scenario)
        await asyncio.to_thread(self.finish_history, scenario)
        sha = example.commit(
            self.repo, {scenario.changed_path: scenario.changed()}, f"{scenario.name}: the change", "finance"
        )
        soak = max(self.soak, LONG_SOAK) if scenario.kind in ("slower", *UNWELL) else self.soak
        began = time.monotonic()
        train = await self.start(agent, sha, soak, scenario.smoke)
        try:
            await self.during_soak(agent, train, scenario)
            status = await agent.wait(train, timeout=soak + timedelta(minutes=6))
        finally:
            for group in self.hung:
                os.killpg(group, signal.SIGCONT)
            self.hung.clear()
            if not self.env.running():
                await asyncio.to_thread(self.env.up)
        if status.state != TrainState.succeeded:
            self.repo.git.revert(sha, no_edit=True)
        staging = status.environment_status("staging") if status.environments else None
        analysis = staging.analysis if staging else []
        metric, intervals = detection(analysis, self.interval)
        return Outcome(
            scenario,
            status.state,
            status.reason,
            held=[f"{h.sha[:12]} ({h.reason})" for h in status.held],
            metric=metric,
            intervals=intervals,
            seconds=time.monotonic() - began,
            errors=sum(m.errors for m in analysis),
            train=train,
            status=status,
        )

    async def during_soak(self, agent: AirAgent, train: str, scenario: Scenario) -> None:
        """The scenario's fault, a couple of rounds into soak."""
        status = await self.soaking(agent, train)
        faults = ("stall", "slow_answer", "component_dies", "flaky_unchanged", *UNWELL)
        if status.state.finished or scenario.kind not in faults:
            return
        await asyncio.sleep(2 * self.interval.total_seconds())
        if scenario.kind in UNWELL:
            # A hung scheduler stops heartbeating: health says so once the heartbeat is older than Airflow's
            # scheduler_health_check_threshold (30 s), on any release, until the train has ended.
            self.hung.append(self.env.processes()["scheduler"].pid)
            os.killpg(self.hung[-1], signal.SIGSTOP)
        elif scenario.kind == "flaky_unchanged":
            self.trigger_history(scenario)  # a run after the roll, failing as before
            await asyncio.to_thread(self.finish_history, scenario)
        elif scenario.kind == "component_dies":
            os.kill(self.env.processes()["triggerer"].pid, signal.SIGKILL)
        else:
            api_server = self.env.processes()["api-server"].pid
            os.killpg(api_server, signal.SIGSTOP)  # its whole group: gunicorn's workers answer, not the master
            try:
                await asyncio.sleep(self.stall() if scenario.kind == "stall" else SLOW_ANSWER)
            finally:
                os.killpg(api_server, signal.SIGCONT)

    def stall(self) -> float:
        """Seconds a stall lasts: a probe's timeout and two intervals. A request only errs when it began in the
        stall's first (stall - timeout) seconds, and rounds come an interval plus their own time apart, so with
        one interval a round could begin just after that window and only be slow; never three rounds in a row."""
        return (self.settings.probes.timeout + 2 * self.interval).total_seconds()

    # --- trains ----------------------------------------------------------------------

    def pipeline_for(self, soak: timedelta, smoke: bool, inconclusive: str = "continue") -> PipelineSettings:
        """The pipeline with this soak, smoke runs or none, and what a changed DAG too little run to judge does."""
        update: dict[str, object] = {"soak": soak, "smoke": "trigger" if smoke else "off"}
        if inconclusive != "continue":
            metrics = self.settings.metrics().metrics
            judge = {"inconclusive": inconclusive}
            update["analysis"] = Analysis(
                metrics=[m.model_copy(update=judge) if m.name == "changed_dags" else m for m in metrics]
            )
        return self.pipeline.model_copy(update={"environments": [self.settings.model_copy(update=update)]})

    async def start(
        self, agent: AirAgent, sha: str, soak: timedelta, smoke: bool, inconclusive: str = "continue"
    ) -> str:
        return (await start_train(agent, self.pipeline_for(soak, smoke, inconclusive), sha)).id

    async def train(self, agent: AirAgent, sha: str, soak: timedelta, smoke: bool, timeout: float) -> TrainStatus:
        train = await self.start(agent, sha, soak, smoke)
        return await agent.wait(train, timeout=timedelta(seconds=timeout))

    async def soaking(self, agent: AirAgent, train: str, timeout: float = 300) -> TrainStatus:
        """The train once it soaks, or ended before (a roll that failed)."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = await agent.status(train)
            except NotFound:
                status = None
            if status and (status.state.finished or (status.stage == "soak" and status.state == TrainState.running)):
                return status
            await asyncio.sleep(0.5)
        where = f"still in {status.stage} ({status.environment}): {status.reason or '-'}" if status else "never seen"
        raise TimeoutError(f"{train} did not reach soak within {timeout} s; {where}")


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {timeout} s")
        time.sleep(1)


def judged_runs(soaks: Soaks, scenario: Scenario, since: datetime) -> list[tuple[dict, int]]:
    """Each task instance of the scenario's DAG that ended after `since`: its run as Airflow shows it, and the DAG
    version it ran on."""
    with soaks.env.api(timeout=60) as api:
        tasks = api.finished_tasks(scenario.dag_id, ended_after=since)
        runs = {
            r: api._get(f"/api/v2/dags/{scenario.dag_id}/dagRuns/{r}", {}) for r in {t["dag_run_id"] for t in tasks}
        }
        return [(runs[t["dag_run_id"]], t["dag_version"]["version_number"]) for t in tasks]


def soak_started(status: TrainStatus) -> datetime:
    return next(s.started for s in status.stages if s.name == "soak").astimezone(UTC)
