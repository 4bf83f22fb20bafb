"""A release's DAG bundle: the files of one commit, straight out of git, checked to stay inside it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath

from temporalio.exceptions import ApplicationError

from airagent.config import PipelineSettings
from airagent.repo import open_repository


def export_commit(pipeline: PipelineSettings, sha: str, dest: Path) -> None:
    """The files of one commit, each checked to stay inside `dest`, then extracted with tarfile's `data` filter.

    Both: the filter has known bypasses before Python 3.11.13, 3.12.11 and 3.13.4.
    """
    repo = open_repository(pipeline, fetch=False)
    buf = io.BytesIO()
    repo.archive(buf, treeish=sha, format="tar")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = tar.getmembers()
        links = {m.name.rstrip("/") for m in members if m.issym() or m.islnk()}
        escaping = next((m.name for m in members if escapes(m, links)), None)
        if escaping is None:
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as err:
                escaping = err.tarinfo.name
    if escaping is not None:
        raise ApplicationError(
            f"commit {sha[:12]}: {escaping} links outside the repository; replace the link with the files themselves",
            type="BadInput",
            non_retryable=True,
        )


def escapes(member: tarfile.TarInfo, links: set[str]) -> bool:
    """Whether `member` would land, or link, outside the folder it is extracted into.

    Judged on names alone, which is exact while no member lies under a link (`links`, the
    names of every link member): a commit's tree never has one there.
    """
    name = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return True
    if name.is_absolute() or ".." in name.parts or any(str(p) in links for p in name.parents):
        return True
    if member.issym() or member.islnk():
        base = name.parent if member.issym() else PurePosixPath()
        target = PurePosixPath(os.path.normpath(base / member.linkname))
        return target.is_absolute() or target.parts[:1] == ("..",)
    return False


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
