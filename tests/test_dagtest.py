"""`airagent test`: each DAG of a working tree run once in the real release runtime, sandboxed, on a real git repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import git
import pytest
from temporalio.exceptions import ApplicationError

from activities import sandbox
from activities.dagtest.report import DagResult, DagTestReport, TaskResult
from activities.dagtest.run import read_events, result_of
from activities.dagtest.tree import run_tree
from activities.runtime import ensure_runtime
from activities.validation import service as parser_service
from airagent import config as config_module
from airagent import example
from airagent.config import Runtime
from interface.cli.dagtest import describe

AIRAGENT = str(Path(sys.executable).with_name("airagent"))
SECRET = "s3cr3t-of-the-deployer"
TIMEOUT = 90  # the hanging DAG's; the others end in seconds, and within a minute on a host loaded to 12


def task_dag(dag_id: str, body: str, top: str = "", call: str = "work()", retries: int = 0) -> str:
    """A DAG of one Python task whose body is `body`; `top` goes at the file's top level."""
    lines = ["from datetime import datetime", "from airflow.sdk import DAG, task", top, ""]
    args = f"default_args={{'retries': {retries}}}"  # and Airflow's retry_delay, five minutes
    lines += [f"with DAG({dag_id!r}, start_date=datetime(2024, 1, 1), schedule=None, {args}):"]
    lines += ["    @task", "    def work(x=None, ti=None):"]
    lines += [f"        {line}" for line in dedent(body).splitlines()]
    return "\n".join([*lines, f"    {call}", ""])


DAGS = {
    "dags/team/succeeds.py": task_dag(
        "succeeds",
        "if ti.try_number == 1:\n    raise RuntimeError('a first try fails')\nreturn x",
        call="work.expand(x=[1, 2])",
        retries=1,
    ),
    "dags/team/feed_check.py": task_dag(
        "feed_check", "print('looking for the feed')\nraise ValueError('the orders feed is empty')\n"
    ),
    "dags/team/warehouse.py": task_dag(
        "warehouse",
        """\
        from airflow.sdk import BaseHook, Variable
        given = BaseHook.get_connection("warehouse")
        assert (given.host, given.login) == ("db.example", "tester"), given
        placeholder = BaseHook.get_connection("reporting_api")
        assert placeholder.host == "api.example", placeholder.host
        assert Variable.get("threshold") == "7"
        assert BUCKET == "raw-orders"
        """,
        top='from airflow.sdk import Variable\nBUCKET = Variable.get("bucket")',
    ),
    "dags/team/hangs.py": task_dag("hangs", "import time\ntime.sleep(600)\n"),
    "dags/team/environment.py": task_dag(
        "environment",
        "import json, os\nprint(json.dumps(dict(os.environ)))\nraise RuntimeError(json.dumps(dict(os.environ)))\n",
    ),
    "tests/connections.yaml": "warehouse:\n  conn_type: postgres\n  host: db.example\n  login: tester\n",
    "tests/variables.yaml": "threshold: '7'\nbucket: raw-orders\n",
}
EXAMPLES = {  # Airflow's own, needing no outside system
    "providers/standard/example_dags/example_bash_operator.py": "example_bash_operator",
    "example_dags/tutorial_taskflow_api.py": "tutorial_taskflow_api",
}
PLACEHOLDERS = """\
    validation:
      placeholders:
        connections:
          reporting_api: {conn_type: http, host: api.example}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The example monorepo with a DAG for each case, Airflow's example DAGs, test connections and variables."""
    root = tmp_path_factory.mktemp("dagtest")
    repo = example.create(root / "repo", root / "envs")
    work = Path(repo.working_tree_dir)
    folder = "    dag_folder: dags\n"
    yaml = (work / "airagent.yaml").read_text().replace(folder, folder + PLACEHOLDERS)
    _, runtime = ensure_runtime(Runtime(), work / "requirements.txt")
    airflow = next((runtime / "lib").glob("python3*/site-packages/airflow"))
    examples = {f"dags/airflow_examples/{Path(p).name}": (airflow / p).read_text() for p in EXAMPLES}
    theirs = {path: None for path in example.FILES if path.startswith(("dags/marketing", "dags/finance"))}
    example.commit(repo, {"airagent.yaml": yaml, **theirs, **DAGS, **examples}, "team: DAGs to test")
    yield work
    parser_service.stop()


def airagent_test(work: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIRAGENT, "test", str(work), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def everything(repo) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """One `airagent test --json` of every DAG, with a secret in the deployer's environment."""
    ran = airagent_test(repo, "--json", "--timeout", str(TIMEOUT), env={"AIRAGENT_FAKE_TOKEN": SECRET})
    assert ran.stdout, ran.stderr
    return ran, {d["dag_id"]: d for d in json.loads(ran.stdout)["dags"]}


@pytest.mark.slow
def test_every_dag_runs_once_and_one_that_fails_fails_the_run(everything):
    ran, dags = everything

    assert ran.returncode == 3, ran.stderr
    assert set(dags) == {
        "succeeds",
        "feed_check",
        "warehouse",
        "hangs",
        "environment",
        *EXAMPLES.values(),
    }
    good = dags["succeeds"]
    assert good["state"] == "success" and good["file"] == "dags/team/succeeds.py" and good["seconds"] > 0
    assert sorted((t["task_id"], t["state"], t["try_number"]) for t in good["tasks"]) == [
        ("work[0]", "success", 2),
        ("work[1]", "success", 2),
    ]  # retried at once, not after the retry delay; mapped tries run side by side, in either order


@pytest.mark.slow
def test_a_failing_task_is_named_with_its_log_tail(everything):
    _, dags = everything

    failed = dags["feed_check"]
    assert failed["state"] == "failed"
    (task,) = failed["tasks"]
    assert task["task_id"] == "work" and task["state"] == "failed" and task["try_number"] == 1
    assert len(task["log_tail"]) <= 20
    assert any("ValueError: the orders feed is empty" in line for line in task["log_tail"])


@pytest.mark.slow
def test_connections_and_variables_come_from_the_repository_files_then_placeholders(everything):
    _, dags = everything

    assert dags["warehouse"]["state"] == "success", dags["warehouse"]


@pytest.mark.slow
def test_a_dag_that_hangs_past_the_timeout_fails_alone_naming_its_task(everything):
    _, dags = everything

    hung = dags["hangs"]
    assert hung["state"] == "timeout"
    assert hung["tasks"][0]["task_id"] == "work" and hung["tasks"][0]["state"] == "timeout"
    assert TIMEOUT <= hung["seconds"] < TIMEOUT + 30
    assert dags["succeeds"]["state"] == "success"  # the others still report


@pytest.mark.slow
def test_a_task_sees_nothing_of_the_deployers_environment(everything):
    _, dags = everything

    (task,) = dags["environment"]["tasks"]
    said = next(line for line in task["log_tail"] if line.startswith("RuntimeError: "))
    seen = json.loads(said.removeprefix("RuntimeError: "))
    assert "AIRAGENT_FAKE_TOKEN" not in seen and SECRET not in json.dumps(seen)
    assert "AIRAGENT_HOME" not in seen and "VIRTUAL_ENV" not in seen
    assert seen["HOME"] != os.environ.get("HOME")
    assert seen["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")


@pytest.mark.slow
def test_airflows_own_example_dags_pass(everything):
    _, dags = everything

    for dag_id in EXAMPLES.values():
        assert dags[dag_id]["state"] == "success", dags[dag_id]
    skipped = {t["task_id"]: t["state"] for t in dags["example_bash_operator"]["tasks"]}
    assert skipped["this_will_skip"] == "skipped"


@pytest.mark.slow
def test_for_ci_one_dag_of_a_commit_says_what_failed_in_the_summary_and_an_annotation(repo, tmp_path):
    (repo / "dags/team/feed_check.py").write_text(task_dag("feed_check", "return 1"))
    summary = tmp_path / "summary.md"

    # --sha: the commit, where feed_check still fails, not the fixed file on disk.
    head = git.Repo(repo).head.commit.hexsha[:10]
    ran = airagent_test(repo, "--dag", "feed_check", "--sha", head, env={"GITHUB_STEP_SUMMARY": str(summary)})

    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "FAILED feed_check: work failed (dags/team/feed_check.py:5" in ran.stdout
    assert "ValueError: the orders feed is empty" in ran.stdout
    assert "::error file=dags/team/feed_check.py,line=5::feed_check: work failed" in ran.stdout.splitlines()
    assert "| feed_check | dags/team/feed_check.py | failed |" in summary.read_text()
    assert "0 of 1 DAGs ran successfully" in ran.stdout


@pytest.mark.slow
def test_changed_runs_the_dags_of_the_files_the_working_tree_changes(repo):
    git.Repo(repo).git.checkout("--", ".")
    succeeds = repo / "dags/team/succeeds.py"
    succeeds.write_text(succeeds.read_text() + "# a change on disk, not committed\n")

    ran = airagent_test(repo, "--changed", "--base", "HEAD", "--json")

    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert [d["dag_id"] for d in answer["dags"]] == ["succeeds"]
    assert "1 changed files" in answer["scope"]


@pytest.mark.slow
def test_a_dag_that_is_not_there_is_named(repo):
    ran = airagent_test(repo, "--dag", "no_such_dag")

    assert ran.returncode == 2
    assert "no DAG 'no_such_dag' in this tree" in ran.stderr and "succeeds" in ran.stderr


def test_without_a_sandbox_nothing_runs(tmp_path, monkeypatch):
    repo = example.create(tmp_path / "repo", tmp_path / "envs", airflow=False)
    cfg, folder = config_module.load(Path(repo.working_tree_dir) / config_module.DEFAULT_FILE)
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap (`bwrap`) is not installed")

    with pytest.raises(ApplicationError) as refused:
        run_tree(cfg.pipeline("main", folder), Path(repo.working_tree_dir))

    assert refused.value.type == "SandboxUnavailable" and "bwrap" in refused.value.message


# --- what a run wrote, read back: recorded answers ---------------------------------------------


def started(task_id: str, map_index: int = -1) -> dict:
    return {"event": "task_started", "task_id": task_id, "map_index": map_index, "log": f"/logs/{task_id}.log"}


def ended(task_id: str, state: str, map_index: int = -1) -> dict:
    return {"event": "task_ended", "task_id": task_id, "map_index": map_index, "state": state, "seconds": 1.5}


def test_a_run_killed_past_its_timeout_names_the_task_it_was_in(tmp_path):
    written = [{"event": "parsed", "line": 7}, started("extract"), {**ended("extract", "success"), "try_number": 1}]
    written.append(started("load"))
    (tmp_path / "events").write_text("".join(json.dumps(e) + "\n" for e in written) + '{"event": "task_e')
    events = read_events(tmp_path / "events")  # the line the kill cut short is left out

    result = result_of("d", "dags/d.py", events, {"/logs/load.log": ["waiting"]}, [], None, 61.0)

    assert result.state == "timeout" and result.line == 7
    assert [(t.task_id, t.state, t.log_tail) for t in result.tasks] == [
        ("extract", "success", []),
        ("load", "timeout", ["waiting"]),
    ]
    assert result.reason() == "d: stopped after 61s in task load (--timeout)"


def test_a_process_that_dies_in_a_task_names_it_and_a_file_that_does_not_import_says_why():
    died = result_of("d", "dags/d.py", [started("load", 3)], {"/logs/load.log": ["oom"]}, [], -9, 3.0)
    assert died.state == "error" and died.tasks[0].task_id == "load[3]" and died.tasks[0].log_tail == ["oom"]
    assert "exit code -9 in task load" in died.error

    unloaded = [{"event": "unloaded", "error": "Traceback ...\nModuleNotFoundError: No module named 'x'", "line": None}]
    broken = result_of("d", "dags/d.py", unloaded, {}, [], 0, 2.0)
    assert broken.state == "error" and broken.reason() == "d: ModuleNotFoundError: No module named 'x'"


def test_the_ci_summary_and_annotations_keep_repository_text_as_written():
    failing = DagResult(
        dag_id="a|b",
        file="dags/x,y.py",
        line=3,
        state="failed",
        seconds=2.0,
        tasks=[TaskResult(task_id="t", state="failed", log_tail=["[red]boom[/red]"])],
    )
    report = DagTestReport(dags=[failing, DagResult(dag_id="ok", file="dags/ok.py", state="success")])

    assert "| a\\|b | dags/x,y.py | failed | 2.0 | t |" in report.markdown()
    assert report.annotations() == ["::error file=dags/x%2Cy.py,line=3::a|b: t failed"]
    assert "[red]boom[/red]" in describe(failing).plain
