"""The command line: `python parser.pyz DAG_FOLDER REPORT_JSON ...` runs once, `--serve DIRECTORY` stays warm.

SETTINGS_JSON (written by the deployer, never pasted into a command line) may hold `files`:
the paths, relative to DAG_FOLDER, to parse (default: every file), `placeholders`: {"enabled",
"variables", "connections", "env"} for what DAG files look up at parse time, and `limits`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")  # before anything imports Airflow
    from .run import cold
    from .serve import serve

    cli = argparse.ArgumentParser(description="Parse DAG files with Airflow's DagBag; write a JSON report.")
    cli.add_argument("folder", type=Path, nargs="?")
    cli.add_argument("out", type=Path, nargs="?")
    cli.add_argument("workers", type=int, nargs="?", default=os.cpu_count() or 1)
    cli.add_argument("timeout", type=float, nargs="?", default=None)
    cli.add_argument("--settings", type=Path, help="JSON file: files to parse, placeholders")
    cli.add_argument("--serve", type=Path, metavar="DIRECTORY", help="answer requests on DIRECTORY/socket instead")
    cli.add_argument("--idle", type=float, default=600.0, help="seconds without a request before --serve ends")
    args = cli.parse_args()
    if args.serve:
        serve(args.serve, args.idle)
    elif args.folder and args.out:
        cold(
            args.folder.resolve(),
            args.out,
            args.workers,
            args.timeout,
            json.loads(args.settings.read_text()) if args.settings else {},
        )
    else:
        cli.error("give FOLDER and OUT, or --serve DIRECTORY")
