"""One team's broken DAG against everyone else's lag: commit-to-prod while main is healthy and while broken.

Four teams commit in turn, a commit every INTERVAL seconds, on one pipeline (files-only
staging and prod, soak 0) whose conductor follows the branch and is notified of each
commit, on a dev server with the worker in this process. First a healthy stretch; then
team 0 pushes a DAG that does not import and the other teams go on committing; then team
0 pushes the fix. A commit is in prod when prod's files carry its version of its team's
DAG. Set-up (the runtime, the first train) is not measured.

    .venv/bin/python -m bench.isolation [COMMITS_PER_STRETCH] [INTERVAL]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings
from bench.harness import dev_server, in_process_worker

TEAMS = 4
BROKEN = "import a_module_nobody_wrote\n"


def team_dag(team: int, version: int) -> str:
    return example.dag_file(f"team{team}_dag", tasks=2, note=f"version {version}")


def version_in(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    marker = text.split("version ", 1)
    return int(marker[1].split(".", 1)[0]) if len(marker) > 1 and marker[1][0].isdigit() else None


class Watch:
    """Reads prod's version of each team's DAG every 50 ms, keeping when each version first showed."""

    def __init__(self, prod: Path):
        self.prod, self.shown = prod, {}  # team -> [(time, version)]

    async def run(self) -> None:
        while True:
            now = time.time()
            for team in range(TEAMS):
                live = version_in(self.prod / "current" / "dags" / f"team{team}" / "dag.py")
                history = self.shown.setdefault(team, [])
                if live is not None and (not history or history[-1][1] != live):
                    history.append((now, live))
            await asyncio.sleep(0.05)

    async def lags(self, commits: list[tuple[int, int, float]], timeout: float = 300) -> list[float]:
        """Seconds from each (team, version, committed at) to prod carrying that version or a newer one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [
                next((t for t, v in self.shown.get(team, []) if v >= version), None) for team, version, _ in commits
            ]
            if None not in found:
                return [t - at for t, (_, _, at) in zip(found, commits, strict=True)]
            await asyncio.sleep(0.2)
        raise SystemExit(f"never reached prod: {[c for c, f in zip(commits, found, strict=True) if f is None]}")


def held_in_environments(envs: Path) -> int:
    """Releases in any environment that carry the broken DAG."""
    return sum(
        1
        for release in envs.glob("*/releases/*")
        if (release / "dags" / "team0" / "dag.py").is_file()
        and BROKEN in (release / "dags" / "team0" / "dag.py").read_text()
    )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


async def main(per_stretch: int, interval: float) -> None:
    with tempfile.TemporaryDirectory(prefix="airagent-isolation-") as tmp:
        root = Path(tmp)
        repo = example.create(root / "repo", root / "envs", airflow=False)
        example.commit(repo, {f"dags/team{t}/dag.py": team_dag(t, 0) for t in range(TEAMS)}, "teams", "platform")
        pipeline = PipelineSettings(
            name="isolation",
            repo=str(root / "repo"),
            poll_interval="1h",
            teams={f"team{t}": [f"dags/team{t}/*"] for t in range(TEAMS)},
            environments=[
                EnvironmentSettings(name=e, target=LocalTarget(path=root / "envs" / e, airflow=False))
                for e in ("staging", "prod")
            ],
        )
        async with dev_server(root) as client, in_process_worker(client, "isolation") as agent:
            await agent.start_pipeline(pipeline)
            watch = Watch(root / "envs" / "prod")
            watching = asyncio.create_task(watch.run())
            await watch.lags([(t, 0, time.time()) for t in range(TEAMS)])
            version = 0

            async def stretch(teams: list[int]) -> list[float]:
                nonlocal version
                commits = []
                for i in range(per_stretch):
                    version += 1
                    team = teams[i % len(teams)]
                    sha = example.commit(
                        repo,
                        {f"dags/team{team}/dag.py": team_dag(team, version)},
                        f"team{team}: v{version}",
                        "finance",
                    )
                    commits.append((team, version, time.time()))
                    await agent.notify(pipeline, sha)
                    await asyncio.sleep(interval)
                return await watch.lags(commits)

            healthy = await stretch(list(range(TEAMS)))
            broken = example.commit(repo, {"dags/team0/dag.py": BROKEN + team_dag(0, 0)}, "team0: oops", "marketing")
            await agent.notify(pipeline, broken)
            while_broken = await stretch(list(range(1, TEAMS)))
            held = held_in_environments(root / "envs")
            fixed_at = time.time()
            fix = example.commit(repo, {"dags/team0/dag.py": team_dag(0, version + 1)}, "team0: fix", "marketing")
            await agent.notify(pipeline, fix)
            [fix_lag] = await watch.lags([(0, version + 1, fixed_at)])
            watching.cancel()
            await client.get_workflow_handle("pipeline/isolation").terminate("bench over")

    print(f"healthy_lag_median: {statistics.median(healthy):.2f} s")
    print(f"healthy_lag_p95: {p95(healthy):.2f} s")
    print(f"broken_lag_median: {statistics.median(while_broken):.2f} s")
    print(f"broken_lag_p95: {p95(while_broken):.2f} s")
    print(f"fix_lag: {fix_lag:.2f} s")
    print(f"held_commits_in_environments: {held} count")
    print(f"isolation_lag_ratio: {statistics.median(while_broken) / statistics.median(healthy):.2f} x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12, float(sys.argv[2]) if len(sys.argv) > 2 else 2.0))
