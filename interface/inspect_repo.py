"""What `airagent init` finds in a repository: the DAG folder, plugins, requirements, the Airflow version, teams.

Pure reading of the working tree: nothing here writes, runs or imports what it reads.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from glob import escape as literal_glob
from pathlib import Path

import git

from activities.validation.review import CODEOWNERS_FILES
from airagent.config import Classification, Runtime

# Folders that hold no DAGs even when their files import Airflow (tests build DagBags, plugins extend Airflow,
# Astro's include/ holds what DAGs read), and folders of installed code.
NOT_DAGS = {"tests", "test", "docs", "plugins", "include", "node_modules", "venv", "site-packages", "__pycache__"}
# Airflow's own safe-mode test for a DAG file, tightened to an import so a file that only mentions it is skipped.
_IMPORTS_AIRFLOW = re.compile(rb"^\s*(?:from|import)\s+airflow\b", re.M)
_HEAD_BYTES = 256 * 1024
_PINNED_AIRFLOW = re.compile(r"^\s*apache-airflow(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+-]*)", re.M | re.I)
_CONSTRAINT = re.compile(r"^\s*(?:-c|--constraint)(?:\s+|\s*=\s*)(\S+)", re.M)
# Airflow's published constraints, e.g. .../constraints-3.0.2/constraints-3.12.txt
_CONSTRAINTS_URL = re.compile(r"constraints-(\d+\.\d+\.\d+)/constraints-(\d+\.\d+)\.txt")
# The official image, e.g. FROM apache/airflow:3.0.2-python3.12
_OFFICIAL_IMAGE = re.compile(r"^\s*FROM\s+(?:\S+/)?apache/airflow:(\d+\.\d+\.\d+)(?:-python(\d+\.\d+))?", re.M | re.I)


class InitError(Exception):
    """The repository cannot be set up as it is; the message says what to do."""


@dataclass
class Layout:
    root: Path
    dag_folder: str
    dag_files: int
    plugins_folder: str | None
    requirements: str | None
    constraints: str | None
    airflow_cfg: str | None
    airflow: str
    python: str
    version_from: str
    teams: dict[str, list[str]]
    teams_from: str | None
    branch: str
    head: str | None
    is_git: bool
    clean: bool  # the working tree holds the head's files (an airagent.yaml aside)
    outside: list[str] = field(default_factory=list)  # files importing airflow the DAG folder leaves out
    extras: list[str] = field(default_factory=list)  # packages.txt, Dockerfile: what local environments skip

    def classification(self) -> dict[str, list[str]]:
        """Globs beyond the defaults, so the diff sorts this layout's files into the right kinds."""
        defaults = Classification()
        found: dict[str, list[str]] = {}
        if self.dag_folder != "dags":
            found["dags"] = ["*"] if self.dag_folder == "." else [f"{literal_glob(self.dag_folder)}/*"]
        if self.plugins_folder and self.plugins_folder != "plugins":
            found["plugins"] = [f"{literal_glob(self.plugins_folder)}/*"]
        local = [p for p in (self.requirements, self.constraints) if p and "://" not in p]
        extra = [p for p in local if defaults.kind_of(p) != "dependencies"]
        if extra:
            found["dependencies"] = [*defaults.dependencies, *extra]
        return found


def inspect(root: Path) -> Layout:
    root = root.resolve()
    if not root.is_dir():
        raise InitError(f"{root} is not a folder; give the root of the repository that holds your DAGs")
    repo = _repository(root)
    files = dag_files(root)
    dag_folder = _dag_folder(root, files)
    inside = [f for f in files if _under(f, dag_folder)]
    requirements = _first_file(root, ["requirements.txt", _beside(dag_folder, "requirements.txt")])
    req_text = (root / requirements).read_text(errors="replace") if requirements else ""
    constraints = _constraints(root, requirements, req_text)
    airflow, python, version_from = _versions(root, req_text, constraints, requirements)
    teams, teams_from = _teams(root, dag_folder, inside)
    return Layout(
        root=root,
        dag_folder=dag_folder,
        dag_files=len(inside),
        plugins_folder=_first_dir(root, ["plugins", _beside(dag_folder, "plugins")]),
        requirements=requirements,
        constraints=constraints,
        airflow_cfg=_first_file(root, ["config/airflow.cfg", "airflow.cfg"]),
        airflow=airflow,
        python=python,
        version_from=version_from,
        teams=teams,
        teams_from=teams_from,
        branch=_branch(repo),
        head=repo.head.commit.hexsha if repo is not None and repo.head.is_valid() else None,
        is_git=repo is not None,
        clean=repo is not None and not repo.is_dirty() and set(repo.untracked_files) <= {"airagent.yaml"},
        outside=[f for f in files if not _under(f, dag_folder)],
        extras=[name for name in ("packages.txt", "Dockerfile") if (root / name).is_file()],
    )


def dag_files(root: Path) -> list[str]:
    """Python files that import Airflow and speak of DAGs, as posix paths from the root, outside NOT_DAGS."""
    found = []
    for here, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_DAGS)
        for name in sorted(names):
            if name.endswith(".py") and _is_dag_file(Path(here) / name):
                found.append((Path(here) / name).relative_to(root).as_posix())
    return found


def _is_dag_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    return bool(_IMPORTS_AIRFLOW.search(head)) and b"dag" in head.lower()


def _dag_folder(root: Path, files: list[str]) -> str:
    """The root when DAG files sit there (git-sync repos); else `dags/`, or the top folder holding the most of
    them, narrowed while all of them sit in one subfolder."""
    if any("/" not in f for f in files):
        return "."
    if (root / "dags").is_dir() and (any(f.startswith("dags/") for f in files) or not files):
        return "dags"
    if not files:
        raise InitError(
            f"no Python file under {root} imports airflow, and there is no dags/ folder; run `airagent init` at the "
            "root of the repository that holds your DAGs"
        )
    counts = Counter(f.split("/")[0] for f in files)
    folder = min(counts, key=lambda name: (-counts[name], name))
    while Path(folder).name != "dags":
        rest = [f.removeprefix(folder + "/") for f in files if f.startswith(folder + "/")]
        children = {f.split("/")[0] for f in rest}
        if any("/" not in f for f in rest) or len(children) != 1:
            break
        folder = f"{folder}/{children.pop()}"
    return folder


def _under(path: str, folder: str) -> bool:
    return folder == "." or path.startswith(folder + "/")


def _beside(dag_folder: str, name: str) -> str:
    """`name` next to the DAG folder, for layouts like airflow/dags beside airflow/plugins."""
    return (Path(dag_folder).parent / name).as_posix()


def _first_file(root: Path, candidates: list[str]) -> str | None:
    return next((c for c in dict.fromkeys(candidates) if (root / c).is_file()), None)


def _first_dir(root: Path, candidates: list[str]) -> str | None:
    return next((c for c in dict.fromkeys(candidates) if (root / c).is_dir()), None)


def _constraints(root: Path, requirements: str | None, text: str) -> str | None:
    """The constraints file the requirements name: a URL as given, a local file as a path from the root."""
    found = _CONSTRAINT.search(text)
    if not found or requirements is None:
        return None
    given = found.group(1)
    if "://" in given:
        return given
    path = ((root / requirements).parent / given).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) and path.is_file() else None


def _versions(root: Path, requirements: str, constraints: str | None, req_name: str | None) -> tuple[str, str, str]:
    """(airflow, python, where they came from): the requirements' pin, Airflow's constraints URL, the official
    image in the Dockerfile, or airagent's default."""
    default = Runtime()
    image = _OFFICIAL_IMAGE.search(_read(root / "Dockerfile"))
    url = _CONSTRAINTS_URL.search(constraints or "")
    python = (url and url.group(2)) or (image and image.group(2)) or default.python
    if pinned := _PINNED_AIRFLOW.search(requirements):
        return pinned.group(1), python, f"pinned in {req_name}"
    if url:
        return url.group(1), python, f"the constraints {req_name} installs with"
    if image:
        return image.group(1), python, "the Dockerfile's base image"
    return default.airflow, python, "the newest Airflow airagent supports (nothing in the repository pins one)"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _teams(root: Path, dag_folder: str, files: list[str]) -> tuple[dict[str, list[str]], str | None]:
    """Owners of the DAG folder's files from CODEOWNERS, or else one team per subfolder holding DAG files."""
    for name in CODEOWNERS_FILES:
        if text := _read(root / name):
            owned = _codeowners(root, files, text)
            if owned:
                return owned, name
    prefix = "" if dag_folder == "." else dag_folder + "/"
    subfolders = sorted({f.removeprefix(prefix).split("/")[0] for f in files if "/" in f.removeprefix(prefix)})
    # A folder named `[red]web` is a name, not a character class.
    return {sub: [f"{literal_glob(prefix + sub)}/*"] for sub in subfolders}, ("subfolders" if subfolders else None)


def _codeowners(root: Path, files: list[str], text: str) -> dict[str, list[str]]:
    """Owner -> globs, for the patterns that own a DAG file: the others would never be named for a broken DAG."""
    teams: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0].startswith(("[", "^[", "!")):
            continue  # blank, a comment, a GitLab section header, a negation, or a path with no owner
        glob = _glob(root, words[0])
        if any(fnmatch.fnmatchcase(f, glob) for f in files):
            for owner in words[1:]:
                teams.setdefault(owner, []).append(glob)
    return teams


def _glob(root: Path, pattern: str) -> str:
    """A CODEOWNERS pattern as the `teams:` glob airagent matches with fnmatch, where `*` crosses folders."""
    glob = pattern.lstrip("/").replace("**", "*")
    if glob.endswith("/"):
        return glob + "*"
    if not any(c in glob for c in "*?[") and (root / glob).is_dir():
        return glob + "/*"
    return glob


def _repository(root: Path) -> git.Repo | None:
    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    top = Path(repo.working_tree_dir or root).resolve()
    if top != root:
        raise InitError(f"{root} is inside the git repository at {top}; run `airagent init {top}` at its root")
    return repo


def _branch(repo: git.Repo | None) -> str:
    if repo is None or repo.head.is_detached:
        return "main"
    return repo.active_branch.name
