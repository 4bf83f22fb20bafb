"""The validation rules on their own, over facts as the parser reports them: no Airflow needed."""

from __future__ import annotations

from textwrap import dedent

import pytest

from activities.validation import policies
from airagent.config import ConfigError, ValidationSettings, load
from airagent.models import DagFacts, FileReport


def rules(**policy) -> ValidationSettings:
    return ValidationSettings.model_validate({"policies": policy})


def file(*dags: DagFacts, imports=(), seconds=0.1, same_file=()) -> FileReport:
    return FileReport(
        path="dags/x.py",
        dag_ids=[d.dag_id for d in dags],
        dags=list(dags),
        imports=list(imports),
        parse_seconds=seconds,
        same_file_duplicates=list(same_file),
    )


TIDY = DagFacts(dag_id="tidy", owners=["data"], tags=["tier-1"], schedule="@daily", retries={"a": 2})
SLOPPY = DagFacts(dag_id="sloppy", owners=["airflow", "bob"], tags=[], schedule="*/5 * * * *", retries={"a": 0, "b": 3})


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"require_owner": True}, "DAG 'sloppy' has tasks without an owner"),
        ({"allowed_owners": ["data"]}, "DAG 'sloppy' has owner 'airflow', not one of ['data']"),
        ({"require_tags": True}, "DAG 'sloppy' has no tags"),
        ({"required_tags": ["tier-1"]}, "DAG 'sloppy' lacks the tags ['tier-1']"),
        ({"min_retries": 1}, "task 'a' of DAG 'sloppy' retries 0 times, fewer than 1"),
        ({"allowed_schedules": ["@daily", None]}, "DAG 'sloppy' has schedule '*/5 * * * *'"),
    ],
)
def test_each_policy_fails_only_the_dag_that_breaks_it_and_names_itself(policy, expected):
    rule = next(iter(policy))
    checked = policies.check(file(TIDY, SLOPPY), rules(**policy))
    assert {p.dag_id for p in checked.problems} == {"sloppy"}
    assert expected in checked.problems[0].message
    assert checked.problems[0].message.endswith(f"(validation.policies.{rule})")
    assert policies.check(file(TIDY, SLOPPY), ValidationSettings()).problems == []  # all off by default


def test_forbidden_imports_cover_submodules_once_per_rule():
    checked = policies.check(
        file(TIDY, imports=["pandas", "pandas.io.sql", "pandasql", "json"]), rules(forbidden_imports=["pandas"])
    )
    assert [p.message for p in checked.problems] == [
        "the file imports 'pandas', which is forbidden; remove the import (validation.policies.forbidden_imports)"
    ]


def test_parse_time_budget_warns_then_fails_and_same_file_duplicates_fail():
    budget = ValidationSettings.model_validate({"parse_time": {"warn": "2s", "fail": "10s"}})
    assert policies.check(file(TIDY, seconds=1), budget).warnings == []
    slow = policies.check(file(TIDY, seconds=3), budget)
    assert not slow.failed and "over validation.parse_time.warn (2s)" in slow.warnings[0]
    too_slow = policies.check(file(TIDY, seconds=11), budget)
    assert [p.rule for p in too_slow.problems] == ["parse_time"]
    twice = policies.check(file(TIDY, same_file=["tidy"]), ValidationSettings())
    assert [(p.rule, p.dag_id) for p in twice.problems] == [("duplicate_dag_id", "tidy")]


def test_removal_needs_a_trailer_or_the_config():
    live = {"a": "dags/a.py", "b": "dags/b.py", "c": "dags/c.py"}
    consent = policies.consented([("Airagent-Allow-Dag-Removal", " b"), ("Signed-off-by", "c")], ["c"])
    assert consent == {"b", "c"}
    assert policies.removed_dags(live, current={"a"}, consent=consent) == {}
    assert policies.removed_dags(live, current={"a"}, consent=set()) == {"b": "dags/b.py", "c": "dags/c.py"}


def test_a_mistake_in_the_validation_section_names_file_line_and_field(tmp_path):
    path = tmp_path / "airagent.yaml"
    path.write_text(
        dedent("""\
        pipelines:
          main:
            environments: [{name: staging, target: {type: local, path: envs/staging}}]
            validation:
              parse_time: {warn: 30s, fail: 5s}
              policies:
                min_retrys: 1
        """)
    )
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert f"{path}:5: pipelines.main.validation.parse_time: Value error, warn (30s) must be below fail" in message
    assert f"{path}:7: pipelines.main.validation.policies.min_retrys: Extra inputs are not permitted" in message
