"""`airagent init` on the layouts people keep Airflow in: a dags/ folder of example DAGs, an Astro CLI project,
and a git-sync repository with DAGs at its root. Each is made in a temp dir as a real git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from textwrap import dedent

import git
import pytest
from typer.testing import CliRunner

from airagent import config as config_module
from airagent.config import Runtime, load_pipeline
from airagent.models import TrainState
from interface.cli import app
from interface.inspect_repo import inspect
from tests.conftest import start_train


def dag(dag_id: str, operator: str = "empty") -> str:
    """A small DAG in Airflow 3's style, parseable by the runtime airagent builds."""
    imports = {
        "empty": "from airflow.providers.standard.operators.empty import EmptyOperator as Op",
        "bash": "from airflow.providers.standard.operators.bash import BashOperator as Op",
    }[operator]
    task = 'Op(task_id="run", bash_command="echo hi")' if operator == "bash" else 'Op(task_id="run")'
    return dedent(f'''\
        """{dag_id}: written for these tests."""
        from datetime import datetime

        from airflow.sdk import DAG
        {imports}

        with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
            {task}
        ''')


def repository(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    repo = git.Repo.init(root, initial_branch="main")
    repo.git.add(A=True)
    author = git.Actor("Test", "test@example.com")
    repo.index.commit("the repository as found", author=author, committer=author)
    return root


@pytest.fixture
def example_dags(tmp_path) -> Path:
    """Like Airflow's own example DAGs: a dags/ folder of example files with helpers beside them."""
    return repository(
        tmp_path / "example-dags",
        {
            "dags/example_empty.py": dag("example_empty"),
            "dags/example_bash.py": dag("example_bash", "bash"),
            "dags/example_chain.py": dag("example_chain"),
            "dags/libs/__init__.py": "",
            "dags/libs/helper.py": "def greeting() -> str:\n    return 'hello'\n",
            "dags/sql/sample.sql": "select 1;\n",
            "README.md": "# Example DAGs\n",
        },
    )


@pytest.fixture
def astro(tmp_path) -> Path:
    """The Astro CLI project layout; its tests build a DagBag, so they import Airflow too."""
    return repository(
        tmp_path / "astro",
        {
            "dags/exampledag.py": dag("exampledag"),
            "include/.gitkeep": "",
            "plugins/my_plugin.py": "from airflow.plugins_manager import AirflowPlugin\n\n\n"
            "class MyPlugin(AirflowPlugin):\n    name = 'my_plugin'\n",
            "requirements.txt": "# Astro Runtime includes Airflow\n",
            "packages.txt": "",
            "Dockerfile": "FROM quay.io/astronomer/astro-runtime:13.0.0\n",
            "tests/dags/test_dag_example.py": "from airflow.models import DagBag\n\n\n"
            "def test_no_import_errors():\n    assert not DagBag(include_examples=False).import_errors\n",
            ".astro/config.yaml": "project:\n  name: astro\n",
            "airflow_settings.yaml": "airflow:\n  connections: []\n",
        },
    )


@pytest.fixture
def git_sync(tmp_path) -> Path:
    """What the Helm chart's git-sync clones: DAG files at the root, owners in CODEOWNERS, pinned Airflow."""
    return repository(
        tmp_path / "git-sync",
        {
            "orders_hourly.py": dag("orders_hourly"),
            "reports_daily.py": dag("reports_daily"),
            "finance/ledger.py": dag("ledger"),
            ".github/CODEOWNERS": "# owners\n*.py @acme/data-eng\n/finance/ @acme/finance ledger@example.com\n"
            "/docs/ @acme/writers\n",
            "requirements.txt": "apache-airflow==3.0.2\n-c pins/airflow.txt\n",
            "pins/airflow.txt": "requests==2.32.3\n",
        },
    )


def init(*args: str):
    return CliRunner().invoke(app, ["init", *args])


def written(root: Path):
    """The file as the real loader reads it: the first pipeline's settings."""
    config_module.check(root / "airagent.yaml")
    return load_pipeline("main", root / "airagent.yaml")


def test_example_dags_layout(example_dags):
    result = init(str(example_dags), "--no-validate")

    assert result.exit_code == 0, result.output
    p = written(example_dags)
    assert (p.dag_folder, p.branch, p.teams) == ("dags", "main", {})
    assert p.runtime.airflow == Runtime().airflow and p.runtime.requirements == "requirements.txt"
    assert [(e.name, e.target.port, e.target.path) for e in p.environments] == [
        ("staging", 8080, example_dags / ".airagent" / "envs" / "staging"),
        ("prod", 8090, example_dags / ".airagent" / "envs" / "prod"),
    ]
    text = (example_dags / "airagent.yaml").read_text()
    assert "none found" in text and "3 Python files importing Airflow" in text
    # The environments' folders never reach a commit: their secrets and database stay on the host.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".airagent/envs/staging/secrets/api-login"], cwd=example_dags, check=False
    )
    assert ignored.returncode == 0
    assert "airagent env up staging" in result.output and "airagent pipeline start -p main" in result.output


def test_astro_layout(astro):
    result = init(str(astro), "--no-validate")

    assert result.exit_code == 0, result.output
    p = written(astro)
    assert (p.dag_folder, p.plugins_folder, p.runtime.requirements) == ("dags", "plugins", "requirements.txt")
    assert p.classification == config_module.Classification()  # Astro's folders are the defaults
    text = (astro / "airagent.yaml").read_text()
    assert "packages.txt: OS packages" in text and "Dockerfile: the image of kubernetes environments" in text
    assert "tests/dags" not in text  # a DagBag test imports Airflow but holds no DAG


def test_git_sync_layout_with_dags_at_the_root(git_sync):
    result = init(str(git_sync), "--no-validate")

    assert result.exit_code == 0, result.output
    p = written(git_sync)
    assert p.dag_folder == "." and p.runtime.airflow == "3.0.2"
    assert p.teams == {"@acme/data-eng": ["*.py"], "@acme/finance": ["finance/*"], "ledger@example.com": ["finance/*"]}
    # At the root, any file no other kind claims is in the DAG folder; the constraints file is a dependency.
    kinds = {path: p.classification.kind_of(path) for path in ("finance/ledger.py", "sql/q.sql", "pins/airflow.txt")}
    assert kinds == {"finance/ledger.py": "dags", "sql/q.sql": "dags", "pins/airflow.txt": "dependencies"}
    assert p.classification.kind_of("README.md") == "ignored"
    assert "pinned in requirements.txt" in (git_sync / "airagent.yaml").read_text()


def test_never_overwrites_without_force(example_dags):
    assert init(str(example_dags), "--no-validate").exit_code == 0
    config = example_dags / "airagent.yaml"
    config.write_text(config.read_text() + "# mine\n")

    again = init(str(example_dags), "--no-validate")
    assert again.exit_code == 2 and "exists" in again.output and "--force" in again.output
    assert config.read_text().endswith("# mine\n")

    forced = init(str(example_dags), "--no-validate", "--force")
    assert forced.exit_code == 0 and not config.read_text().endswith("# mine\n")


def test_names_with_yaml_specials_stay_plain_strings(tmp_path):
    odd = "ops: nightly #1"
    root = repository(tmp_path / "odd", {f"dags/{odd}/job.py": dag("job"), "dags/web/site.py": dag("site")})

    assert init(str(root), "--no-validate").exit_code == 0
    assert written(root).teams == {odd: [f"dags/{odd}/*"], "web": ["dags/web/*"]}


def test_a_repository_without_dags_or_a_subfolder_is_refused(tmp_path):
    root = repository(tmp_path / "empty", {"README.md": "# nothing here\n"})
    nested = repository(tmp_path / "outer", {"inner/dags/a.py": dag("a")}) / "inner"

    assert (found := init(str(root))).exit_code == 2 and "no Python file" in found.output
    assert (found := init(str(nested))).exit_code == 2 and f"airagent init {tmp_path / 'outer'}" in found.output
    assert not (root / "airagent.yaml").exists() and not (nested / "airagent.yaml").exists()


def test_airflow_version_from_constraints_or_the_official_image(tmp_path):
    url = "https://raw.githubusercontent.com/apache/airflow/constraints-3.0.6/constraints-3.12.txt"
    from_constraints = repository(tmp_path / "a", {"dags/a.py": dag("a"), "requirements.txt": f"-c {url}\n"})
    from_image = repository(
        tmp_path / "b", {"dags/b.py": dag("b"), "Dockerfile": "FROM apache/airflow:3.1.0-python3.10\n"}
    )

    a, b = inspect(from_constraints), inspect(from_image)
    assert (a.airflow, a.python, a.constraints) == ("3.0.6", "3.12", url)
    assert (b.airflow, b.python) == ("3.1.0", "3.10")


def test_dags_in_a_nested_folder(tmp_path):
    root = repository(
        tmp_path / "nested",
        {"airflow/dags/team_a/a.py": dag("a"), "airflow/dags/b.py": dag("b"), "airflow/plugins/p.py": "x = 1\n"},
    )

    layout = inspect(root)
    assert (layout.dag_folder, layout.plugins_folder) == ("airflow/dags", "airflow/plugins")
    assert layout.classification() == {"dags": ["airflow/dags/*"], "plugins": ["airflow/plugins/*"]}


@pytest.mark.slow
async def test_init_validates_the_head_and_a_train_of_it_succeeds(example_dags, agent, drive):
    result = init(str(example_dags))

    assert result.exit_code == 0, result.output
    assert "3 DAGs" in result.output and "all parse" in result.output, result.output
    assert "airagent pipeline status -p main" in result.output
    pipeline = written(example_dags)
    for env in pipeline.environments:
        env.target.airflow = False  # files only: this test is about the config, not about running Airflow
    head = git.Repo(example_dags).head.commit.hexsha
    handle = await start_train(agent, pipeline, head)
    status = await drive.finish(handle.id)
    assert status.state == TrainState.succeeded, status.reason
