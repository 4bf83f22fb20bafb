"""What the `validate` stage checks beyond "it parses": placeholders, parse budgets, policies."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from airagent.config.base import Duration, Model

# --- validation: what the validate stage checks beyond "it parses" ---------------------


class Placeholders(Model):
    """What DAG files get when they look up Variables, Connections or environment variables at parse time.

    The validator has no metadata database and no secrets, so without placeholders a file
    that reads a Variable at top level fails to parse here while it works in production.
    """

    enabled: bool = Field(
        True,
        description="give made-up values to lookups not listed below; off: such a lookup "
        "fails the file, naming what to add",
    )
    variables: dict[str, Any] = Field({}, description="Variable key -> value (JSON text for deserialize_json)")
    connections: dict[str, str | dict[str, Any]] = Field(
        {}, description="conn_id -> URI, or fields such as {conn_type: postgres, host: db}"
    )
    env: dict[str, str] = Field({}, description="environment variable -> value, for os.getenv in DAG files")


class ParseTime(Model):
    """Seconds one file may take to parse: over `warn` it is reported, over `fail` it fails the train."""

    warn: Duration | None = None
    fail: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ParseTime:
        if self.warn is not None and self.fail is not None and self.warn >= self.fail:
            raise ValueError(
                f"warn ({self.warn.total_seconds():g}s) must be below fail ({self.fail.total_seconds():g}s)"
            )
        return self


class Policies(Model):
    """Rules every DAG must follow; each is off until set, and each failure names the rule."""

    require_owner: bool = Field(False, description="every task has an owner other than Airflow's default 'airflow'")
    allowed_owners: list[str] | None = Field(None, description="every task's owner is one of these")
    require_tags: bool = Field(False, description="every DAG has at least one tag")
    required_tags: list[str] = Field([], description="every DAG carries all of these tags")
    min_retries: int | None = Field(None, ge=0, description="every task retries at least this many times")
    allowed_schedules: list[str | None] | None = Field(
        None,
        description="schedules DAGs may use, as written: '@daily', a cron line, null for none; "
        "'assets' for asset-triggered, 'every 1:00:00' for a timedelta",
    )
    forbidden_imports: list[str] = Field(
        [], description="modules DAG files must not import (a name covers its submodules), e.g. pandas"
    )


class Limits(Model):
    """What one parse worker, and whatever a DAG file starts from it, may take; past one, that file fails alone."""

    memory_mib: int = Field(4096, gt=0, description="address space per parse worker, MiB")
    processes: int = Field(256, gt=0, description="processes the sandbox's user may run at once")
    cpu: int = Field(900, gt=0, description="CPU seconds per parse worker, across the files it parses")
    written_file_mib: int = Field(64, gt=0, description="largest file a DAG file may write (in its scratch), MiB")
    max_file_mib: int = Field(10, gt=0, description="Python files in the DAG folder larger than this are not parsed")

    def for_parser(self) -> dict[str, int]:
        mib = 1 << 20
        return {
            "memory_bytes": self.memory_mib * mib,
            "processes": self.processes,
            "cpu_seconds": self.cpu,
            "written_file_bytes": self.written_file_mib * mib,
            "max_file_bytes": self.max_file_mib * mib,
        }


class ValidationSettings(Model):
    placeholders: Placeholders = Placeholders()
    limits: Limits = Limits()
    parse_time: ParseTime = ParseTime()
    policies: Policies = Policies()
    allow_dag_removal: list[str] = Field(
        [],
        description="dag_ids that may disappear from the live release without an "
        "'Airagent-Allow-Dag-Removal: <dag_id>' commit trailer",
    )
    test_connections: str = Field(
        "tests/connections.yaml",
        description="`airagent test`: Airflow connections for test runs (a yaml, json or env file Airflow's "
        "local filesystem secrets backend reads), from the repository's root; used when present",
    )
    test_variables: str = Field(
        "tests/variables.yaml",
        description="`airagent test`: Airflow variables for test runs, as test_connections; used when present",
    )
    tests_network: bool = Field(
        False,
        description="`airagent test`: let test runs reach the network; off, a task that calls out fails as it "
        "would with no route",
    )
