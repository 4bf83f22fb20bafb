"""Incremental validation equals a full parse, whatever sequence of changes a monorepo goes through."""

from __future__ import annotations

import tempfile
from pathlib import Path

import git
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.runtime import ensure_runtime
from activities.validation import service as parser_service
from activities.validation.parse import parse_tree
from airagent.config import Runtime
from airagent.models import ValidationReport, last_line
from tests.conftest import make_pipeline, state_home

# The Airflow runtime or the Kubernetes emulator: the full suite, not the fast layer.
pytestmark = pytest.mark.slow

HEAD = (
    "from datetime import datetime\nfrom airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.empty import EmptyOperator\n"
)


@pytest.fixture(autouse=True, scope="module")
def stop_parsers():
    """The warm parsers these tests start end with them."""
    yield
    parser_service.stop()


def dag_file(name: str, source: str) -> str:
    """A DAG whose id depends on where `source` says: a helper, a data file, a dynamic import, or nothing."""
    lookups = {
        "plain": "suffix = 'x'\n",
        "helper": "from helpers.factory import suffix\n",
        "names": "import helpers.names\nsuffix = helpers.names.PREFIX\n",
        "data": "import json, pathlib\nsuffix = json.loads((pathlib.Path(__file__).parent / 'data.json')"
        ".read_text())['suffix']\n",
        "dynamic": "import importlib\nsuffix = importlib.import_module('helpers.' + 'names').PREFIX\n",
        "missing": "from extras import suffix\n",
    }
    return (
        HEAD + lookups[source] + f"with DAG(f'{name}_{{suffix}}', start_date=datetime(2024, 1, 1), "
        "schedule=None):\n    EmptyOperator(task_id='t')\n"
    )


START = {
    "dags/helpers/__init__.py": "",
    "dags/helpers/names.py": "PREFIX = 'one'\n",
    "dags/helpers/factory.py": "from helpers.names import PREFIX\nsuffix = PREFIX + '_f'\n",
    "dags/data.json": '{"suffix": "d1"}',
    "dags/a.py": dag_file("a", "helper"),
    "dags/b.py": dag_file("b", "names"),
    "dags/c.py": dag_file("c", "data"),
    "dags/d.py": dag_file("d", "dynamic"),
    "plugins/p.py": "VALUE = 1\n",
}

SOURCES = ["plain", "helper", "names", "data", "dynamic", "missing"]
changes = st.one_of(
    st.tuples(st.just("prefix"), st.sampled_from(["one", "two", "three"])),
    st.tuples(st.just("break_helper"), st.booleans()),
    st.tuples(st.just("data"), st.sampled_from(["d1", "d2"])),
    st.tuples(st.just("dag"), st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.sampled_from(SOURCES)),
    st.tuples(st.just("remove"), st.sampled_from(["a", "b", "c", "d", "e", "f"])),
    st.tuples(st.just("extras"), st.booleans()),
    st.tuples(st.just("plugin"), st.integers(1, 3)),
)


def apply(root: Path, change: tuple) -> None:
    kind, *args = change
    writes: dict[str, str | None] = {}
    if kind == "prefix":
        writes["dags/helpers/names.py"] = f"PREFIX = {args[0]!r}\n"
    elif kind == "break_helper":
        writes["dags/helpers/factory.py"] = "from helpers.names import PREFIX\nsuffix = PREFIX + " + (
            "(\n" if args[0] else "'_f'\n"
        )
    elif kind == "data":
        writes["dags/data.json"] = f'{{"suffix": "{args[0]}"}}'
    elif kind == "dag":
        writes[f"dags/{args[0]}.py"] = dag_file(*args)
    elif kind == "remove":
        writes[f"dags/{args[0]}.py"] = None
    elif kind == "extras":
        writes["dags/extras.py"] = "suffix = 'extra'\n" if args[0] else None
    elif kind == "plugin":
        writes["plugins/p.py"] = f"VALUE = {args[0]}\n"
    for name, text in writes.items():
        path = root / name
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> Path:
    """State directories kept for every example, so each keeps its warm parser throughout (see `state_home`)."""
    return tmp_path_factory.mktemp("homes")


def essence(report: ValidationReport) -> tuple:
    """All a report says about the DAGs, without timings or where results came from."""
    return (
        sorted(
            (f.path, f.dag_ids, last_line(f.error), [p.message for p in f.problems], f.placeholders)
            for f in report.files
        ),
        report.duplicates,
    )


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(changes, min_size=1, max_size=3))
def test_incremental_validation_equals_a_full_parse(homes, sequence):
    _, runtime = ensure_runtime(Runtime(), None)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "repo"
        pipeline = make_pipeline(git.Repo.init(root), Path(scratch) / "envs")
        for name, text in START.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        for step, change in enumerate([("start",), *sequence]):
            if step:
                apply(root, change)
            with state_home(homes / "cache", empty=not step):  # kept through the example's steps
                incremental = parse_tree(runtime, root, "dags", "plugins", pipeline, timeout=30)
            with state_home(homes / "full"):
                full = parse_tree(runtime, root, "dags", "plugins", pipeline, timeout=30)
            assert full.parsed == len(full.files)
            assert essence(incremental) == essence(full), (change, incremental.summary(), full.summary())
