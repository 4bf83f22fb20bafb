"""Garbage collection: what trains leave on this host's disk, bounded.

`plan` decides what goes and why, touching nothing; `apply` removes it; `collect` does
both for one pipeline, after a train. What stays:

- of a pipeline's built releases (`home()/releases/<pipeline>/<id>`) and of each local
  environment's copies (`<env>/releases/<id>`): every release live in one of its
  environments or one it could be rolled back to there (the environment's record: live,
  previous, the last `Retention.rollbacks` distinct releases it ran), and the newest
  `Retention.built` builds, so a train in flight keeps its release;
- every runtime a release that stays names, and any used within `runtime_grace`; every
  runtime, while the record (`release.json`) of a release that stays cannot be read, as it
  may run on any of them; the plan's notes name that release and what it kept;
- the validation cache up to `cache_bytes`, the least recently used entries going first;
- the newest `reports_kept` full reports and validated commits' DAG maps, up to `reports` old;
- every parser folder with a parser listening, or used within `parsers`.

A kubernetes environment's record is in its cluster: when it cannot be read (no cluster
here), every built release of that pipeline stays rather than a guess. Nothing changed in
the last `young` goes, so gc may run beside a build or a roll; a folder is renamed aside
before it is deleted, so a half-deleted release never looks installed; a runtime is taken
under the lock `ensure_runtime` holds while it hands one out, a parser's folder under the
lock its starter holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from stat import S_ISDIR
from typing import Literal

from pydantic import BaseModel, Field, computed_field
from temporalio import activity

from activities.environment import environment
from activities.heartbeat import keep_alive
from activities.runtime import runtime_hash, runtimes_locked
from activities.targets.components import Components
from activities.targets.local import LocalEnvironment
from activities.validation import cache, reports, review, service
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings, home

Kind = Literal["release", "environment release", "runtime", "partial", "cache", "parser", "report"]


class Retention(BaseModel):
    rollbacks: int = Field(5, description="distinct releases an environment ran last that it keeps to roll back to")
    built: int = Field(3, description="newest builds of a pipeline kept whatever runs")
    young: timedelta = Field(timedelta(minutes=10), description="nothing changed this recently is removed")
    runtime_grace: timedelta = Field(timedelta(days=7), description="an unused runtime stays this long")
    partials: timedelta = Field(timedelta(hours=1), description="age of an unfinished runtime, copy or cache write")
    builds: timedelta = Field(
        timedelta(days=1), description="age of a build's scratch folder: a build spans a runtime and an image build"
    )
    parsers: timedelta = Field(timedelta(days=1), description="an idle parser's folder stays this long")
    reports: timedelta = Field(
        timedelta(days=7), description="a full validation report stays this long; a stage that needs it later makes it"
    )
    reports_kept: int = Field(50, description="newest full reports and commits' DAG maps kept, up to `reports` old")
    cache_bytes: int = Field(512 << 20, description="cap on the validation cache")


class Removal(BaseModel):
    kind: Kind
    path: str
    size: int = Field(description="bytes of disk removing it frees: files linked elsewhere too free nothing")
    reason: str
    seen: float = Field(description="its last change when planned; apply leaves it when it changed since")


class GcPlan(BaseModel):
    removals: list[Removal] = []
    notes: list[str] = Field([], description="what was kept rather than guessed, and why")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> int:
        """Bytes the removals free."""
        return sum(r.size for r in self.removals)


class GcResult(BaseModel):
    removed: dict[str, int] = Field({}, description="kind -> how many were removed")
    freed: int = Field(0, description="bytes")
    skipped: int = Field(0, description="changed or gone since the plan")
    failed: list[str] = []
    notes: list[str] = []


def collect(pipeline: PipelineSettings, keep: Retention | None = None) -> GcResult:
    """After a train: its pipeline's releases, and the host's runtimes, cache and parsers. Idempotent."""
    return apply(plan([pipeline], keep))


@activity.defn(name="collect_garbage")
def collect_garbage(pipeline: PipelineSettings) -> GcResult:
    """The conductor's, after each train, on the host its releases are on."""
    with keep_alive("gc"):
        return collect(pipeline)


def plan(pipelines: Iterable[PipelineSettings], keep: Retention | None = None) -> GcPlan:
    """What to remove, and why. Runtimes, the cache and parsers are the host's: every release on disk, of any
    pipeline, keeps its runtime."""
    keep, now, out = keep or Retention(), time.time(), GcPlan()
    pipelines = list(pipelines)
    for pipeline in pipelines:
        _releases(pipeline, keep, now, out)
    used, unread = _runtimes_in_use(pipelines, {r.path for r in out.removals})
    _runtimes(used, unread, keep, now, out)
    _cache(keep, now, out)
    _parsers(keep, now, out)
    _partials(home() / "trees", keep.partials, now, out, "a tree staged for a parse that never ended")
    records = {"a full validation report": reports.folder(), "a validated commit's DAGs": review.dag_maps()}
    for what, folder in records.items():
        made = sorted(folder.glob("*.json"), key=_last_change, reverse=True) if folder.is_dir() else []
        for i, report in enumerate(made):
            past = "" if i < keep.reports_kept else f", past the {keep.reports_kept} newest"
            _plan(out, "report", report, now, keep.young if past else keep.reports, f"{what} nothing asked for{past}")
    return out


def apply(plan: GcPlan) -> GcResult:
    """Remove what `plan` lists, leaving what changed since; never raises for what vanished meanwhile."""
    result, removed = GcResult(notes=plan.notes), Counter[str]()
    for removal in plan.removals:
        try:
            done = _remove(removal)
        except FileNotFoundError:
            done = False
        except OSError as err:
            result.failed.append(f"{removal.path}: {err}")
            continue
        if done:
            removed[removal.kind] += 1
            result.freed += removal.size
        else:
            result.skipped += 1
    result.removed = dict(removed)
    return result


# --- releases ---------------------------------------------------------------------------


def _releases(pipeline: PipelineSettings, keep: Retention, now: float, out: GcPlan) -> None:
    wanted: set[str] = set()
    unread = []
    for env in pipeline.environments:
        try:
            wanted |= _rollback_targets(env, pipeline, keep.rollbacks)
        except Exception as err:  # whatever stops the record being read, nothing is guessed
            unread.append(env.name)
            out.notes.append(
                f"{pipeline.name}: every release kept: {env.name}'s record could not be read ({type(err).__name__})"
            )
    built = home() / "releases" / pipeline.name
    releases = _folders(built)
    wanted |= {p.name for p in sorted(releases, key=_last_change, reverse=True)[: keep.built]}
    unwanted = f"no environment of {pipeline.name} runs it or keeps it to roll back to, nor is it a newest build"
    for path in [] if unread else releases:
        if path.name not in wanted:
            _plan(out, "release", path, now, keep.young, unwanted)
    _partials(built, keep.builds, now, out, "a build's scratch folder, left by a worker that stopped")
    for env in pipeline.environments:
        if isinstance(env.target, LocalTarget) and env.name not in unread:
            local = LocalEnvironment(env.target.path, env.name)
            linked = _linked(local)
            for path in _folders(local.releases):
                if path.name not in wanted and path.name != linked:
                    _plan(out, "environment release", path, now, keep.young, unwanted)
            _partials(local.releases, keep.partials, now, out, "a copy left unfinished")


def _rollback_targets(env: EnvironmentSettings, pipeline: PipelineSettings, count: int) -> set[str]:
    """Live, previous, the last `count` distinct releases it ran, and those its running components started on.

    A kubernetes record lists the releases it ran in the order each was first rolled; its
    rollbacks write back the cluster's own snapshots, not these files."""
    running: list[str | None] = []
    if isinstance(env.target, LocalTarget):
        record = LocalEnvironment(env.target.path, env.name).record()
        live = record.live.id if record.live else None
        previous = record.previous.id if record.previous else None
        recent = list(dict.fromkeys(s.release for s in reversed(record.history) if s.release))
        # Dags-only rolls restart nothing, so a component may run on a release long out of that list: its plugins,
        # config and runtime are in use, and the next roll compares with them.
        running = [p.release for p in Components(env.target.path).records() if p.alive]
    else:
        marker = environment(env, pipeline).marker()
        live, previous, recent = marker.live, marker.previous, marker.rolled[::-1]
    return {r for r in (live, previous, *recent[:count], *running) if r}


def _linked(local: LocalEnvironment) -> str | None:
    try:
        return local.linked()
    except FileNotFoundError:  # rolled back to nothing meanwhile
        return None


# --- runtimes ---------------------------------------------------------------------------


def _runtimes_in_use(pipelines: list[PipelineSettings], removed: set[str]) -> tuple[set[Path], dict[Path, str]]:
    """Runtimes that releases which stay name, and the one an empty local environment's Airflow starts on; and
    the record of each release that stays but cannot be read -> why."""
    releases = [p for folder in _folders(home() / "releases") for p in _folders(folder)]
    used, unread = set(), {}
    for pipeline in pipelines:
        for env in pipeline.environments:
            if isinstance(env.target, LocalTarget):
                local = LocalEnvironment(env.target.path, env.name)
                releases += _folders(local.releases)
                if env.target.airflow and _linked(local) is None:
                    used.add(home() / "runtimes" / runtime_hash(pipeline.runtime, b""))  # see `airagent env up`
    for path in releases:
        if str(path) not in removed:
            record = path / "release.json"
            try:
                used.add(Path(json.loads(record.read_text())["runtime"]))
            except (OSError, ValueError, KeyError, TypeError) as err:
                if path.exists():  # not one another gc took away meanwhile
                    unread[record] = type(err).__name__
    return {p.resolve() for p in used}, unread


def _runtimes(used: set[Path], unread: dict[Path, str], keep: Retention, now: float, out: GcPlan) -> None:
    folder = home() / "runtimes"
    unused = GcPlan()
    for path in _folders(folder):
        if path.resolve() not in used:
            _plan(unused, "runtime", path, now, keep.runtime_grace, "no release left names it")
    if unread:
        spared = ", ".join(sorted(Path(r.path).name for r in unused.removals)) or "none"
        for record, why in unread.items():
            out.notes.append(
                f"every runtime kept: {record} could not be read ({why}), so the runtime its release runs on is "
                f"unknown; kept, though no readable release names them: {spared}. They go once that release is "
                "removed or its record readable again"
            )
    else:
        out.removals += unused.removals
    _partials(folder, keep.partials, now, out, "an unfinished runtime build")


# --- the validation cache and the parsers -------------------------------------------------


def _cache(keep: Retention, now: float, out: GcPlan) -> None:
    """Least recently used first, by access time: a read marks an entry used at most once a day where the
    filesystem is mounted `relatime`, and a worker reads each once, so the order is rough; a removed entry
    costs one parse."""
    entries, total = [], 0
    for folder, _, names in os.walk(cache.folder()):
        for name in names:
            path = Path(folder) / name
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            if name.startswith("."):  # a writer's temporary file
                if now - stat.st_mtime > keep.partials.total_seconds():
                    out.removals.append(_removal("partial", path, stat.st_mtime, "a cache write left unfinished"))
                continue
            entries.append((max(stat.st_atime, stat.st_mtime), _disk(stat), path, stat.st_mtime))
            total += _disk(stat)
    cap = keep.cache_bytes
    for used, size, path, changed in sorted(entries):
        if total <= cap:
            break
        if now - changed > keep.young.total_seconds():
            reason = f"used {_age(now - used)} ago, the least recently; the cache is over {cap >> 20} MiB"
            out.removals.append(_removal("cache", path, changed, reason, size))
            total -= size


def _parsers(keep: Retention, now: float, out: GcPlan) -> None:
    folder = home() / "parsers"
    for path in _folders(folder):
        touched = _last_change(path)
        if now - touched > keep.parsers.total_seconds() and not _listening(path):  # only an old one is asked
            reason = f"no parser listens there; unused for {_age(now - touched)}"
            out.removals.append(_removal("parser", path, touched, reason))
    _partials(folder, keep.partials, now, out, "a parser folder gc left half-removed")


def _listening(parser: Path) -> bool:
    connection = service.listening(parser)  # a parser takes a connection without a request as nothing to do
    if connection is not None:
        connection.close()
    return connection is not None


@contextlib.contextmanager
def _parser_idle(parser: Path) -> Iterator[bool]:
    """Whether no one is starting a parser there, holding that off while True."""
    try:
        fd = os.open(parser / "lock", os.O_RDONLY)  # not created: that would change the folder
    except FileNotFoundError:
        yield True
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        idle = True
    except BlockingIOError:
        idle = False
    try:
        yield idle
    finally:
        os.close(fd)


# --- planning and removing ----------------------------------------------------------------


def _plan(out: GcPlan, kind: Kind, path: Path, now: float, age: timedelta, why: str) -> None:
    """Plan `path`'s removal when nothing in it changed for `age`."""
    touched = _last_change(path)
    if now - touched > age.total_seconds():
        out.removals.append(_removal(kind, path, touched, f"{why}; unchanged for {_age(now - touched)}"))


def _partials(folder: Path, age: timedelta, now: float, out: GcPlan, what: str) -> None:
    """Folders named `.<name>.<random>`: a copy or build that never finished, or one gc set aside."""
    for path in _folders(folder, hidden=True):
        _plan(out, "partial", path, now, age, what)


def _removal(kind: Kind, path: Path, seen: float, reason: str, size: int | None = None) -> Removal:
    return Removal(kind=kind, path=str(path), size=_size(path) if size is None else size, reason=reason, seen=seen)


def _remove(removal: Removal) -> bool:
    """Remove one thing unless it changed since the plan; False when it did or is gone."""
    path = Path(removal.path)
    if removal.kind == "runtime":
        with runtimes_locked(exclusive=True):
            aside = _aside(path, removal.seen)
    elif removal.kind == "parser":
        with _parser_idle(path) as idle:
            aside = _aside(path, removal.seen) if idle and not _listening(path) else None
    elif path.is_dir() and not path.is_symlink():
        aside = _aside(path, removal.seen)
    elif _touched(path) <= removal.seen:
        path.unlink()
        return True
    else:
        return False
    if aside is None:
        return False
    shutil.rmtree(aside)
    return True


def _aside(path: Path, seen: float) -> Path | None:
    """Rename the folder out of the way, unless it changed since `seen`: gone from where anything looks at once."""
    if _touched(path) > seen:
        return None
    aside = path.with_name(f".{path.name}.gc-{uuid.uuid4().hex[:8]}")
    path.rename(aside)
    return aside


def _folders(folder: Path, hidden: bool = False) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries if e.name.startswith(".") == hidden and e.is_dir(follow_symlinks=False)]


def _touched(path: Path) -> float:
    """The last change to `path` or to what it holds at its top: a runtime's `last-used`, a parser's lock and log."""
    latest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        with os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
    return latest


def _last_change(path: Path) -> float:
    """`_touched`, or the far future for what vanished meanwhile (another gc): too young to plan anything for."""
    try:
        return _touched(path)
    except FileNotFoundError:
        return float("inf")


def _size(path: Path) -> int:
    """The disk space removing `path` frees: a file with another link (uv's cache hard-links a runtime's
    packages) frees none."""
    paths = [path]
    for folder, subdirs, names in os.walk(path):
        paths += [Path(folder, name) for name in subdirs + names]
    total = 0
    for each in paths:
        with contextlib.suppress(FileNotFoundError):
            total += _disk(each.lstat())
    return total


def _disk(stat: os.stat_result) -> int:
    return 0 if stat.st_nlink > 1 and not S_ISDIR(stat.st_mode) else stat.st_blocks * 512


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit}"
    return f"{seconds:.0f} s"
