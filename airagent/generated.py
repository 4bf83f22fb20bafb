"""Generated monorepos for the benches and the scale tests: DAG files of twenty teams built by a shared factory
(a few dynamic, a few heavy at import), and, beside them, the SQL and YAML files a real DAG folder holds."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

HELPERS = {
    "common/__init__.py": "",
    "common/defaults.py": dedent("""\
        from datetime import datetime, timedelta
        DEFAULT_ARGS = {"owner": "data", "retries": 2, "retry_delay": timedelta(minutes=5)}
        START = datetime(2024, 1, 1)
        """),
    "common/factory.py": dedent("""\
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.providers.standard.operators.python import PythonOperator
        from common.defaults import DEFAULT_ARGS, START


        def noop(**_):
            return None


        def build(dag_id, steps, schedule="@daily", tags=()):
            with DAG(dag_id, start_date=START, schedule=schedule, catchup=False, default_args=DEFAULT_ARGS,
                     tags=list(tags)) as dag:
                start = EmptyOperator(task_id="start")
                previous = start
                for i in range(steps):
                    if i % 3 == 0:
                        task = PythonOperator(task_id=f"transform_{i}", python_callable=noop)
                    elif i % 3 == 1:
                        task = BashOperator(task_id=f"load_{i}", bash_command="echo load")
                    else:
                        task = EmptyOperator(task_id=f"check_{i}")
                    previous >> task
                    previous = task
            return dag
        """),
}


def dag_file(team: int, n: int) -> str:
    kind = n % 20
    if kind == 0:  # a dynamic factory: several DAGs from one file
        return dedent(f"""\
            from common.factory import build

            for region in ("us", "eu", "apac", "latam", "mea"):
                globals()[f"dag_{{region}}"] = build(f"t{team}_f{n}_{{region}}", steps=6, tags=["team{team}", region])
            """)
    if kind == 1:  # a heavy import and some top-level work
        return dedent(f"""\
            import decimal, sqlite3, xml.etree.ElementTree
            import sqlalchemy.dialects.postgresql
            from common.factory import build

            RATES = {{i: decimal.Decimal(i) / 7 for i in range(20000)}}
            dag = build("t{team}_d{n}", steps=12, tags=["team{team}", "heavy"])
            """)
    return dedent(f"""\
        from common.factory import build

        dag = build("t{team}_d{n}", steps={4 + n % 9}, schedule="@hourly" if {n} % 2 else "@daily", tags=["team{team}"])
        """)


def generate(root: Path, files: int) -> Path:
    dags = root / "dags"
    for name, text in HELPERS.items():
        (dags / name).parent.mkdir(parents=True, exist_ok=True)
        (dags / name).write_text(text)
    for i in range(files - len(HELPERS)):
        path = dags / f"team_{i % 20:02d}" / f"dag_{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dag_file(i % 20, i))
    return dags


def beside(dags: Path, files: int) -> None:
    """`files` SQL and YAML files among the teams' DAGs, as a real monorepo keeps its queries and configs."""
    for i in range(files):
        team = dags / f"team_{i % 20:02d}"
        team.mkdir(parents=True, exist_ok=True)
        if i % 2:
            (team / f"query_{i:05d}.sql").write_text(f"select {i} as n, current_date as day from source_{i % 97};\n")
        else:
            (team / f"config_{i:05d}.yaml").write_text(f"table: t_{i}\nowner: team{i % 20}\nretries: {i % 4}\n")
