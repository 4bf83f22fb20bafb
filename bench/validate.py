"""DAG validation of a generated 1,000-file monorepo: full, against one plain Airflow DagBag, and incremental.

All run in the same Airflow runtime over the same folder, in one run of this script.
Like is compared with like:

- cold: a plain DagBag in a process of its own, start to end (`dagbag_seconds`), against
  the validate stage's first validation in this runtime with an empty cache, which also
  starts the runtime's warm parser (`cold_full_vs_dagbag`);
- warm, the headline (`full_vs_dagbag`): the DagBag's own collection, timed inside that
  process once Airflow is imported and warmed up as the warm parser is before a request
  (the same modules, the same first DAG; `dagbag_warm_seconds`), against the same
  validation again after a plugins change, which makes every cached result stale while
  the parser stays up (what a person waits for when the runtime stays: `full`).
  `warm_path_saves_seconds` is what the warm parser saves a full validation.

Each comparison is made in ROUNDS pairs, the two sides run back to back, and its figure is the
median of the pairs' ratios: this host's speed drifts by half from one minute to the next,
so one pair alone can say 0.75 or 1.4 of the same code.

Beside them: the DagBag's collection plus serializing every DAG as the DAG processor does
before storing it, which the validation does too (`dagbag_serialized_warm_seconds`);
one changed DAG file, which parses only that file (`incremental`); and the full validation
with the pipeline's `sandbox: off`, after a warm-up of its own parser, for the sandbox's
overhead. Timings are of one run on whatever else the machine runs.

    .venv/bin/python -m bench.validate [FILES]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from textwrap import dedent

from activities.runtime import ensure_runtime
from activities.validation import service as parser_service
from activities.validation.parse import parse_tree
from activities.validation.parser.run import WARM_DAG, WARM_MODULES
from airagent.config import EnvironmentSettings, LocalTarget, PipelineSettings, Runtime
from airagent.generated import generate

# A plain DagBag over the folder, timed from outside as it is (MODE cold); or its collection timed on its own once
# Airflow is warmed up as the warm parser is (see parser.run.warm_up), alone (warm) or with every DAG serialized as
# the DAG processor does (serialized).
DAGBAG = dedent("""\
    import sys, tempfile, time
    from pathlib import Path
    folder, mode, warm_modules, warm_dag = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(), sys.argv[4]
    sys.path.append(str(folder))
    from airflow.dag_processing.dagbag import DagBag
    if mode != "cold":
        for module in warm_modules:
            __import__(module)
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "warm_up.py").write_text(warm_dag)
            DagBag(dag_folder=scratch, safe_mode=False, bundle_path=Path(scratch))
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(folder), safe_mode=False, bundle_path=folder)
    if mode == "serialized":
        from airflow.serialization.serialized_objects import DagSerialization
        for dag in bag.dags.values():
            DagSerialization.to_dict(dag)
    print(len(bag.dags), len(bag.import_errors), time.perf_counter() - started)
    """)


def timed(args: list, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


ROUNDS = 3


def main(files: int) -> None:
    _, runtime = ensure_runtime(Runtime(), None)
    python = runtime / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="airagent-validate-") as scratch:
        root = Path(scratch) / "repo"
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
        dagbag = [python, "-c", DAGBAG, dags]
        warm = [" ".join(WARM_MODULES), WARM_DAG]
        (root / "plugins").mkdir()
        cold_pairs, warm_pairs = [], []
        try:
            for round in range(ROUNDS):
                # An empty validation cache and no parser yet: what the first validation in a runtime finds.
                parser_service.stop()
                os.environ["AIRAGENT_HOME"] = str(Path(scratch) / f"airagent-{round}")
                dagbag_seconds, out = timed([*dagbag, "cold", *warm], env)
                started = time.perf_counter()
                cold = parse_tree(runtime, root, "dags", "plugins")
                cold_pairs.append((dagbag_seconds, time.perf_counter() - started))
            dagbag_dags, dagbag_errors, _ = out.split()
            for round in range(ROUNDS):
                dagbag_warm_seconds = float(timed([*dagbag, "warm", *warm], env)[1].split()[2])
                # Every cached result goes stale, as on any plugins change; the runtime's parser stays up.
                (root / "plugins" / "macros.py").write_text(
                    f"def ds_nodash(ds):\n    return ds.replace('-', '{round}')\n"
                )
                started = time.perf_counter()
                full = parse_tree(runtime, root, "dags", "plugins")
                warm_pairs.append((dagbag_warm_seconds, time.perf_counter() - started))
            dagbag_serialized_warm_seconds = float(timed([*dagbag, "serialized", *warm], env)[1].split()[2])

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
    assert (full_dags, len(full.broken)) == (int(dagbag_dags), int(dagbag_errors)), (full_dags, dagbag_dags)
    assert cold.parsed == full.parsed == len(full.files) == len(cold.files), (cold.parsed, full.parsed)
    assert incremental.parsed == 1 and len(incremental.files) == len(full.files), incremental.parsed
    assert unsandboxed.parsed == full.parsed, unsandboxed.parsed
    dagbag_seconds, cold_full_seconds = (median(side) for side in zip(*cold_pairs, strict=True))
    dagbag_warm_seconds, full_seconds = (median(side) for side in zip(*warm_pairs, strict=True))
    print(f"files: {files} count", file=sys.stderr)
    print(f"dags: {full_dags} count")
    print(f"dagbag_seconds: {dagbag_seconds:.2f} s")
    print(f"cold_full_seconds: {cold_full_seconds:.2f} s")
    print(f"cold_full_vs_dagbag_each: {' '.join(f'{ours / theirs:.2f}' for theirs, ours in cold_pairs)} ratio")
    print(f"cold_full_vs_dagbag: {median(ours / theirs for theirs, ours in cold_pairs):.2f} ratio")
    print(f"dagbag_warm_seconds: {dagbag_warm_seconds:.2f} s")
    print(f"dagbag_serialized_warm_seconds: {dagbag_serialized_warm_seconds:.2f} s")
    print(f"full_seconds: {full_seconds:.2f} s")
    print(f"warm_path_saves_seconds: {cold_full_seconds - full_seconds:.2f} s")
    print(f"incremental_seconds: {incremental_seconds:.3f} s")
    print(f"incremental_vs_full: {incremental_seconds / full_seconds:.3f} ratio")
    print(f"full_unsandboxed_seconds: {unsandboxed_seconds:.2f} s")
    print(f"sandboxed_vs_unsandboxed: {full_seconds / unsandboxed_seconds:.3f} ratio")
    print(f"full_vs_dagbag_each: {' '.join(f'{ours / theirs:.2f}' for theirs, ours in warm_pairs)} ratio")
    print(f"full_vs_dagbag: {median(ours / theirs for theirs, ours in warm_pairs):.2f} ratio")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
