"""The warm-up every parse starts from, and one parse of a DAG folder (a cold run does both once)."""

from __future__ import annotations

import gc
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import schema, timetables
from .dagbag import Parser
from .facts import DagCounter
from .lookups import Lookups
from .paths import PLUGINS, python_files
from .pool import parse_all
from .report import REPORT_MARKER

# What nearly every DAG file imports: loaded once here, inherited by every fork.
WARM_MODULES = (
    "airflow.sdk",
    "airflow.providers.standard.operators.empty",
    "airflow.providers.standard.operators.python",
    "airflow.providers.standard.operators.bash",
)
# Parsed and serialized once before forking, so what Airflow sets up lazily on a first DAG (policies,
# plugins, providers, the schema, cron timetables) is set up once, not in every child.
WARM_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("airagent_warm_up", start_date=datetime(2024, 1, 1), schedule="@daily"):
    EmptyOperator(task_id="warm")
"""


def warm_up() -> None:
    """Load and set up what every DAG file needs once, so no forked worker pays for it."""
    for module in WARM_MODULES:
        __import__(module)
    schema.install()
    timetables.install()
    with tempfile.TemporaryDirectory() as scratch:
        warm = Path(scratch) / "warm_up.py"
        warm.write_text(WARM_DAG)
        Parser(Path(scratch), None).parse(warm)
    gc.freeze()  # forks then share these objects' pages instead of copying them when the collector runs


def parse_folder(folder: Path, workers: int, timeout: float | None, settings: dict) -> Iterator[dict]:
    """Parse in a warmed-up process, which this call changes for good: fork before calling it again."""
    from airflow.configuration import conf

    lookups = Lookups(folder, settings.get("placeholders", {}))
    lookups.install()
    DagCounter.install()
    # As Airflow's DAG processor does for a bundle: modules beside the DAGs are importable.
    sys.path.append(str(folder))
    timeout = timeout or conf.getfloat("core", "dagbag_import_timeout")
    chosen = settings.get("files")
    files = [*python_files(folder), folder / PLUGINS] if chosen is None else [folder / f for f in chosen]
    return parse_all(folder, files, workers, timeout, lookups, settings.get("limits"))


def cold(folder: Path, out: Path, workers: int, timeout: float | None, settings: dict) -> None:
    """A run of its own: warm up, parse, write the report to `out` (`-`: stdout, marked)."""
    warm_up()
    files = sorted(parse_folder(folder, workers, timeout, settings), key=lambda f: f["path"])
    report = json.dumps({"files": files})
    if str(out) == "-":
        # A pod's log is all that comes back from a validator Job, mixed with what DAG files printed:
        # one marked line of its own.
        sys.stdout.write(f"\n{REPORT_MARKER}{report}\n")
        sys.stdout.flush()
    else:
        out.write_text(report)
