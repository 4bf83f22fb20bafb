"""The `validate` stage: real Airflow parses the release's DAG folder inside the release's runtime."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import process
from airagent.models import Release, ValidateInput, ValidationReport

PARSER = Path(__file__).with_name("parse_dags.py")
PARSE_TIMEOUT = 900.0


def parse_release(release: Release) -> ValidationReport:
    return parse_tree(Path(release.runtime), Path(release.bundle), release.dag_folder, release.plugins_folder)


def parse_tree(runtime: Path, bundle: Path, dag_folder: str, plugins_folder: str) -> ValidationReport:
    """Run parse_dags.py with the runtime's interpreter over a tree of files, in a throwaway AIRFLOW_HOME."""
    with tempfile.TemporaryDirectory(prefix="airagent-parse-") as scratch:
        report = Path(scratch) / "report.json"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "AIRFLOW_HOME": scratch,
            "AIRFLOW__CORE__DAGS_FOLDER": str(bundle / dag_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(bundle / plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        }
        try:
            process.run([runtime / "bin" / "python", PARSER, bundle / dag_folder, report],
                        env=env, cwd=bundle, timeout=PARSE_TIMEOUT)
        except process.ProcessFailed as err:
            raise ApplicationError(f"the DAG parser itself failed: {err.output[-3000:]}",
                                   type="ParserFailed") from None
        return _from_repo_root(ValidationReport.model_validate_json(report.read_text()), dag_folder)


def _from_repo_root(report: ValidationReport, dag_folder: str) -> ValidationReport:
    """The parser sees paths inside the DAG folder; people know them from the repository's root."""
    def rel(path: str) -> str:
        return f"{dag_folder.rstrip('/')}/{path}" if dag_folder not in ("", ".") else path

    for f in report.files:
        f.path = rel(f.path)
    report.duplicates = {dag_id: [rel(p) for p in paths] for dag_id, paths in report.duplicates.items()}
    return report


@activity.defn(name="validate")
def validate(input: ValidateInput) -> ValidationReport:
    """Returns the report either way; the train decides, so the report reaches its status."""
    return parse_release(input.release)
