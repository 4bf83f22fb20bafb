"""An example Airflow monorepo, as a real git repository: what `make demo` deploys and tests start from."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import git

AUTHORS = {
    "marketing": ("Ada Lovelace", "ada@example.com"),
    "finance": ("Grace Hopper", "grace@example.com"),
    "platform": ("Linus Ops", "linus@example.com"),
}


def dag_file(dag_id: str, tasks: int = 3, schedule: str = "@daily", note: str = "") -> str:
    return dedent(f'''\
        """{dag_id}: {note or "an example pipeline"}."""
        from datetime import datetime

        from airflow.sdk import DAG
        from airflow.providers.standard.operators.empty import EmptyOperator

        from common.naming import task_name

        with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule="{schedule}", catchup=False,
                 tags=["example"]):
            previous = None
            for i in range({tasks}):
                task = EmptyOperator(task_id=task_name("step", i))
                if previous is not None:
                    previous >> task
                previous = task
        ''')


BROKEN_DAG = dedent('''\
    """orders_hourly, broken: it imports a module that does not exist."""
    from datetime import datetime

    from airflow.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator
    import pandas_but_misspelled

    with DAG("orders_hourly", start_date=datetime(2024, 1, 1), schedule="@hourly", catchup=False):
        EmptyOperator(task_id="load")
    ''')

BROKEN_PATH = "dags/marketing/orders_hourly.py"

# Parses fine, so validation passes; its tasks fail whenever they run, which only soak can see.
FAILING_DAG = dedent('''\
    """orders_feed_check: checks the new order feeds are there, every time the last check ends."""
    from datetime import datetime

    from airflow.sdk import DAG
    from airflow.providers.standard.operators.bash import BashOperator

    with DAG("orders_feed_check", start_date=datetime(2024, 1, 1), schedule="@continuous", max_active_runs=1,
             catchup=False, default_args={"retries": 0}):
        for feed in ("orders", "returns", "refunds"):
            BashOperator(task_id=f"read_{feed}", bash_command=f"test -e /nonexistent/{feed}_feed.csv")
    ''')

FAILING_PATH = "dags/marketing/orders_feed_check.py"

FILES = {
    "README.md": "# Airflow monorepo\n\nDAGs per team under `dags/`, deployed by airagent.\n",
    "requirements.txt": "# Extra Python packages for the Airflow runtime, one per line.\n",
    "config/airflow.cfg": (
        "[core]\nload_examples = False\ndags_are_paused_at_creation = False\n\n[dag_processor]\nrefresh_interval = 5\n"
    ),
    "plugins/example_plugin.py": dedent("""\
        from airflow.plugins_manager import AirflowPlugin


        class ExamplePlugin(AirflowPlugin):
            name = "example_plugin"
        """),
    "dags/common/__init__.py": "",
    "dags/common/naming.py": 'def task_name(prefix: str, i: int) -> str:\n    return f"{prefix}_{i}"\n',
    "dags/marketing/orders_hourly.py": dag_file("orders_hourly", schedule="@hourly", note="orders by hour"),
    "dags/marketing/campaigns.py": dag_file("campaigns", tasks=2, note="campaign attribution"),
    "dags/finance/ledger_daily.py": dag_file("ledger_daily", tasks=4, note="the daily ledger"),
    "dags/finance/fx_rates.py": dag_file("fx_rates", tasks=2, schedule="@hourly", note="currency rates"),
}


def airagent_yaml(
    envs: Path,
    soak: str = "45s",
    probe_interval: str = "5s",
    airflow: bool = True,
    port: int = 28080,
    pipeline: str = "main",
    metrics: bool = False,
) -> str:
    """`metrics` has each environment send Airflow's StatsD metrics to its exporter (the demo's Prometheus
    scrapes them); tests leave it off, sparing an exporter per environment."""

    def target(name: str, offset: int) -> str:
        where = f"type: local, path: {envs / name}"
        extra = ", metrics: {statsd: true}" if metrics else ""
        return f"{{{where}, port: {port + offset}{extra}}}" if airflow else f"{{{where}, airflow: false}}"

    return dedent(f"""\
        # airagent: every commit on main goes to staging, then prod.
        runtime:
          python: "3.11"
          airflow: "3.3.2"
        pipelines:
          {pipeline}:
            repo: .
            branch: main
            dag_folder: dags
            poll_interval: 30s
            teams:
              marketing: ["dags/marketing/*"]
              finance: ["dags/finance/*"]
            environments:
              - name: staging
                target: {target("staging", 0)}
                soak: {soak}
                probe_interval: {probe_interval}
              - name: prod
                target: {target("prod", 10)}
                soak: {soak}
                probe_interval: {probe_interval}
        """)


def create(
    path: Path,
    envs: Path,
    soak: str = "45s",
    probe_interval: str = "5s",
    airflow: bool = True,
    pipeline: str = "main",
    metrics: bool = False,
) -> git.Repo:
    """A fresh monorepo at `path`, its environments to live under `envs`, history by three authors."""
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", AUTHORS["platform"][0])
        cfg.set_value("user", "email", AUTHORS["platform"][1])
    commit(
        repo,
        {
            **{k: v for k, v in FILES.items() if not k.startswith("dags/")},
            "airagent.yaml": airagent_yaml(envs, soak, probe_interval, airflow, pipeline=pipeline, metrics=metrics),
        },
        "platform: runtime, plugins and airagent config",
        "platform",
    )
    commit(
        repo,
        {k: v for k, v in FILES.items() if k.startswith("dags/common") or k.startswith("dags/finance")},
        "finance: ledger and fx DAGs",
        "finance",
    )
    commit(
        repo,
        {k: v for k, v in FILES.items() if k.startswith("dags/marketing")},
        "marketing: orders and campaigns DAGs",
        "marketing",
    )
    return repo


def commit(repo: git.Repo, files: dict[str, str | None], message: str, team: str = "platform") -> str:
    """Write (or, for None, delete) files and commit them as the team's author; returns the sha."""
    root = Path(repo.working_tree_dir or ".")
    for name, content in files.items():
        path = root / name
        if content is None:
            if path.exists():
                repo.index.remove([name], working_tree=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        repo.index.add([name])
    author = git.Actor(*AUTHORS[team])
    return repo.index.commit(message, author=author, committer=author).hexsha
