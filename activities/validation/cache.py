"""Incremental validation: a DAG file is parsed again only when something it can depend on changed.

A file's result is stored under a key made of everything that can change it:

- the file's own content, and the content of every module in the DAG folder it imports,
  transitively, found with `ast` (every import statement, also inside functions, and
  every name an import could resolve to, so a new `helpers.py` that now shadows or
  satisfies an import changes the key too);
- when a file or one of its modules imports by a computed name (`importlib`,
  `__import__`, `exec`, `runpy`...), the content of every Python file in the DAG folder;
- the runtime, the parser's sources and the placeholder and timeout settings;
- every other file of the tree that is not declared `ignored` by the classification:
  plugins, config, data files a DAG might read (`open()` cannot be traced, so any of
  them changing invalidates every result).

Results live under `home()/validation-cache/files/`, content-addressed, so releases,
pipelines and working trees share them safely; a process keeps the ones it read or wrote
in memory too, as a result never goes stale under its key.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import json
import os
import posixpath
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from activities.validation import parser_app
from activities.validation.parser.paths import PLUGINS, relative_python_files
from airagent.config import home

# Calls that import or run code by a name `ast` cannot see.
DYNAMIC = {
    "import_module",
    "__import__",
    "exec",
    "eval",
    "run_path",
    "run_module",
    "load_source",
    "spec_from_file_location",
    "SourceFileLoader",
    "load_module",
}
# CPython 3.11 and 3.12 miscount the AST's recursion depth when threads parse at once (SystemError: AST
# constructor recursion depth mismatch): the deployer's validations share a worker's threads.
_AST = threading.Lock()
_modules: dict[str, tuple[list[tuple[int, str, list[str]]], bool]] = {}  # content digest -> (imports, dynamic)
REMEMBERED = 20_000
_remembered: dict[tuple[Path, str], dict] = {}  # (cache folder, key) -> result; never stale, keys are content


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _module_info(content_digest: str, data: bytes) -> tuple[list[tuple[int, str, list[str]]], bool]:
    if content_digest not in _modules:
        tree = syntax_tree(data)
        dynamic = tree is not None and any(
            isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in DYNAMIC
            for node in ast.walk(tree)
        )
        _modules[content_digest] = (imported_names(tree), dynamic)
    return _modules[content_digest]


def syntax_tree(source: bytes) -> ast.AST | None:
    try:
        with _AST:
            return ast.parse(source)
    except (SyntaxError, ValueError):
        return None  # the parse itself reports it


def imported_names(tree: ast.AST | None) -> list[tuple[int, str, list[str]]]:
    """Every import statement anywhere in the module, as (level, module, names)."""
    found: list[tuple[int, str, list[str]]] = []
    if tree is None:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [alias.name for alias in node.names]))
    return found


def absolute_imports(path: Path) -> list[str]:
    """Modules a file imports by absolute name, for the policies; `from a import b` counts as `a` and `a.b`.

    From the syntax tree its cache key was made from: the parser does not parse each file a second time."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    names = set()
    for level, module, members in _module_info(digest(data), data)[0]:
        if level or not module:
            continue
        names.add(module)
        names.update(f"{module}.{m}" for m in members if m != "*")
    return sorted(names)


@functools.lru_cache(maxsize=1 << 16)
def _candidates(rel: str, level: int, module: str, members: tuple[str, ...]) -> frozenset[str]:
    """Paths, relative to the DAG folder, that an import statement in `rel` could load."""
    here = posixpath.dirname(rel)
    if level:
        base = here
        for _ in range(level - 1):
            base = posixpath.dirname(base)
        roots = [base]
    else:
        # The DAG folder is on sys.path; the file's own folder too, to be safe.
        roots = ["", here]
    dotted = [module] if module else []
    names = [f"{module}.{m}" if module else m for m in members if m != "*"] + dotted
    found = set()
    for root in roots:
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                stem = posixpath.join(root, *parts[:i])
                found |= {f"{stem}/__init__.py", f"{stem}.py"}
    return frozenset(p for p in found if not p.startswith(".."))


def file_keys(bundle: Path, dag_folder: str, context: dict, ignored: Iterable[str] = ()) -> dict[str, str]:
    """The cache key of every Python file of the DAG folder (paths relative to it), and of the plugins' load."""
    dags = (bundle / dag_folder).resolve()
    digests, edges, dynamic = _graph(dags)
    everything = digest(json.dumps(sorted(digests.items())).encode())
    shared = digest(
        json.dumps(
            {
                "parser": parser_app.digest(),
                "context": context,
                "others": _other_files(bundle, dags, list(ignored)),
            },
            sort_keys=True,
        ).encode()
    )
    keys = {}
    for rel in digests:
        closure = _closure(edges, rel)
        parts = {"shared": shared, "file": rel, "modules": sorted((m, digests[m]) for m in closure)}
        if closure & dynamic:
            parts["everything"] = everything
        keys[rel] = digest(json.dumps(parts).encode())
    keys[PLUGINS] = digest(json.dumps({"shared": shared, "file": PLUGINS}).encode())  # plugins are other files
    return keys


def imported_modules(bundle: Path, dag_folder: str, rel: str) -> set[str]:
    """The DAG folder's files that `rel` imports, transitively (paths relative to the folder)."""
    _, edges, _ = _graph((bundle / dag_folder).resolve())
    return _closure(edges, rel) - {rel} if rel in edges else set()


def _graph(dags: Path) -> tuple[dict[str, str], dict[str, set[str]], set[str]]:
    """Each Python file's digest, the files of the folder it imports, and the files that import by computed name."""
    contents = {}
    for rel in relative_python_files(dags):
        with open(os.path.join(dags, rel), "rb") as f:
            contents[rel] = f.read()
    digests = {rel: digest(data) for rel, data in contents.items()}
    edges, dynamic = {}, set()
    for rel, data in contents.items():
        imports, is_dynamic = _module_info(digests[rel], data)
        if is_dynamic:
            dynamic.add(rel)
        edges[rel] = {
            c
            for level, module, members in imports
            for c in _candidates(rel, level, module, tuple(members))
            if c in digests and c != rel
        }
    return digests, edges, dynamic


def _closure(edges: dict[str, set[str]], rel: str) -> set[str]:
    closure, stack = {rel}, [rel]
    while stack:
        for dep in edges[stack.pop()] - closure:
            closure.add(dep)
            stack.append(dep)
    return closure


def _other_files(bundle: Path, dags: Path, ignored: list[str]) -> str:
    """One digest of every file outside the DAG folder's Python modules that the classification does not ignore."""
    root, dags_root = str(bundle.resolve()), str(dags)
    entries = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "__pycache__")
        prefix = os.path.relpath(folder, root).replace(os.sep, "/") + "/"
        prefix = "" if prefix == "./" else prefix
        in_dags = folder == dags_root or folder.startswith(dags_root + os.sep)
        for name in sorted(names):
            if name.endswith(".py") and in_dags:
                continue  # tracked one by one
            rel = prefix + name
            if name.endswith(".pyc") or any(fnmatch.fnmatchcase(rel, g) for g in ignored):
                continue
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    entries.append((rel, digest(f.read())))
            except OSError:
                entries.append((rel, "unreadable"))
    return digest(json.dumps(entries).encode())


def load(keys: Iterable[str], files: Path | None = None) -> dict[str, dict]:
    """The stored results among `keys`; absent or half-written ones (a crashed writer) are parsed again."""
    files, found = files or folder(), {}
    for key in keys:
        if (files, key) in _remembered:
            found[key] = _remembered[files, key]
            continue
        try:
            with open(files / key[:2] / f"{key}.json", "rb") as f:
                found[key] = _remember(files, key, json.loads(f.read()))
        except (OSError, ValueError):
            pass
    return found


def store(key: str, result: dict, files: Path | None = None) -> None:
    """Kept under `key` in `files` (default: `folder()`; a caller storing many finds it once)."""
    files = files or folder()
    path = files / key[:2] / f"{key}.json"
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    data = json.dumps(result)
    try:
        tmp.write_text(data)
    except FileNotFoundError:  # the first result under this prefix
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(data)
    tmp.replace(path)
    _remember(files, key, result)


def folder() -> Path:
    """Where results are kept, for this process's state directory."""
    return home() / "validation-cache" / "files"


def _remember(files: Path, key: str, result: dict) -> dict:
    """Results stay in memory too, so a long-lived worker reads each from disk once; the oldest go first."""
    _remembered[files, key] = result
    while len(_remembered) > REMEMBERED:
        del _remembered[next(iter(_remembered))]
    return result
