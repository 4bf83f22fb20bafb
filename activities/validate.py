"""The `validate` stage: real Airflow parses the release's DAG folder inside the release's runtime.

Only files whose inputs changed are parsed (`validation.parse`); then DAGs that would
vanish from the environments need consent, and each failure is put in front of the team
that owns the file, with the commit that last touched it (`validation.review`).
"""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import sandbox
from activities.release import present
from activities.validation import reports, service
from activities.validation.parse import parse_release
from activities.validation.review import remember_dags, review
from airagent.models import ValidateInput, ValidationReport
from airagent.repo import RepoError, open_repository


@activity.defn(name="validate")
def validate(input: ValidateInput) -> ValidationReport:
    """Returns the report either way, bounded (see `reports`); the train decides, so the report reaches its
    status."""
    release, pipeline = input.release, input.pipeline
    release = present(release, pipeline)  # built on another worker: its files and runtime made here
    try:
        if release.image and pipeline is not None:
            from activities.validation import job  # the kubernetes client loads only when used

            report = job.parse_in_image(release, pipeline)
        else:
            report = parse_release(release, pipeline)
    except service.ParserFailed as err:
        raise ApplicationError(str(err), type="ParserFailed") from None
    except sandbox.SandboxUnavailable as err:
        raise ApplicationError(str(err), type="SandboxUnavailable", non_retryable=True) from None
    if pipeline is not None:
        if report.ok:
            remember_dags(release.commit, release.dag_folder, report)
        try:
            repo = open_repository(pipeline, fetch=False)
        except RepoError as err:
            raise ApplicationError(str(err), type="BadInput", non_retryable=True) from None
        report = review(
            report, pipeline, repo, Path(release.bundle), release.commit, input.live_commits, Path(release.runtime)
        )
    return report.bounded(reports.keep(report))
