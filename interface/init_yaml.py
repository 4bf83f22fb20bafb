"""The `airagent.yaml` that `airagent init` writes: a template whose comments say why each value is what it is.

Every value from the repository goes through yaml.safe_dump, so a folder or owner name with YAML's special
characters stays a plain string.
"""

from __future__ import annotations

import json
from datetime import date

import yaml

from interface.inspect_repo import Layout

PIPELINE = "main"
# Each local environment takes five ports from its `port`; 10 apart keeps them clear of each other.
ENVIRONMENTS = (("staging", 8080, "5m"), ("prod", 8090, "10m"))
STATE = ".airagent/envs"


def value(v: object) -> str:
    """One YAML value on one line, quoted where YAML needs it; JSON (which YAML reads) where a string holds a
    line break, which YAML would fold onto lines of the template's wrong indent."""
    text = yaml.safe_dump(v, default_flow_style=True, width=1_000_000, allow_unicode=True, sort_keys=False)
    text = text.removesuffix("\n...\n").strip()
    return json.dumps(v) if "\n" in text else text


def printable(text: str) -> str:
    """A repository's name inside a comment: a line break there would end the comment."""
    return "".join(c if c.isprintable() else "?" for c in text)


def render(layout: Layout) -> str:
    lines = [
        f"# airagent.yaml, written by `airagent init` on {date.today().isoformat()} from what it found here.",
        "# `airagent config check` checks it; `airagent config schema` lists every setting.",
        *_found(layout),
        "",
        "# The Airflow runtime every release runs in: a venv airagent builds with uv, keyed by these values and",
        "# the requirements file, and built again only when one of them changes.",
        "runtime:",
        f"  python: {value(layout.python)}",
        f"  airflow: {value(layout.airflow)}   # {printable(layout.version_from)}",
        *_requirements(layout),
        "",
        "pipelines:",
        f"  {PIPELINE}:",
        "    repo: .   # this folder's git repository",
        f"    branch: {value(layout.branch)}   # checked out when init ran: every commit on it is deployed",
        f"    dag_folder: {value(layout.dag_folder)}   # {_dag_reason(layout)}",
        *_plugins(layout),
        "    poll_interval: 30s   # how often the conductor looks at the branch; `airagent notify` from CI: at once",
        *_teams(layout),
        *_classification(layout),
        "    # Local Airflow 3 on this host, under .airagent/ (git ignores it). Each uses five ports from `port`;",
        "    # `airagent env up NAME` starts one. A train rolls staging, watches it for `soak` (a failing probe",
        "    # rolls it back), then does the same to prod.",
        "    environments:",
    ]
    for name, port, soak in ENVIRONMENTS:
        target = {"type": "local", "path": f"{STATE}/{name}", "port": port}
        lines += [
            f"      - name: {name}",
            f"        target: {value(target)}",
            f"        soak: {soak}",
        ]
    lines.append("        # require_approval: true   # hold each train before prod until `airagent approve`")
    return "\n".join(lines) + "\n"


def _found(layout: Layout) -> list[str]:
    """What the repository holds that airagent uses without a setting, or leaves to someone else."""
    notes = []
    if layout.airflow_cfg:
        notes.append(f"{layout.airflow_cfg}: each local environment's AIRFLOW_CONFIG (executor, auth, refresh)")
    if "packages.txt" in layout.extras:
        notes.append("packages.txt: OS packages, which local environments do not install; install them on this host")
    if "Dockerfile" in layout.extras:
        notes.append("Dockerfile: the image of kubernetes environments (`image:`); local ones run the venv below")
    if layout.outside:
        more = len(layout.outside) - 3
        shown = ", ".join(layout.outside[:3]) + (f" and {more} more" if more > 0 else "")
        notes.append(f"not deployed, outside the DAG folder though they import Airflow: {shown}")
    return ["#", *(f"# - {printable(note)}" for note in notes)] if notes else []


def _requirements(layout: Layout) -> list[str]:
    if layout.requirements is None:
        return ["  # requirements: requirements.txt   # none found; add one when DAGs need more packages"]
    line = f"  requirements: {value(layout.requirements)}   # installed into the runtime beside Airflow"
    if layout.constraints:
        return [line, f"  # it installs with the constraints in {printable(layout.constraints)}"]
    return [line]


def _dag_reason(layout: Layout) -> str:
    if layout.dag_files == 0:
        return "no DAG files yet; Airflow reads this folder"
    where = "at the repository's root, as git-sync serves them" if layout.dag_folder == "." else "in this folder"
    files = "1 Python file" if layout.dag_files == 1 else f"{layout.dag_files} Python files"
    return f"{files} importing Airflow {where}"


def _plugins(layout: Layout) -> list[str]:
    if layout.plugins_folder is None:
        return ["    # plugins_folder: plugins   # none found; Airflow loads plugins from this folder once it exists"]
    return [f"    plugins_folder: {value(layout.plugins_folder)}   # loaded as Airflow's plugin manager loads it"]


def _teams(layout: Layout) -> list[str]:
    why = {
        None: "none found; add `name: [globs]`",
        "subfolders": "one per subfolder of the DAG folder holding DAGs",
    }.get(layout.teams_from, f"the owners of DAG files in {printable(layout.teams_from or '')}")
    lines = [f"    # Teams, named when their files break: {why}."]
    if not layout.teams:
        return [*lines, "    teams: {}"]
    lines.append("    teams:")
    lines += [f"      {value(team)}: {value(globs)}" for team, globs in layout.teams.items()]
    return lines


def _classification(layout: Layout) -> list[str]:
    """Only what differs from the defaults: how the diff sorts this layout's files into kinds."""
    found = layout.classification()
    if not found:
        return []
    lines = ["    # How changed files map to rollout modes, where this layout differs from the defaults:"]
    if "dags" in found and layout.dag_folder == ".":
        lines.append("    # DAGs sit at the root, so every file no other kind claims is a DAG-folder file.")
    lines.append("    classification:")
    lines += [f"      {kind}: {value(globs)}" for kind, globs in found.items()]
    return lines
