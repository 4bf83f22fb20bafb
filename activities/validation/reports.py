"""Full validation reports, kept by content where they were made: workflow history carries a bounded report
(`ValidationReport.bounded`) and its digest, so nothing in it grows with the repository.

A stage on another worker, or after the file was collected, makes the report again from the
release: the parse cache makes that cheap where it was parsed before.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from activities.validation.parse import parse_release
from airagent.config import PipelineSettings, home
from airagent.models import Release, ValidationReport


def folder() -> Path:
    return home() / "reports"


def keep(report: ValidationReport) -> str:
    data = report.model_dump_json().encode()
    digest = hashlib.sha256(data).hexdigest()[:32]
    path = folder() / f"{digest}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest


def load(digest: str) -> ValidationReport | None:
    try:
        return ValidationReport.model_validate_json((folder() / f"{digest}.json").read_bytes())
    except FileNotFoundError:
        return None


def recall(digest: str, release: Release, pipeline: PipelineSettings | None) -> ValidationReport:
    """The full report `digest` names, made again from the release when this worker does not have it."""
    return load(digest) or parse_release(release, pipeline)


def dag_ids(report: ValidationReport) -> dict[str, list[str]]:
    """Each file's DAGs, by path from the repository's root: what a roll waits for Airflow to serve."""
    return {f.path: f.dag_ids for f in report.files}
