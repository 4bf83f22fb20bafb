"""A release's DAG bundle: the files of one commit, straight out of git, checked to stay inside it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from temporalio.exceptions import ApplicationError

from airagent.config import PipelineSettings
from airagent.repo import open_repository


def export_commit(pipeline: PipelineSettings, sha: str, dest: Path) -> None:
    """The files of one commit, extracted with tarfile's `data` filter so no link escapes `dest`."""
    repo = open_repository(pipeline, fetch=False)
    buf = io.BytesIO()
    repo.archive(buf, treeish=sha, format="tar")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as err:
            raise ApplicationError(
                f"commit {sha[:12]}: {err.tarinfo.name} links outside the repository; "
                "replace the link with the files themselves",
                type="BadInput",
                non_retryable=True,
            ) from None


def inside(root: Path, relative: str, what: str, sha: str) -> Path:
    """A folder named in the config, checked to stay inside the release even through symlinks."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ApplicationError(
            f"commit {sha[:12]}: {what} {relative!r} resolves to {path}, outside the repository; "
            f"make {relative!r} a real folder in the repository",
            type="BadInput",
            non_retryable=True,
        )
    return path
