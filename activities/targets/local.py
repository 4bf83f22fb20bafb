"""The `local` target: an environment that is a directory on this host.

    <env>/releases/<release-id>/   the files of each release rolled here, plus release.json
    <env>/current                  symlink to the live release, swapped atomically
    <env>/manifest.json            what is live, what was live before, and the last KEEP_SWAPS swaps

The directory is the truth about what runs; Temporal history is not. Every change first
reads it, so rolling to what is already live does nothing and a retried roll never
rolls twice.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from activities.bundle import link
from activities.targets.base import Swap, check_live
from airagent.models import Expected, Release

# The record is read and rewritten on every roll and probe: a bounded history keeps that cheap. Rollback
# targets and gc (activities/gc.py) look back only a few releases.
KEEP_SWAPS = 200


class Record(BaseModel):
    live: Release | None = None
    previous: Release | None = None
    history: list[Swap] = []


class LocalEnvironment:
    def __init__(self, path: Path | str, name: str | None = None):
        self.path = Path(path)
        self.name = name or str(self.path)  # the environment's, for messages
        self.releases = self.path / "releases"
        self.current = self.path / "current"
        self.record_file = self.path / "manifest.json"  # the name it had before it was called a record

    def record(self) -> Record:
        if not self.record_file.exists():
            return Record()
        return Record.model_validate_json(self.record_file.read_text())

    def live(self) -> Release | None:
        return self.record().live

    def linked(self) -> str | None:
        """The release id `current` points at, read from the link itself."""
        if not self.current.is_symlink():
            return None
        return Path(os.readlink(self.current)).name

    def roll(self, release: Release, replaces: Expected | None = None) -> tuple[Record, bool]:
        """Make `release` live; returns the record and whether anything changed.

        Refuses (UnexpectedLive) when the record names another live release than `replaces`.
        """
        record = self.record()
        if record.live and record.live.id == release.id and self.linked() == release.id:
            return record, False
        self.expect(release, replaces, record)
        self._install(release)
        return self._swap(record, release, action="roll"), True

    def expect(self, release: Release, replaces: Expected | None, record: Record | None = None) -> None:
        """Raise UnexpectedLive unless the record names what `replaces` expects, or `release` (a retry)."""
        live = (record if record is not None else self.record()).live
        check_live(self.name, replaces, live.id if live else None, live.commit if live else None, release.id)

    def rollback(self, to: str | None) -> tuple[Record, bool]:
        """Put back an earlier release (by id), or nothing at all when `to` is None."""
        record = self.record()
        live_id = record.live.id if record.live else None
        if live_id == to and self.linked() == to:
            return record, False
        target = self.installed(to) if to else None
        return self._swap(record, target, action="rollback"), True

    def installed(self, release_id: str) -> Release:
        path = self.releases / release_id / "release.json"
        if not path.exists():
            raise FileNotFoundError(f"release {release_id} was never rolled to {self.path}; nothing to roll back to")
        return Release.model_validate_json(path.read_text())

    def _install(self, release: Release) -> None:
        """Put the release's files in once, hard-linked where they can be; a half-done copy never becomes visible."""
        dest = self.releases / release.id
        if (dest / "release.json").exists():
            return
        self.releases.mkdir(parents=True, exist_ok=True)
        staging = self.releases / f".{release.id}.{uuid.uuid4().hex[:8]}"
        shutil.copytree(release.bundle, staging, symlinks=True, copy_function=link)
        local = release.model_copy(update={"bundle": str(dest)})
        (staging / "release.json").write_text(local.model_dump_json(indent=2))
        try:
            staging.rename(dest)
        except OSError:
            shutil.rmtree(staging)  # another attempt finished first; its copy is identical
            if not (dest / "release.json").exists():
                raise

    def _swap(self, record: Record, release: Release | None, action: Literal["roll", "rollback"]) -> Record:
        if release is None:
            self.current.unlink(missing_ok=True)
        elif self.linked() != release.id:
            self._mark_changed(self.releases / release.id)
            link = self.path / f".current.{uuid.uuid4().hex[:8]}"
            link.symlink_to(Path("releases") / release.id)
            os.replace(link, self.current)
        replaced = record.live
        record = Record(
            live=self.installed(release.id) if release else None,
            previous=replaced,
            history=[
                *record.history,
                Swap(
                    at=datetime.now(UTC),
                    action=action,
                    release=release.id if release else None,
                    commit=release.commit if release else None,
                    replaced=replaced.id if replaced else None,
                ),
            ][-KEEP_SWAPS:],
        )
        self._write(record)
        return record

    def _mark_changed(self, incoming: Path) -> None:
        """Give the files that differ from the live release a fresh mtime.

        Airflow's DAG processor re-parses a file early only when its mtime is newer than its
        last parse; files from git keep their commit time, and a rollback brings back old ones.
        """
        now = time.time()
        for path in differing(self.current.resolve() if self.current.is_symlink() else None, incoming):
            os.utime(incoming / path, (now, now))

    def _write(self, record: Record) -> None:
        tmp = self.path / f".manifest.{uuid.uuid4().hex[:8]}"
        tmp.write_text(record.model_dump_json(indent=2))
        os.replace(tmp, self.record_file)


def differing(old: Path | None, new: Path) -> set[str]:
    """Paths, relative to `new`, of its files whose content `old` does not hold at the same place.

    Python's bytecode caches written beside a release's files are not the release's own.
    """
    found = set()
    for path in new.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        before = old / path.relative_to(new) if old else None
        if before is None or not before.is_file() or not _same(path, before):
            found.add(path.relative_to(new).as_posix())
    return found


def _same(path: Path, other: Path) -> bool:
    """One file linked into both releases (the usual case, see `bundle.link`), or two with the same bytes."""
    return os.path.samefile(path, other) or filecmp.cmp(path, other, shallow=False)
