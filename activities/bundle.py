"""A release's DAG bundle: the files of one commit, straight out of git, checked to stay inside it.

A commit near one already exported here is exported by difference: the earlier bundle's
files are hard-linked (no data copied, so a one-file change to a tree of tens of
thousands of files costs a moment) and only the paths git says changed come out of the
archive, checked as a whole export's are.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import git
from temporalio.exceptions import ApplicationError

from airagent.config import PipelineSettings
from airagent.repo import commit_exists, open_repository

# Past this many changed paths a whole export is as quick, and the archive's arguments stay short.
BY_DIFFERENCE = 2_000
LINK_MODE = "120000"


def export_commit(pipeline: PipelineSettings, sha: str, dest: Path, near: tuple[str, Path] | None = None) -> None:
    """The files of one commit in `dest`, each checked to stay inside it, then extracted with tarfile's `data`
    filter (both: the filter has known bypasses before Python 3.11.13, 3.12.11 and 3.13.4).

    `near` is (commit, bundle) of a whole export made before: when git can say what changed since, the
    rest is hard-linked from it.
    """
    repo = open_repository(pipeline, fetch=False)
    changed = _changed(repo, near[0], sha) if near else None
    if near is None or changed is None:
        _extract(repo, sha, dest, paths=None)
        return
    try:
        shutil.copytree(near[1], dest, symlinks=True, copy_function=link, ignore=shutil.ignore_patterns("__pycache__"))
    except (OSError, shutil.Error):  # the earlier bundle went meanwhile (gc): a whole export needs none
        shutil.rmtree(dest, ignore_errors=True)
        _extract(repo, sha, dest, paths=None)
        return
    for path in changed:
        _remove(dest, path)
    written = [path for path, added in changed.items() if added]
    if written:
        _extract(repo, sha, dest, paths=written)


def link(source: str, dest: str) -> None:
    """Hard-link a file, or copy it where a link cannot be made (another filesystem). A release's files are
    never written in place, so sharing them is safe."""
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)


def _changed(repo: git.Repo, base: str, sha: str) -> dict[str, bool] | None:
    """Paths that differ between two commits (True: present in `sha`), or None when only a whole export will
    do: an unknown base, too many changes, or attributes that change what `git archive` writes."""
    if not commit_exists(repo, base):
        return None
    raw = repo.git.diff("--raw", "-z", "--no-renames", "--no-abbrev", base, sha).split("\0")
    changed = {}
    for status, path in zip(raw[0::2], raw[1::2], strict=False):
        changed[path] = not status.endswith("D")
    if len(changed) > BY_DIFFERENCE or any(PurePosixPath(p).name == ".gitattributes" for p in changed):
        return None
    if "export-subst" in _attributes(repo, sha):  # such files change with every commit, unchanged or not
        return None
    return changed


def _attributes(repo: git.Repo, sha: str) -> str:
    names = repo.git.ls_tree("-r", "-z", "--name-only", "--full-tree", sha).split("\0")
    found = [n for n in names if PurePosixPath(n).name == ".gitattributes"]
    return "".join(repo.git.show(f"{sha}:{name}") for name in found)


def _remove(dest: Path, path: str) -> None:
    """Take a changed path out of a linked tree, and any folder it leaves empty (git keeps none)."""
    target = dest / path
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    for parent in target.parents:
        if parent == dest or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()


def _extract(repo: git.Repo, sha: str, dest: Path, paths: list[str] | None) -> None:
    """Extract the commit's files (or only `paths`), refusing the commit when one would land outside `dest`."""
    buf = io.BytesIO()
    with repo.git.custom_environment(GIT_LITERAL_PATHSPECS="1"):  # a file name is never a pattern
        repo.git.archive("--format=tar", sha, "--", *(paths or []), output_stream=buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = tar.getmembers()
        links = _links(repo, sha) if paths else {m.name.rstrip("/") for m in members if m.issym() or m.islnk()}
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


def _links(repo: git.Repo, sha: str) -> set[str]:
    """Every symbolic link of the commit's whole tree, where a part of it is extracted."""
    entries = repo.git.ls_tree("-r", "-z", "--full-tree", sha).split("\0")
    return {e.split("\t", 1)[1] for e in entries if e.startswith(LINK_MODE + " ")}


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
