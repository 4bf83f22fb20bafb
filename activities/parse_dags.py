"""Parse every Python file of a DAG folder with Airflow's own DagBag; print a JSON report.

Runs as a script by a release runtime's interpreter, never imported by the deployer:
it may import only the standard library and Airflow.

    python parse_dags.py DAG_FOLDER REPORT_JSON

Safe mode is off and every `.py` file is parsed, so a broken file cannot hide by
lacking the words "airflow" and "dag".
"""

import json
import os
import sys
import time
import traceback
from pathlib import Path

MAX_TRACEBACK_LINES = 30


def python_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*.py")
        if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def trim(text: str) -> str:
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-MAX_TRACEBACK_LINES:])


def main(folder: Path, out: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    # As Airflow's DAG processor does for a bundle: modules beside the DAGs are importable.
    sys.path.append(str(folder))
    files, owners = [], {}
    for path in python_files(folder):
        rel = path.relative_to(folder).as_posix()
        started = time.perf_counter()
        # A bag per file, as Airflow's DAG processor does, so duplicates are ours to report.
        bag = DagBag(dag_folder=str(folder), collect_dags=False, bundle_path=folder, safe_mode=False)
        try:
            dags = bag.process_file(str(path), only_if_updated=False, safe_mode=False)
            error = bag.import_errors.get(rel) or bag.import_errors.get(str(path))
        except Exception:
            dags, error = [], traceback.format_exc()
        dag_ids = sorted(d.dag_id for d in dags)
        for dag_id in dag_ids:
            owners.setdefault(dag_id, []).append(rel)
        files.append({
            "path": rel,
            "dag_ids": dag_ids,
            "error": trim(error) if error else None,
            "parse_seconds": round(time.perf_counter() - started, 4),
        })
    duplicates = {dag_id: paths for dag_id, paths in owners.items() if len(paths) > 1}
    out.write_text(json.dumps({"files": files, "duplicates": duplicates}))


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
