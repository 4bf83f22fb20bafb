"""Parse Python files of a DAG folder with Airflow's own DagBag: the validator that runs inside a release runtime.

It runs in any Airflow runtime (the worker's warm parser, in the sandbox, and a validator
pod), so it may import only the standard library and Airflow; it ships as one zipapp
(see `activities.validation.parser_app`) that the runtime's interpreter runs:

    python parser.pyz DAG_FOLDER REPORT_JSON [WORKERS] [TIMEOUT_SECONDS] [--settings SETTINGS_JSON]
    (REPORT_JSON `-`: one line `airagent-report: {...}` on stdout)
    python parser.pyz --serve DIRECTORY [--idle SECONDS]

The deployer imports `paths` and `report` too, which are plain standard library, so both
sides agree on what a DAG file is and how a report reads. One concern a module:

- `paths`: which files are DAG files; `report`: what a file's report says when it failed;
- `lookups`: what a DAG file sees at parse time (placeholders, no network, no database);
- `facts`: what the policies need of each DAG; `dagbag`: one file through a DagBag;
- `schema`, `timetables`: what serializing every DAG repeats, done once per process (the schema
  compiled into checks that only ever accept, cron descriptions kept per expression);
- `pool`: workers forked to parse files side by side, a file that hangs or dies failing alone;
- `run`: the warm-up and a cold run over a folder; `serve`: the warm parser; `cli`: the command line.

Safe mode is off and every `.py` file is parsed, so a broken file cannot hide by lacking
the words "airflow" and "dag".
"""
