"""One file through Airflow's DagBag, then serialized as the DAG processor does: its report."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from .facts import DagCounter, facts
from .lookups import Lookups
from .paths import PLUGINS
from .report import failed, trim


class Parser:
    """One DagBag per worker process, emptied between files, so a file is parsed exactly as DagBag would."""

    def __init__(self, folder: Path, lookups: Lookups | None, max_file_bytes: int | None = None):
        from airflow.dag_processing.dagbag import DagBag

        self.folder, self.lookups, self.max_file_bytes = folder, lookups, max_file_bytes
        self.bag = DagBag(dag_folder=str(folder), collect_dags=False, bundle_path=folder, safe_mode=False)

    def parse(self, path: Path) -> dict:
        if path.name == PLUGINS:
            return self.load_plugins()
        rel = path.relative_to(self.folder).as_posix()
        if self.max_file_bytes and (size := path.stat().st_size) > self.max_file_bytes:
            mib = 1 << 20
            return failed(
                self.folder,
                path,
                f"this file is {size / mib:.1f} MiB; Python files in the DAG folder over "
                f"{self.max_file_bytes / mib:.0f} MiB are not parsed: keep data out of the DAG folder "
                "(or raise validation.limits.max_file_mib)",
                0.0,
                transient=False,
            )
        self.bag.dags.clear()
        self.bag.import_errors.clear()
        DagCounter.created.clear()
        if self.lookups:
            self.lookups.used.clear()
        started = time.perf_counter()
        try:
            self.bag.process_file(str(path), only_if_updated=False, safe_mode=False)
            error = self.bag.import_errors.get(rel) or self.bag.import_errors.get(str(path)) or self.serialize()
        except Exception:
            self.bag.dags.clear()
            error = traceback.format_exc()
        seconds = time.perf_counter() - started
        created = DagCounter.created
        return {
            "path": rel,
            "dag_ids": sorted(self.bag.dags),
            "error": trim(error) if error else None,
            "parse_seconds": round(seconds, 4),
            "dags": [facts(self.bag.dags[d]) for d in sorted(self.bag.dags)],
            "same_file_duplicates": sorted({d for d in created if created.count(d) > 1}),
            "placeholders": sorted(self.lookups.used) if self.lookups else [],
            "transient": False,
        }

    def serialize(self) -> str | None:
        """Serialize each DAG as the DAG processor does before storing it: one that cannot be (a timetable no
        plugin registers, a param that is not JSON) is an import error there, so it is one here; the file's
        other DAGs stay, as they do there."""
        try:
            from airflow.serialization.serialized_objects import DagSerialization as serialization
        except ImportError:  # before Airflow 3.1
            from airflow.serialization.serialized_objects import SerializedDAG as serialization
        errors = []
        for dag_id, dag in list(self.bag.dags.items()):
            try:
                serialization.to_dict(dag)
            except Exception:
                del self.bag.dags[dag_id]
                errors.append(traceback.format_exc())
        return "\n".join(errors) or None

    @staticmethod
    def load_plugins() -> dict:
        """The import errors of the plugins folder's files, by path inside it; an installed package's are not
        the repository's."""
        from airflow import plugins_manager, settings

        started = time.perf_counter()
        folder = Path(settings.PLUGINS_FOLDER).resolve()
        errors = {}
        for where, error in plugins_manager.get_import_errors().items():
            try:
                errors[Path(where).resolve().relative_to(folder).as_posix()] = trim(error)
            except ValueError:
                continue
        return {
            "path": PLUGINS,
            "dag_ids": [],
            "error": None,
            "plugins": errors,
            "parse_seconds": round(time.perf_counter() - started, 4),
            "transient": False,
        }
