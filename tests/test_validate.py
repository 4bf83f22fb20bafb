"""The DAG parser in a real Airflow runtime: every file on its own, a bad one fails only itself."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from textwrap import dedent

import git
import pytest

from activities import process
from activities.build import build
from activities.runtime import ensure_runtime
from activities.validate import validate
from activities.validation import parser_app, reports
from activities.validation import service as parser_service
from activities.validation.parse import parse_tree
from airagent import example
from airagent.config import PipelineSettings, Runtime
from airagent.models import BuildInput, FileReport, ValidateInput, ValidationReport, last_line
from tests.conftest import make_pipeline

# The Airflow runtime or the Kubernetes emulator: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

GOOD = (
    example.dag_file("fine")
    .replace("from common.naming import task_name\n", "")
    .replace('task_name("step", i)', 'f"step_{i}"')
)


@pytest.fixture(autouse=True, scope="module")
def stop_parsers():
    """The warm parsers these tests start end with them."""
    yield
    parser_service.stop()


def parse(folder: Path, tmp_path: Path, timeout: float = 3) -> dict[str, dict]:
    _, runtime = ensure_runtime(Runtime(), None)
    out = tmp_path / "report.json"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "home")}
    process.run([runtime / "bin" / "python", parser_app.path(), folder, out, "2", str(timeout)], env=env)
    return {f["path"]: f for f in json.loads(out.read_text())["files"]}


def test_a_file_that_hangs_exits_or_dies_fails_alone(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "fine.py").write_text(GOOD)
    (dags / "hangs.py").write_text("import time\ntime.sleep(600)\n")
    (dags / "hangs_too.py").write_text("import time\ntime.sleep(600)\n")  # queued behind the first, or beside it
    (dags / "exits.py").write_text("import os\nos._exit(7)\n")
    (dags / "killed.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    (dags / "no_words.py").write_text("raise RuntimeError('safe mode would have skipped me')\n")

    files = parse(dags, tmp_path)

    assert files["fine.py"]["dag_ids"] == ["fine"] and files["fine.py"]["error"] is None
    assert "longer than 3s" in files["hangs.py"]["error"] and "longer than 3s" in files["hangs_too.py"]["error"]
    assert "exit code 7" in files["exits.py"]["error"]
    assert "killed by SIGKILL" in files["killed.py"]["error"]
    assert "safe mode would have skipped me" in files["no_words.py"]["error"]


def test_cli_validate_checks_a_working_tree_before_merge(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    airagent = [str(Path(os.sys.executable).with_name("airagent")), "validate", str(tmp_path / "repo")]

    ok = subprocess.run([*airagent, "--json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert sum(len(f["dag_ids"]) for f in json.loads(ok.stdout)["files"]) == 4

    (Path(repo.working_tree_dir) / example.BROKEN_PATH).write_text(example.BROKEN_DAG)  # not even committed
    broken = subprocess.run(airagent, capture_output=True, text=True, timeout=300)
    assert broken.returncode == 3
    assert f"{example.BROKEN_PATH}: ModuleNotFoundError: No module named 'pandas_but_misspelled'" in broken.stdout

    committed = subprocess.run(
        [*airagent, "--sha", repo.head.commit.hexsha[:10]], capture_output=True, text=True, timeout=300
    )
    assert committed.returncode == 0, committed.stdout  # the commit, not the files on disk


def test_cli_validate_of_a_commit_whose_requirements_do_not_resolve_says_so_and_exits_3(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    unresolvable = example.FILES["requirements.txt"] + "airagent-no-such-package-anywhere==0.0.1\n"
    sha = example.commit(repo, {"requirements.txt": unresolvable}, "platform: a new package")
    airagent = str(Path(os.sys.executable).with_name("airagent"))

    checked = subprocess.run(
        [airagent, "validate", str(tmp_path / "repo"), "--sha", sha], capture_output=True, text=True, timeout=300
    )

    assert checked.returncode == 3, checked.stderr
    assert checked.stderr.startswith("error: building the runtime (Airflow ")
    assert "airagent-no-such-package-anywhere" in checked.stderr and "Traceback" not in checked.stderr


def dag(dag_id: str, body: str = "", schedule: str = "None", args: str = "{}", tags: str = "[]") -> str:
    return (
        f"from datetime import datetime\nfrom airflow.sdk import DAG\n"
        f"from airflow.providers.standard.operators.empty import EmptyOperator\n{body}\n"
        f"with DAG({dag_id!r}, start_date=datetime(2024, 1, 1), schedule={schedule}, default_args={args}, "
        f"tags={tags}):\n    EmptyOperator(task_id='a') >> EmptyOperator(task_id='b')\n"
    )


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def settings(tmp_path: Path, **validation) -> PipelineSettings:
    return make_pipeline(git.Repo.init(tmp_path / "unused"), tmp_path / "envs", validation=validation)


def check(root: Path, pipeline: PipelineSettings) -> dict[str, FileReport]:
    _, runtime = ensure_runtime(Runtime(), None)
    report = parse_tree(runtime, root, "dags", "plugins", pipeline, timeout=20)
    return {f.path.removeprefix("dags/"): f for f in report.files}


def test_lookups_get_placeholders_and_network_or_database_fail_with_the_reason(tmp_path):
    root = tree(
        tmp_path / "repo",
        {
            "dags/lookups.py": dag(
                "lookups",
                body=(
                    "import os\nfrom airflow.sdk import Variable, BaseHook\n"
                    "v = Variable.get('bucket')\ncfg = Variable.get('cfg', deserialize_json=True)\n"
                    "host = BaseHook.get_connection('warehouse').host\ne = os.getenv('REGION')\n"
                    "zone = os.environ.get('ZONE', 'eu-1')\n"
                ),
            ).replace("DAG('lookups'", "DAG(f'lookups_{v}_{e}'"),
            "dags/network.py": "import socket\nsocket.create_connection(('db.example.com', 5432), timeout=60)\n",
            "dags/database.py": (
                "from airflow.settings import Session\nfrom airflow.models import DagRun\n"
                "Session().query(DagRun).all()\n"
            ),
            "dags/cycle.py": dag("cycle").replace(
                ">> EmptyOperator(task_id='b')", ">> (b := EmptyOperator(task_id='b'))\n    b >> b.upstream_list[0]"
            ),
            "dags/twice.py": dag("twice") + dag("twice").split("\n", 3)[3],
        },
    )

    files = check(root, settings(tmp_path))

    assert files["lookups.py"].dag_ids == ["lookups_airagent-placeholder-bucket_airagent-placeholder-REGION"]
    assert files["lookups.py"].placeholders == ["connection warehouse", "env REGION", "variable bucket", "variable cfg"]
    assert "NetworkAtParseTime" in last_line(files["network.py"].error)
    assert "db.example.com" in files["network.py"].error
    assert "DatabaseAtParseTime" in last_line(files["database.py"].error)
    assert "Cycle detected in Dag: cycle" in files["cycle.py"].error
    assert files["twice.py"].dag_ids == ["twice"]
    assert [p.rule for p in files["twice.py"].problems] == ["duplicate_dag_id"]

    # Placeholders off: given values are used, any other lookup fails naming the setting to fill.
    strict = settings(
        tmp_path,
        placeholders={
            "enabled": False,
            "variables": {"bucket": "raw"},
            "connections": {"warehouse": "postgres://u:p@wh:5432/db"},
            "env": {"REGION": "eu"},
        },
    )
    files = check(root, strict)
    assert "validation.placeholders.variables has no 'cfg'" in files["lookups.py"].error
    lookups = root / "dags/lookups.py"
    lookups.write_text(lookups.read_text().replace("cfg = Variable.get('cfg', deserialize_json=True)\n", ""))
    files = check(root, strict)
    assert files["lookups.py"].dag_ids == ["lookups_raw_eu"] and files["lookups.py"].placeholders == []


def test_policies_and_parse_time_budget_name_the_rule(tmp_path):
    root = tree(
        tmp_path / "repo",
        {
            "dags/good.py": dag("good", schedule="'@daily'", args="{'owner': 'data', 'retries': 2}", tags="['team']"),
            "dags/sloppy.py": dag("sloppy", body="import json\n", schedule="'*/5 * * * *'"),
            "dags/slow.py": dag(
                "slow",
                body="import time\ntime.sleep(1.5)\n",
                schedule="'@daily'",
                args="{'owner': 'data', 'retries': 2}",
                tags="['team']",
            ),
        },
    )
    pipeline = settings(
        tmp_path,
        parse_time={"warn": "1s", "fail": "10s"},
        policies={
            "require_owner": True,
            "require_tags": True,
            "min_retries": 1,
            "allowed_schedules": ["@daily", "@hourly"],
            "forbidden_imports": ["json"],
        },
    )

    files = check(root, pipeline)

    assert not files["good.py"].failed and files["good.py"].warnings == []
    assert sorted(p.rule for p in files["sloppy.py"].problems) == [
        "allowed_schedules",
        "forbidden_imports",
        "min_retries",
        "min_retries",
        "require_owner",
        "require_tags",
    ]
    assert all(f"(validation.policies.{p.rule})" in p.message for p in files["sloppy.py"].problems)
    assert not files["slow.py"].failed
    assert "over validation.parse_time.warn (1s)" in files["slow.py"].warnings[0]


def test_removed_dags_need_consent_and_failures_name_team_and_author(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(
        repo, tmp_path / "envs", teams={"marketing": ["dags/marketing/*"], "finance": ["dags/finance/*"]}
    )
    live = repo.head.commit.hexsha
    example.commit(
        repo,
        {
            "CODEOWNERS": "dags/finance/ @acme/finance-eng\n",
            "dags/marketing/campaigns.py": None,
            example.BROKEN_PATH: example.BROKEN_DAG,
        },
        "marketing: retire campaigns",
        "marketing",
    )

    def run(sha: str) -> ValidationReport:
        release = build(BuildInput(pipeline=pipeline, target=sha))
        return validate(ValidateInput(release=release, pipeline=pipeline, live_commits=[live]))

    report = run(repo.head.commit.hexsha)
    assert [(r.dag_id, r.path, r.teams) for r in report.removed] == [
        ("campaigns", "dags/marketing/campaigns.py", ["marketing"])
    ]
    broken = {f.path: f for f in report.broken}
    assert broken[example.BROKEN_PATH].teams == ["marketing"]
    assert broken[example.BROKEN_PATH].last_commit.author == example.AUTHORS["marketing"][0]
    full = reports.load(report.digest)  # what history carries names the failures; the full report, every file
    assert {f.path: f.teams for f in full.files}["dags/finance/fx_rates.py"] == ["@acme/finance-eng", "finance"]
    summary = report.summary()
    assert "team marketing:" in summary and "Airagent-Allow-Dag-Removal: campaigns" in summary
    assert f"last changed in {repo.head.commit.hexsha[:8]} by Ada Lovelace" in summary

    example.commit(
        repo,
        {example.BROKEN_PATH: example.FILES[example.BROKEN_PATH]},
        "marketing: fix orders\n\ncampaigns moved to the vendor tool.\n\nAiragent-Allow-Dag-Removal: campaigns\n",
        "marketing",
    )
    report = run(repo.head.commit.hexsha)
    assert report.ok, report.summary()
    assert report.parsed < report.counts.files  # unchanged files came from the cache


PLUGIN = "from airflow.plugins_manager import AirflowPlugin\n\n\nclass {name}(AirflowPlugin):\n    name = {name!r}\n"


def test_a_plugin_that_does_not_import_fails_like_a_dag_file(tmp_path):
    root = tree(
        tmp_path / "tree",
        {
            "dags/fine.py": dag("fine"),
            "plugins/good.py": PLUGIN.format(name="good"),
            "plugins/broken.py": "import no_such_package\n" + PLUGIN.format(name="broken"),
        },
    )
    pipeline = settings(tmp_path)

    files = check(root, pipeline)
    assert "No module named 'no_such_package'" in files["plugins/broken.py"].error
    assert "plugins/good.py" not in files and files["fine.py"].error is None

    tree(root, {"plugins/broken.py": "raise SystemExit(3)\n"})  # past the plugin manager's `except Exception`
    assert "SystemExit: 3" in check(root, pipeline)["plugins"].error

    tree(root, {"plugins/broken.py": PLUGIN.format(name="fixed")})
    assert all(f.error is None for f in check(root, pipeline).values())


def test_a_dag_airflow_cannot_serialize_fails_as_the_dag_processor_would_fail_it(tmp_path):
    """It imports, but the DAG processor stores DAGs serialized: a timetable no plugin registers is an import
    error there, and the file's other DAGs still load."""
    timetable = (
        "from airflow.timetables.interval import CronDataIntervalTimetable\n"
        "class EveryOtherDay(CronDataIntervalTimetable):\n    pass\n"
    )
    unregistered = dag("odd_days", body=timetable, schedule="EveryOtherDay('0 0 */2 * *', timezone='UTC')")
    root = tree(tmp_path / "tree", {"dags/odd.py": unregistered + dag("plain").split("\n", 3)[3]})

    files = check(root, settings(tmp_path))

    assert "is not registered" in files["odd.py"].error and files["odd.py"].dag_ids == ["plain"]


# Run by the runtime's interpreter: Airflow's example DAGs serialized, then changed at random (a key dropped, a
# value of another type, a property added), each judged by Airflow's validator and by the compiled check.
SCHEMA_CHECK = dedent("""\
    import copy, json, random, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from airagent_parser import schema
    import airflow.example_dags
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    validator = DagSerialization._json_schema
    accepts = schema.compile_validator(validator)
    folder = Path(airflow.example_dags.__file__).parent
    bag = DagBag(dag_folder=str(folder), safe_mode=False, bundle_path=folder)
    documents = []
    for dag in bag.dags.values():
        try:
            documents.append(DagSerialization.to_dict(dag))
        except Exception:
            pass  # not serializable at all: no document to judge
    values = [None, True, False, 0, 1, -1, 1.5, 2.0, "", "x", [], [1], {}, {"a": 1}, {"__type": "dict", "__var": {}}]
    draw = random.Random(22)
    def places(x, here=()):
        yield here
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            yield from places(v, here + (k,))
    def change(document):
        document = copy.deepcopy(document)
        where = list(places(document))[1:]
        if not where:
            return document
        *path, key = draw.choice(where)
        parent = document
        for k in path:
            parent = parent[k]
        roll = draw.random()
        if roll < 0.3 and isinstance(parent, dict):
            del parent[key]
        elif roll < 0.5 and isinstance(parent, dict):
            parent[f"extra_{draw.randint(0, 3)}"] = draw.choice(values)
        else:
            parent[key] = copy.deepcopy(draw.choice(values))
        return document
    judged = {"real": len(documents), "real_accepted": sum(map(accepts, documents)), "refused": 0, "disagree": []}
    for _ in range(4000):
        document = change(draw.choice(documents))
        valid = validator.is_valid(document)
        judged["refused"] += not valid
        if accepts(document) != valid:
            judged["disagree"].append(json.dumps(document)[:500])
    refused = next(d for d in map(change, documents * 10) if not validator.is_valid(d))
    errors = []
    for installed in (False, True):
        if installed:
            schema.install()
        try:
            DagSerialization.validate_schema(refused)
        except Exception as error:
            errors.append(repr(error))
    judged["same_error"] = len(errors) == 2 and errors[0] == errors[1]
    print(json.dumps(judged))
    """)


def test_the_compiled_schema_check_accepts_exactly_what_airflows_validation_accepts(tmp_path):
    """Serializing checks each DAG against Airflow's JSON schema; the parser accepts with checks compiled from
    it, and leaves every other document to Airflow's validator: same verdicts, same error."""
    _, runtime = ensure_runtime(Runtime(), None)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "home")}
    out = process.run([runtime / "bin" / "python", "-c", SCHEMA_CHECK, parser_app.path()], env=env, timeout=300)

    judged = json.loads(last_line(out))
    assert judged["real"] > 30 and judged["real_accepted"] == judged["real"]
    assert judged["refused"] > 1000 and judged["disagree"] == []
    assert judged["same_error"]
