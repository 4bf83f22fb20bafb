"""DAG validation of a generated 1,000-file monorepo: full, against one plain Airflow DagBag, and incremental.

All run in the same Airflow runtime over the same folder, in one run of this script:
a plain DagBag in a process of its own; the validate stage's first validation in this
runtime with an empty cache (it also starts the runtime's warm parser: `cold_full`);
after a plugins change, which makes every DAG file's cached result stale, the same
validation again (what a person waits for when the runtime stays: `full`); then, after
one DAG file changes, the same validation again, which parses only that file. Last, the
full validation once more with the pipeline's `sandbox: off`, after a warm-up of its own
parser, for the sandbox's overhead.

    .venv/bin/python -m bench.validate [FILES]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from textwrap import dedent

from activities.runtime import ensure_runtime
from activities.validation import service as parser_service
from activities.validation.parse import parse_tree
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings, Runtime
from airagent.generated import generate

DAGBAG = dedent("""\
    import sys
    from pathlib import Path
    folder = Path(sys.argv[1])
    sys.path.append(str(folder))
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=str(folder), safe_mode=False, bundle_path=folder)
    print(len(bag.dags), len(bag.import_errors))
    """)


def timed(args: list, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def main(files: int) -> None:
    _, runtime = ensure_runtime(Runtime(), None)
    python = runtime / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="airagent-validate-") as scratch:
        root = Path(scratch) / "repo"
        os.environ["AIRAGENT_HOME"] = str(Path(scratch) / "airagent")  # an empty validation cache, dropped after
        dags = generate(root, files)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": scratch,
            "AIRFLOW_HOME": str(Path(scratch) / "home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        }
        timed([python, "-c", "import airflow.dag_processing.dagbag"], env)  # warm the runtime's bytecode cache
        dagbag_seconds, out = timed([python, "-c", DAGBAG, dags], env)
        dagbag_dags, dagbag_errors = map(int, out.split())

        try:
            started = time.perf_counter()
            cold = parse_tree(runtime, root, "dags", "plugins")
            cold_full_seconds = time.perf_counter() - started

            # Every cached result goes stale, as on any plugins change; the runtime's parser stays up.
            (root / "plugins").mkdir()
            (root / "plugins" / "macros.py").write_text("def ds_nodash(ds):\n    return ds.replace('-', '')\n")
            started = time.perf_counter()
            full = parse_tree(runtime, root, "dags", "plugins")
            full_seconds = time.perf_counter() - started

            changed = next(dags.glob("team_07/*.py"))
            changed.write_text(changed.read_text().replace("steps=", "steps=1 + "))
            started = time.perf_counter()
            incremental = parse_tree(runtime, root, "dags", "plugins")
            incremental_seconds = time.perf_counter() - started

            off = PipelineSettings(
                name="bench",
                sandbox=False,
                environments=[EnvironmentSettings(name="e", target=LocalTarget(path=Path(scratch) / "env"))],
            )
            parse_tree(runtime, root, "dags", "plugins", off)  # starts the unsandboxed parser
            (root / "plugins" / "macros.py").write_text("def ds_nodash(ds):\n    return ds.replace('-', '_')\n")
            started = time.perf_counter()
            unsandboxed = parse_tree(runtime, root, "dags", "plugins", off)
            unsandboxed_seconds = time.perf_counter() - started
        finally:
            parser_service.stop()
    full_dags = sum(len(f.dag_ids) for f in full.files)
    assert (full_dags, len(full.broken)) == (dagbag_dags, dagbag_errors), (full_dags, dagbag_dags)
    assert cold.parsed == full.parsed == len(full.files) == len(cold.files), (cold.parsed, full.parsed)
    assert incremental.parsed == 1 and len(incremental.files) == len(full.files), incremental.parsed
    assert unsandboxed.parsed == full.parsed, unsandboxed.parsed
    print(f"files: {files} count", file=sys.stderr)
    print(f"dags: {full_dags} count")
    print(f"dagbag_seconds: {dagbag_seconds:.2f} s")
    print(f"cold_full_seconds: {cold_full_seconds:.2f} s")
    print(f"cold_full_vs_dagbag: {cold_full_seconds / dagbag_seconds:.2f} ratio")
    print(f"full_seconds: {full_seconds:.2f} s")
    print(f"incremental_seconds: {incremental_seconds:.3f} s")
    print(f"incremental_vs_full: {incremental_seconds / full_seconds:.3f} ratio")
    print(f"full_unsandboxed_seconds: {unsandboxed_seconds:.2f} s")
    print(f"sandboxed_vs_unsandboxed: {full_seconds / unsandboxed_seconds:.3f} ratio")
    print(f"full_vs_dagbag: {full_seconds / dagbag_seconds:.2f} ratio")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
