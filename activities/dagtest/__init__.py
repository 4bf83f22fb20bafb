"""`airagent test` as a library: each DAG run once, as `DAG.test()` does, in the release runtime and the sandbox.

`runner` runs inside the runtime (the standard library and Airflow only, shipped by path),
`run` starts one DAG's run and reads what it wrote, `tree` makes a working tree or a
commit a release and picks the DAGs, `report` holds what was found.
"""
