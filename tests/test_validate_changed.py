"""`airagent validate --changed`: only the files a working tree changes and those importing them, with the
verdicts a full validate gives them, whatever a branch does (the Parse profile of issue 24)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

import git
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.runtime import ensure_runtime
from activities.validation import service as parser_service
from activities.validation.tree import check_changed, check_tree
from airagent import example
from airagent.config import Runtime
from airagent.models import ValidationReport, last_line
from tests.conftest import link_runtime, make_pipeline, state_home

# The Airflow runtime: the full suite, not the fast layer.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def stop_parsers():
    """The warm parsers these tests start end with them."""
    yield
    parser_service.stop()


HEAD = (
    "from datetime import datetime\nfrom airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.empty import EmptyOperator\n"
)
# Where a DAG's id suffix comes from, and so which files of the DAG folder it imports.
LOOKUPS = {
    "plain": "suffix = 'x'\n",
    "helper": "from helpers.factory import suffix\n",
    "names": "import helpers.names\nsuffix = helpers.names.PREFIX\n",
    "data": "import json, pathlib\n"
    "suffix = json.loads((pathlib.Path(__file__).parent / 'data.json').read_text())['s']\n",
    "dynamic": "import importlib\nsuffix = importlib.import_module('helpers.' + 'names').PREFIX\n",
    "missing": "from extras import suffix\n",
    "broken": "suffix = (\n",
}
FACTORY = "from helpers.names import PREFIX\nsuffix = PREFIX + '_f'\n"


def dag_file(name: str, source: str) -> str:
    return (
        HEAD + LOOKUPS[source] + f"with DAG(f'{name}_{{suffix}}', start_date=datetime(2024, 1, 1), schedule=None):\n"
        "    EmptyOperator(task_id='t')\n"
    )


START = {
    "README.md": "# DAGs\n",
    "dags/helpers/__init__.py": "",
    "dags/helpers/names.py": "PREFIX = 'one'\n",
    "dags/helpers/factory.py": FACTORY,
    "dags/data.json": '{"s": "d1"}',
    "dags/a.py": dag_file("a", "helper"),
    "dags/b.py": dag_file("b", "names"),
    "dags/c.py": dag_file("c", "plain"),
    "dags/d.py": dag_file("d", "dynamic"),
    "plugins/p.py": "VALUE = 1\n",
}
DAGS = ["a", "b", "c", "d", "e"]

changes = st.one_of(
    st.tuples(st.just("prefix"), st.sampled_from(["one", "two"])),
    st.tuples(st.just("break_factory"), st.booleans()),
    st.tuples(st.just("dag"), st.sampled_from(DAGS), st.sampled_from(sorted(LOOKUPS))),
    st.tuples(st.just("remove"), st.sampled_from(DAGS)),
    st.tuples(st.just("extras"), st.booleans()),
    st.tuples(st.just("twin"), st.sampled_from(DAGS)),  # a second file defining that DAG's id, if plain
    st.tuples(st.just("readme"), st.integers(1, 3)),  # ignored: changes nothing
    st.tuples(st.just("data"), st.sampled_from(["d1", "d2"])),  # these three change everything
    st.tuples(st.just("plugin"), st.integers(1, 3)),
    st.tuples(st.just("cfg"), st.integers(1, 3)),
)
# How each change reaches the repository: committed on the branch, staged, or only on disk.
steps = st.lists(st.tuples(changes, st.sampled_from(["commit", "stage", "disk"])), min_size=1, max_size=4)


def writes(change: tuple) -> dict[str, str | None]:
    kind, *args = change
    return {
        "prefix": lambda: {"dags/helpers/names.py": f"PREFIX = {args[0]!r}\n"},
        "break_factory": lambda: {"dags/helpers/factory.py": FACTORY.replace("'_f'", "(") if args[0] else FACTORY},
        "dag": lambda: {f"dags/{args[0]}.py": dag_file(*args)},
        "remove": lambda: {f"dags/{args[0]}.py": None},
        "extras": lambda: {"dags/extras.py": "suffix = 'extra'\n" if args[0] else None},
        "twin": lambda: {"dags/twin.py": dag_file(args[0], "plain")},
        "readme": lambda: {"README.md": f"# DAGs, take {args[0]}\n"},
        "data": lambda: {"dags/data.json": f'{{"s": "{args[0]}"}}'},
        "plugin": lambda: {"plugins/p.py": f"VALUE = {args[0]}\n"},
        "cfg": lambda: {"airflow.cfg": f"[core]\n# take {args[0]}\n"},
    }[kind]()


def write(root: Path, files: dict[str, str | None]) -> None:
    for name, text in files.items():
        if text is None:
            (root / name).unlink(missing_ok=True)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)


def expected_scope(before: dict[str, str], after: dict[str, str]) -> tuple[set[str] | None, set[str]]:
    """(the DAG folder's files --changed must check, or None for every one; the changed ones), from what the
    test wrote: its own account of what imports what, not the cache's."""
    differ = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    changed = {p for p in differ if p.startswith("dags/") and p.endswith(".py")}
    if differ - changed - {"README.md"}:
        return None, changed
    imports: dict[str, set[str]] = {}
    for path, text in after.items():
        if path == "dags/helpers/factory.py" and text == FACTORY:
            imports[path] = {"dags/helpers/__init__.py", "dags/helpers/names.py"}
        for source, line in LOOKUPS.items():
            if line in text and source in ("helper", "names", "missing"):
                imports[path] = {
                    "helper": {"dags/helpers/__init__.py", "dags/helpers/factory.py"},
                    "names": {"dags/helpers/__init__.py", "dags/helpers/names.py"},
                    "missing": {"dags/extras.py"},
                }[source]
    dynamic = {p for p, text in after.items() if LOOKUPS["dynamic"] in text}
    reached = set(changed) | (dynamic if changed else set())
    grew = True
    while grew:
        more = {p for p, deps in imports.items() if deps & reached} - reached
        reached |= more
        grew = bool(more)
    return reached & after.keys(), changed


def verdicts(report: ValidationReport, paths: set[str]) -> tuple:
    """What a report says of these files: DAGs, errors, problems, and the failures a train would trace."""
    return (
        sorted(
            (f.path, f.dag_ids, last_line(f.error), [p.message for p in f.problems])
            for f in report.files
            if f.path in paths
        ),
        {p: why for p, why in report.failures().items() if p in paths},
        {d: ps for d, ps in report.duplicates.items() if set(ps) & paths},
    )


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> Path:
    """State directories kept for every example, so each keeps its warm parser throughout (see `state_home`)."""
    return tmp_path_factory.mktemp("homes")


def fresh_home(homes: Path, name: str, runtime: Path) -> AbstractContextManager[Path]:
    """A state directory of its own, its validation cache empty, with the runtime."""
    link_runtime(runtime, homes / name)
    return state_home(homes / name)


def cached(home: Path) -> int:
    return sum(1 for _ in (home / "validation-cache" / "files").glob("*/*.json"))


@settings(max_examples=5, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=steps)
def test_changed_checks_only_what_changed_and_agrees_with_a_full_validate(homes, sequence):
    _, runtime = ensure_runtime(Runtime(), None)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        repo = git.Repo.init(scratch / "repo", initial_branch="main")
        root = Path(repo.working_tree_dir or "")
        with repo.config_writer() as cfg:
            cfg.set_value("user", "name", "Ada").set_value("user", "email", "ada@example.com")
        pipeline = make_pipeline(repo, scratch / "envs")
        write(root, dict(START))
        repo.git.add(A=True)
        repo.git.commit("-qm", "the DAGs")
        repo.git.checkout("-qb", "feature")
        files: dict[str, str] = dict(START)
        with fresh_home(homes, "warm", runtime) as home:
            start = check_tree(pipeline, root)
            assert start.ok  # what its author validated before branching
            for change, how in sequence:
                for path, text in writes(change).items():
                    write(root, {path: text})
                    if text is None:
                        files.pop(path, None)
                    else:
                        files[path] = text
                if how != "disk":
                    repo.git.add(A=True)
                if how == "commit" and repo.is_dirty(index=True, working_tree=False):
                    repo.git.commit("-qm", f"{change}")
            before = cached(home)
            narrow, scope = check_changed(pipeline, root)
            parsed_now = cached(home) - before
        with fresh_home(homes, "cold", runtime):
            full = check_tree(pipeline, root)

        expected, changed = expected_scope(START, files)
        everything = {f.path for f in full.files}
        checked = {f.path for f in narrow.files}
        assert checked == (everything if expected is None else expected), (sequence, scope)
        assert (scope.files is None) == (expected is None)
        covered = everything if expected is None else expected | changed
        assert verdicts(narrow, covered) == verdicts(full, covered), (sequence, narrow.summary(), full.summary())
        # A DAG the branch point had and the tree lost needs consent, which a full validate has no base to ask for.
        had, has = ({d for f in r.files for d in f.dag_ids} for r in (start, full))
        assert {r.dag_id for r in narrow.removed} <= had - has, (sequence, narrow.summary())
        assert narrow.ok == (not verdicts(full, covered)[1] and not narrow.removed), (sequence, full.summary())
        # Parsed: at most the files it checks (and the plugins' load when everything is checked).
        assert narrow.parsed is not None and narrow.parsed <= len(checked)
        assert parsed_now <= len(checked) + (expected is None), (sequence, parsed_now, checked)


def test_cli_names_what_it_checked_and_why(tmp_path):
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    root = Path(repo.working_tree_dir or "")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Ada").set_value("user", "email", "ada@example.com")
    write(root, {**START, "airagent.yaml": example.airagent_yaml(tmp_path / "envs", "0s", "5s", airflow=False)})
    repo.git.add(A=True)
    repo.git.commit("-qm", "the DAGs")
    base = repo.head.commit.hexsha[:7]
    repo.git.checkout("-qb", "feature")
    airagent = [str(Path(sys.executable).with_name("airagent")), "validate", str(root), "--changed"]

    write(root, {"dags/helpers/names.py": "PREFIX = 'two'\n", "dags/e.py": dag_file("e", "broken")})
    broken = subprocess.run(airagent, capture_output=True, text=True, timeout=300)
    assert broken.returncode == 3, broken.stderr
    assert "dags/e.py: SyntaxError" in broken.stdout
    assert f"checked 2 changed files and 4 that import them, against main at {base}" in broken.stdout
    answer = json.loads(subprocess.run([*airagent, "--json"], capture_output=True, text=True, timeout=300).stdout)
    assert answer["checked"] == [
        "dags/a.py",
        "dags/b.py",
        "dags/d.py",
        "dags/e.py",
        "dags/helpers/factory.py",
        "dags/helpers/names.py",
    ]

    write(root, {"dags/e.py": None, "plugins/p.py": "VALUE = 2\n"})
    everything = subprocess.run(airagent, capture_output=True, text=True, timeout=300)
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert "checked all 7 files: plugins/p.py changed (plugins), which every DAG file may read" in everything.stdout

    refused = subprocess.run([*airagent, "--base", "no-such-ref"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--base 'no-such-ref' is not a commit" in refused.stderr
