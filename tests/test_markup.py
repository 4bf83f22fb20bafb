"""Text from a repository, an Airflow or a user is shown as written: a commit summary, an author, a file name or
a DAG's error that looks like rich markup (or an emoji code) is neither read as such nor a crash. On the real dev
server, with the worker and the CLI as real processes, over a real git repository."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from airagent import example
from airagent.models import TrainState, train_id
from interface.cli import app
from tests.devserver import agent, airagent, cli_env, dev_server, until, worker  # noqa: F401  fixtures
from tests.test_init import dag, repository

pytestmark = [pytest.mark.devserver, pytest.mark.slow]

SUMMARY = "[red]orders[/red] read the feed [/x] [link=http://x]y[/link] :bug:"
AUTHOR = "[bold]Mallory[/bold] [/x]"
ERROR = "bad path [/x] in [red]config[/red], see [link=http://x]y[/link] [bold]"
BROKEN_PATH = "dags/marketing/[bold]orders [red]feed.py"
BROKEN_DAG = f'"""A DAG that fails to import."""\nfrom airflow.sdk import DAG\n\nraise RuntimeError("{ERROR}")\n'
ODD_NAME = "[/x] [red]p[/red]"


def commit_as(repo: git.Repo, author: str, files: dict[str, str], message: str) -> str:
    """Committed with git itself: GitPython's index would read the brackets in a file name as a glob."""
    for name, content in files.items():
        path = Path(repo.working_tree_dir or ".") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    repo.git.add(A=True)
    actor = git.Actor(author, "mallory@example.com")
    return repo.index.commit(message, author=actor, committer=actor).hexsha


def shown(done) -> str:
    """All the command printed, which must hold no traceback: rich read nothing as markup."""
    text = done.stdout + done.stderr
    assert "Traceback" not in text and "MarkupError" not in text, text
    return text


async def test_status_pipeline_status_history_and_validate_show_repository_text_as_written(
    agent, worker, cli_env, tmp_path
):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", soak="0s", airflow=False)
    config = str(tmp_path / "repo" / "airagent.yaml")
    env = {**cli_env, "COLUMNS": "400"}  # wide, so no table folds a line
    first = airagent("deploy", "--pipeline", "main", "--wait", "-c", config, env=env)
    assert first.returncode == 0, first.stdout + first.stderr

    broken = commit_as(repo, AUTHOR, {BROKEN_PATH: BROKEN_DAG}, SUMMARY)
    example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)}, "more fx", "finance")
    train = train_id("main", repo.head.commit.hexsha)
    deployed = shown(airagent("deploy", "--pipeline", "main", "--wait", "-c", config, env=env))
    status = await until(agent, train, lambda s: s.state.finished, timeout=300)
    assert status.state == TrainState.succeeded and [h.sha for h in status.held] == [broken], status

    train_status = airagent("status", train, env=env)
    assert train_status.returncode == 0
    pipeline_status = airagent("pipeline", "status", "--pipeline", "main", env=env)
    assert pipeline_status.returncode == 0
    for text in (deployed, shown(train_status), shown(pipeline_status)):
        assert f"{broken[:12]} by {AUTHOR}" in text, text
        assert SUMMARY in text and BROKEN_PATH in text and ERROR in text, text

    history = airagent("history", "--pipeline", "main", env=env)
    assert history.returncode == 0 and train in shown(history)

    validated = airagent("validate", str(tmp_path / "repo"), env=env)
    assert validated.returncode == 3
    assert BROKEN_PATH in shown(validated) and ERROR in validated.stdout, validated.stdout

    # A name given on the command line comes back in the error as written, too.
    for args in (
        ("status", "--pipeline", ODD_NAME),
        ("pipeline", "status", "--pipeline", ODD_NAME),
        ("history", "--pipeline", "it's"),
    ):
        missing = airagent(*args, env=env)
        assert missing.returncode == 2 and repr(args[-1]) in shown(missing), missing.stderr


def test_init_shows_team_folders_and_dag_errors_as_written(tmp_path):
    root = repository(
        tmp_path / "odd",
        {
            "dags/[bold]ops/job.py": dag("job"),
            "dags/[red]web/broken.py": BROKEN_DAG,
            "requirements.txt": example.FILES["requirements.txt"],  # the runtime the other test built
        },
    )

    result = CliRunner().invoke(app, ["init", str(root)], env={"COLUMNS": "400"})

    assert result.exit_code == 3, result.output  # the head does not validate; nothing raised
    assert "teams [bold]ops, [red]web" in result.output, result.output
    assert "team [red]web:" in result.output and "dags/[red]web/broken.py" in result.output
    assert ERROR in result.output, result.output
