"""The parse of a release: real Airflow, in the release's runtime, over the files whose inputs changed.

The rest come from the cache; then the pipeline's policies apply to every file, so a
report means the same whether a file was parsed now or came from the cache, here or in
a pod. A parser that itself fails raises `service.ParserFailed`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from activities.bundle import link
from activities.validation import cache, policies, service
from activities.validation.parser.paths import PLUGINS
from activities.validation.parser.report import cap
from airagent.config import Classification, PipelineSettings, ValidationSettings, home
from airagent.models import FileReport, Release, ValidationReport

PARSE_TIMEOUT = 900.0


def parse_release(release: Release, pipeline: PipelineSettings | None = None) -> ValidationReport:
    return parse_tree(Path(release.runtime), Path(release.bundle), release.dag_folder, release.plugins_folder, pipeline)


def parse_tree(
    runtime: Path,
    bundle: Path,
    dag_folder: str,
    plugins_folder: str,
    pipeline: PipelineSettings | None = None,
    timeout: float | None = None,
    only: Collection[str] | None = None,
) -> ValidationReport:
    """Parse what changed with the runtime's warm parser (see `service`); the rest from the cache. With `only`
    (paths relative to the DAG folder), just those files, as `parse_changed` says."""
    settings = pipeline.validation if pipeline else ValidationSettings()
    server = service.Server(runtime, readable_root(bundle), sandboxed=pipeline.sandbox if pipeline else True)
    service.start_soon(server)  # while the tree is staged and its keys computed
    with readable(bundle) as tree:
        return parse_changed(
            {"runtime": runtime.name, "runtime_json": read(runtime / "runtime.json")},
            tree,
            dag_folder,
            plugins_folder,
            pipeline,
            timeout,
            lambda todo: _named_back(
                _run_parser(server, tree, dag_folder, plugins_folder, todo, settings, timeout), tree, bundle
            ),
            only,
        )


def readable_root(bundle: Path) -> Path:
    """What a sandboxed parser of `bundle` may read: a pipeline's releases are read where they are, so one warm
    parser serves all its trains; any other tree (`airagent validate PATH`, a commit checked before a merge) is
    staged under one folder of the state directory (see `readable`), so one warm parser per runtime serves them
    all, and a private folder of the caller's is never opened to the sandbox."""
    releases = (home() / "releases").resolve()
    resolved = bundle.resolve()
    if resolved.is_relative_to(releases):
        return releases / resolved.relative_to(releases).parts[0]
    trees = home() / "trees"
    trees.mkdir(parents=True, exist_ok=True)  # a sandbox mounts what exists
    return trees.resolve()


@contextmanager
def readable(bundle: Path) -> Iterator[Path]:
    """The bundle where its parser may read it (see `readable_root`): a release as it is, any other tree staged,
    hard-linked, for as long as the context lasts."""
    if bundle.resolve().is_relative_to((home() / "releases").resolve()):
        yield bundle
        return
    # A crash leaves it to gc as partial.
    staged = readable_root(bundle) / f".{bundle.resolve().name or 'tree'}.{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(bundle, staged, symlinks=True, copy_function=_readable, ignore=_not_parsed)
        for folder, _, _ in os.walk(staged):
            os.chmod(folder, 0o755)  # our copy of a folder the caller may keep private
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _not_parsed(folder: str, names: list[str]) -> set[str]:
    """Hidden folders (.git, a venv, the state directory itself) and bytecode, as the cache keys leave them out."""
    return {n for n in names if n == "__pycache__" or (n.startswith(".") and os.path.isdir(os.path.join(folder, n)))}


def _readable(source: str, dest: str) -> None:
    """Linked when others may read it already; else a copy of ours that they may, so the caller's stays private."""
    if os.stat(source).st_mode & 0o004:
        link(source, dest)
    else:
        shutil.copy2(source, dest)
        os.chmod(dest, 0o644)


def _named_back(results: Iterable[dict], staged: Path, tree: Path) -> Iterator[dict]:
    """Errors name the files where the caller has them, not where they were staged."""
    for result in results:
        if staged != tree:
            if result.get("error"):
                result["error"] = result["error"].replace(str(staged), str(tree))
            for path, error in result.get("plugins", {}).items():
                result["plugins"][path] = error.replace(str(staged), str(tree))
        yield result


def parse_changed(
    runtime: dict,
    bundle: Path,
    dag_folder: str,
    plugins_folder: str,
    pipeline: PipelineSettings | None,
    timeout: float | None,
    parse: Callable[[list[str]], Iterable[dict]],
    only: Collection[str] | None = None,
) -> ValidationReport:
    """Files not in the cache go to `parse` (paths relative to the DAG folder), whose reports are stored as they
    come; `runtime` names what parses them.

    With `only`, the files outside it (the plugins' load too, unless named) are neither parsed nor reported; the
    DAGs the cache knows of them still count for a duplicate dag_id with a reported file.

    Then apply the pipeline's rules and name owners, so a report means the same
    whether a file was parsed now or came from the cache, here or in a pod.
    """
    settings = pipeline.validation if pipeline else ValidationSettings()
    ignored = (pipeline.classification if pipeline else Classification()).ignored
    context = {
        **runtime,
        "timeout": timeout,
        "placeholders": settings.placeholders.model_dump(mode="json"),
        "limits": settings.limits.model_dump(),
        "sandbox": pipeline.sandbox if pipeline else True,
        "dag_folder": dag_folder,
        "plugins_folder": plugins_folder,
    }
    keys = cache.file_keys(bundle, dag_folder, context, ignored)
    stored = cache.folder()
    found = cache.load(keys.values(), stored)
    results = {rel: found.get(key) for rel, key in keys.items()}
    outside = {rel: results.pop(rel) for rel in list(results) if only is not None and rel not in only}
    todo = sorted(rel for rel, result in results.items() if result is None)
    if todo:
        for result in parse(todo):
            rel = result["path"]
            results[rel] = result
            if not result.get("transient"):
                cache.store(keys[rel], result, stored)
    plugins = results.pop(PLUGINS, {})  # none to report when outside `only`
    assert plugins is not None  # from the cache or, with every other missing one, from `parse`
    files = plugin_reports(plugins, plugins_folder, cached=PLUGINS not in todo)
    for rel in sorted(results):
        parsed = results[rel]
        assert parsed is not None
        # Capped again here: the text comes from a process that ran the file's code.
        error = cap(parsed["error"]) if parsed.get("error") else None
        # Read only for the rule that needs them, from the syntax trees the cache keys came from.
        imports = cache.absolute_imports(bundle / dag_folder / rel) if settings.policies.forbidden_imports else []
        report = FileReport.model_validate(
            {**parsed, "error": error, "path": _from_root(dag_folder, rel), "cached": rel not in todo}
            | {"imports": imports}
        )
        files.append(policies.check(report, settings))
    listed = {f.path: f.dag_ids for f in files}
    known = listed | {_from_root(dag_folder, rel): r["dag_ids"] for rel, r in outside.items() if r and rel != PLUGINS}
    owners: dict[str, list[str]] = {}
    for path in sorted(known):  # the order the files are listed in
        for dag_id in known[path]:
            owners.setdefault(dag_id, []).append(path)
    duplicates = {
        dag_id: paths for dag_id, paths in sorted(owners.items()) if len(paths) > 1 and any(p in listed for p in paths)
    }
    return ValidationReport(files=files, duplicates=duplicates, parsed=len([t for t in todo if t != PLUGINS]))


def plugin_reports(result: dict, plugins_folder: str, cached: bool) -> list[FileReport]:
    """A plugin that does not import, as Airflow would find it, fails like a DAG file; one that loads is not listed."""
    if result.get("error"):  # the load itself hung or died
        return [FileReport(path=plugins_folder, error=cap(result["error"]), cached=cached)]
    return [
        FileReport(path=_from_root(plugins_folder, rel), error=cap(error), cached=cached)
        for rel, error in sorted(result.get("plugins", {}).items())
    ]


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _run_parser(
    server: service.Server,
    bundle: Path,
    dag_folder: str,
    plugins_folder: str,
    files: list[str],
    settings: ValidationSettings,
    timeout: float | None,
) -> Iterator[dict]:
    request = {
        "folder": str(bundle / dag_folder),
        "plugins_folder": str(bundle / plugins_folder),
        "cwd": str(bundle),
        "files": files,
        "placeholders": settings.placeholders.model_dump(mode="json"),
        "limits": settings.limits.for_parser(),
        "workers": os.cpu_count() or 1,
        "timeout": timeout,
    }
    try:
        yield from service.parse(server, request, PARSE_TIMEOUT)
    except service.ParserFailed as err:
        raise service.ParserFailed(f"the DAG parser itself failed: {str(err)[-3000:]}") from None


def _from_root(dag_folder: str, path: str) -> str:
    """The parser sees paths inside the DAG folder; people know them from the repository's root."""
    return f"{dag_folder.rstrip('/')}/{path}" if dag_folder not in ("", ".") else path
