"""The diff stage on real git repositories: which files changed, what kind they are, what that needs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.build import build
from activities.diff import changed_files, classify, diff
from activities.holdback import release_commit
from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import Classification
from airagent.models import BuildInput, DiffInput, HeldCommit, Kind, Release, RolloutMode
from airagent.repo import RepoError, resolve

RULES = Classification()


def changes(repo, live: str | None, target: str, rules: Classification = RULES) -> dict[str, tuple]:
    """path -> (kind, change, old_path), for comparing whole change sets at a glance."""
    return {f.path: (f.kind, f.change, f.old_path) for f in changed_files(repo, live, target, rules)}


def deploy(pipeline, env: str, sha: str) -> Release:
    """Build the commit and roll it into one environment, as a finished train would have."""
    release = build(BuildInput(pipeline=pipeline, target=sha))
    LocalEnvironment(pipeline.environment(env).target.path).roll(release)
    return release


def commit_bytes(repo, path: str, data: bytes, message: str) -> str:
    (Path(repo.working_tree_dir) / path).parent.mkdir(parents=True, exist_ok=True)
    (Path(repo.working_tree_dir) / path).write_bytes(data)
    repo.index.add([path])
    return repo.index.commit(message).hexsha


# --- classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("dags/finance/ledger_daily.py", Kind.dags),
        ("dags/README.md", Kind.ignored),  # ignored is checked first
        ("plugins/operators/s3.py", Kind.plugins),
        ("config/airflow.cfg", Kind.config),
        ("airflow_local_settings.py", Kind.config),
        ("requirements.txt", Kind.dependencies),
        ("requirements-dev.txt", Kind.dependencies),
        ("Dockerfile", Kind.image),
        ("image/entrypoint.sh", Kind.image),
        ("docs/guide/setup.txt", Kind.ignored),
        ("tests/test_dags.py", Kind.ignored),
        ("airagent.yaml", Kind.ignored),
        ("setup.cfg", Kind.config),  # outside every glob: `unmatched`
        ("src/shared/lib.py", Kind.config),
    ],
)
def test_classify_default_rules(path, kind):
    assert classify(path, RULES) == kind


def test_unmatched_kind_is_configurable():
    rules = Classification(unmatched="dags")
    assert classify("src/shared/lib.py", rules) == Kind.dags
    assert classify("plugins/x.py", rules) == Kind.plugins


@pytest.mark.parametrize(
    ("kinds", "mode"),
    [
        ({Kind.dags}, RolloutMode.dags_only),
        ({Kind.ignored}, RolloutMode.dags_only),
        ({Kind.dags, Kind.ignored}, RolloutMode.dags_only),
        ({Kind.plugins}, RolloutMode.restart),
        ({Kind.dags, Kind.config}, RolloutMode.restart),
        ({Kind.dependencies}, RolloutMode.rebuild),
        ({Kind.image, Kind.plugins, Kind.dags}, RolloutMode.rebuild),
    ],
)
def test_rollout_mode_for_kinds(kinds, mode):
    assert RolloutMode.for_kinds(kinds) == mode


# --- changed files ---------------------------------------------------------------------


def test_added_modified_deleted(monorepo):
    base = monorepo.head.commit.hexsha
    head = example.commit(
        monorepo,
        {
            "dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5),
            "dags/finance/tax.py": example.dag_file("tax"),
            "README.md": None,
        },
        "finance: tax DAG",
    )
    assert changes(monorepo, base, head) == {
        "README.md": (Kind.ignored, "deleted", None),
        "dags/finance/fx_rates.py": (Kind.dags, "modified", None),
        "dags/finance/tax.py": (Kind.dags, "added", None),
    }


def test_rename_within_a_kind_is_one_entry(monorepo):
    base = monorepo.head.commit.hexsha
    head = example.commit(
        monorepo,
        {
            "dags/finance/fx_rates.py": None,
            "dags/finance/fx.py": example.FILES["dags/finance/fx_rates.py"],
        },
        "finance: shorter name",
    )
    assert changes(monorepo, base, head) == {"dags/finance/fx.py": (Kind.dags, "renamed", "dags/finance/fx_rates.py")}


def test_rename_between_kinds_counts_both(monorepo):
    """Moving a plugin into dags/ changes the plugins too: the mode must restart."""
    base = monorepo.head.commit.hexsha
    head = example.commit(
        monorepo,
        {
            "plugins/example_plugin.py": None,
            "dags/example_plugin.py": example.FILES["plugins/example_plugin.py"],
        },
        "platform: move the plugin",
    )
    assert changes(monorepo, base, head) == {
        "dags/example_plugin.py": (Kind.dags, "renamed", "plugins/example_plugin.py"),
        "plugins/example_plugin.py": (Kind.plugins, "deleted", None),
    }
    kinds = {f.kind for f in changed_files(monorepo, base, head, RULES)}
    assert RolloutMode.for_kinds(kinds) == RolloutMode.restart


def test_binary_file(monorepo):
    base = monorepo.head.commit.hexsha
    added = commit_bytes(monorepo, "dags/finance/rates.parquet", bytes(range(256)) * 8, "add binary")
    changed = commit_bytes(monorepo, "dags/finance/rates.parquet", bytes(reversed(range(256))) * 8, "edit binary")
    assert changes(monorepo, base, added) == {"dags/finance/rates.parquet": (Kind.dags, "added", None)}
    assert changes(monorepo, added, changed) == {"dags/finance/rates.parquet": (Kind.dags, "modified", None)}


def test_file_outside_every_glob_gets_unmatched(monorepo):
    base = monorepo.head.commit.hexsha
    head = example.commit(monorepo, {"src/shared/lib.py": "X = 1\n", "dags/finance/x.py": "y = 2\n"}, "shared lib")
    found = changes(monorepo, base, head)
    assert found["src/shared/lib.py"] == (Kind.config, "added", None)
    assert RolloutMode.for_kinds({kind for kind, _, _ in found.values()}) == RolloutMode.restart
    relaxed = changes(monorepo, base, head, Classification(unmatched="dags"))
    assert RolloutMode.for_kinds({kind for kind, _, _ in relaxed.values()}) == RolloutMode.dags_only


def test_first_deploy_lists_every_file_as_added(monorepo):
    head = monorepo.head.commit.hexsha
    found = changes(monorepo, None, head)
    assert set(found) == set(monorepo.git.ls_files().splitlines())
    assert {change for _, change, _ in found.values()} == {"added"}
    assert found["requirements.txt"][0] == Kind.dependencies


# --- the diff activity -----------------------------------------------------------------


def test_first_deploy_carries_everything_and_all_commits(monorepo, pipeline):
    head = monorepo.head.commit.hexsha
    result = diff(DiffInput(pipeline=pipeline, target=head[:10]))
    assert result.target == head
    assert not result.empty
    for env in result.environments:
        assert env.live_commit is None and env.live_release is None
        assert {f.path for f in env.files} == set(monorepo.git.ls_files().splitlines())
        assert env.mode == RolloutMode.rebuild  # requirements.txt is in it
    assert [(c.summary, c.author, c.email) for c in result.commits] == [
        ("marketing: orders and campaigns DAGs", "Ada Lovelace", "ada@example.com"),
        ("finance: ledger and fx DAGs", "Grace Hopper", "grace@example.com"),
        ("platform: runtime, plugins and airagent config", "Linus Ops", "linus@example.com"),
    ]
    assert result.commits[0].sha == head
    assert all(c.at.utcoffset() == timedelta(0) for c in result.commits)


def test_environments_on_different_commits_get_their_own_diff(monorepo, pipeline):
    """Prod lags staging: each gets the files it lacks, the commits are those prod lacks."""
    first = monorepo.head.commit.hexsha
    prod = deploy(pipeline, "prod", first)
    fx = example.commit(
        monorepo,
        {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)},
        "finance: more fx steps",
        "finance",
    )
    staging = deploy(pipeline, "staging", fx)
    plugin = example.commit(monorepo, {"plugins/audit.py": "AUDIT = True\n"}, "platform: audit plugin", "platform")

    result = diff(DiffInput(pipeline=pipeline, target=plugin))
    on_staging, on_prod = result.for_environment("staging"), result.for_environment("prod")
    assert (on_staging.live_commit, on_staging.live_release) == (fx, staging.id)
    assert (on_prod.live_commit, on_prod.live_release) == (first, prod.id)
    assert [f.path for f in on_staging.files] == ["plugins/audit.py"]
    assert [f.path for f in on_prod.files] == ["dags/finance/fx_rates.py", "plugins/audit.py"]
    assert on_staging.mode == on_prod.mode == RolloutMode.restart
    assert [(c.summary, c.author) for c in result.commits] == [
        ("platform: audit plugin", "Linus Ops"),
        ("finance: more fx steps", "Grace Hopper"),
    ]

    # Staging already runs fx: it needs nothing, prod needs the DAG change only.
    result = diff(DiffInput(pipeline=pipeline, target=fx))
    assert result.for_environment("staging").mode is None and result.for_environment("staging").files == []
    assert result.for_environment("prod").mode == RolloutMode.dags_only
    assert [c.sha for c in result.commits] == [fx]


def test_every_environment_on_target_is_empty(monorepo, pipeline):
    head = monorepo.head.commit.hexsha
    deploy(pipeline, "staging", head)
    deploy(pipeline, "prod", head)
    result = diff(DiffInput(pipeline=pipeline, target=head))
    assert result.empty and result.commits == []


def test_a_change_to_ignored_files_only_rolls_nothing(monorepo, pipeline):
    """A README needs no release: the environments keep their live commit, and the next real change brings it."""
    head = monorepo.head.commit.hexsha
    deploy(pipeline, "staging", head)
    deploy(pipeline, "prod", head)
    docs = example.commit(monorepo, {"README.md": "# Monorepo\n", "docs/setup.md": "Read me.\n"}, "docs", "platform")

    result = diff(DiffInput(pipeline=pipeline, target=docs))
    assert result.empty and result.commits == []
    on_prod = result.for_environment("prod")
    assert on_prod.live_commit == head and on_prod.kinds == [Kind.ignored]
    assert [f.path for f in on_prod.files] == ["README.md", "docs/setup.md"]

    fx = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)}, "fx", "finance")
    result = diff(DiffInput(pipeline=pipeline, target=fx))
    on_prod = result.for_environment("prod")
    assert on_prod.mode == RolloutMode.dags_only
    assert [f.path for f in on_prod.files] == ["README.md", "dags/finance/fx_rates.py", "docs/setup.md"]
    assert [c.sha for c in result.commits] == [fx, docs]


def test_rewritten_history_needs_allow_history_rewrite(monorepo, pipeline):
    first = monorepo.head.commit.hexsha
    lost = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)}, "lost")
    deploy(pipeline, "staging", lost)
    monorepo.git.reset("--hard", first)  # a force-push drops `lost`
    head = example.commit(monorepo, {"dags/finance/tax.py": example.dag_file("tax")}, "finance: tax DAG")

    with pytest.raises(ApplicationError) as err:
        diff(DiffInput(pipeline=pipeline, target=head))
    assert err.value.non_retryable and err.value.type == "HistoryRewritten"
    assert "staging" in str(err.value) and lost[:12] in str(err.value)
    assert "allow_history_rewrite" in str(err.value)

    allowed = pipeline.model_copy(update={"allow_history_rewrite": True})
    staging = diff(DiffInput(pipeline=allowed, target=head)).for_environment("staging")
    assert {f.path for f in staging.files} == {"dags/finance/fx_rates.py", "dags/finance/tax.py"}
    assert staging.mode == RolloutMode.dags_only


def test_live_commit_gone_from_the_repository(monorepo, pipeline):
    """Once the rewritten-away commit is garbage collected, allowing the rewrite means a full deploy."""
    first = monorepo.head.commit.hexsha
    lost = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=5)}, "lost")
    deploy(pipeline, "prod", lost)
    monorepo.git.reset("--hard", first)
    monorepo.git.reflog("expire", "--expire=now", "--all")
    monorepo.git.gc("--prune=now", "--quiet")

    with pytest.raises(ApplicationError, match="no longer in the repository.*allow_history_rewrite") as err:
        diff(DiffInput(pipeline=pipeline, target=first))
    assert err.value.non_retryable

    allowed = pipeline.model_copy(update={"allow_history_rewrite": True})
    prod = diff(DiffInput(pipeline=allowed, target=first)).for_environment("prod")
    assert prod.live_commit == lost
    assert {f.path for f in prod.files} == set(monorepo.git.ls_files().splitlines())
    assert prod.mode == RolloutMode.rebuild


def test_target_older_than_live_is_already_carried(monorepo, pipeline):
    """An earlier commit than what runs (a CI job for an earlier push, arriving late) is already live in the later
    one: nothing to roll, nothing refused. Going back to it is a rollback, or needs allow_history_rewrite."""
    old = monorepo.head.commit.parents[0].hexsha
    deploy(pipeline, "staging", monorepo.head.commit.hexsha)
    deploy(pipeline, "prod", monorepo.head.commit.hexsha)
    result = diff(DiffInput(pipeline=pipeline, target=old))
    assert result.empty and result.commits == []

    back = diff(DiffInput(pipeline=pipeline.model_copy(update={"allow_history_rewrite": True}), target=old))
    assert all(e.mode is not None for e in back.environments)


def test_a_release_does_not_carry_a_commit_it_holds_back(monorepo, pipeline):
    """A release made without a held commit carries the commits before it, not the held one: deploying that is
    going back, and refused as such."""
    before = monorepo.head.commit.hexsha
    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")
    good = example.commit(monorepo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx")
    held = HeldCommit(sha=broken, author="Ada", summary="v2", paths=[example.BROKEN_PATH], reason="no import")
    made = release_commit(monorepo, pipeline, good, before, [held])
    for env in ("staging", "prod"):
        deploy(pipeline, env, made)

    assert diff(DiffInput(pipeline=pipeline, target=before)).empty
    with pytest.raises(ApplicationError, match="not an ancestor.*older than what is live"):
        diff(DiffInput(pipeline=pipeline, target=broken))


@pytest.mark.parametrize("sha", ["deadbeef", "a" * 40])
def test_sha_not_in_repo(monorepo, pipeline, sha):
    with pytest.raises(RepoError, match=f"commit {sha} is not in"):
        resolve(monorepo, pipeline, sha)
    with pytest.raises(ApplicationError, match=sha) as err:
        diff(DiffInput(pipeline=pipeline, target=sha))
    assert err.value.non_retryable and err.value.type == "BadInput"


def test_null_sha_is_not_in_repo(monorepo, pipeline):
    """CI sends 0000… as the `after` of a deleted branch; it must be a clear BadInput, not a retried crash."""
    with pytest.raises(RepoError, match="0{40}"):
        resolve(monorepo, pipeline, "0" * 40)


@pytest.mark.parametrize("sha", ["HEAD~1", "--output=/tmp/x", "main"])
def test_target_that_is_not_a_sha_is_refused(monorepo, pipeline, sha):
    with pytest.raises(RepoError, match="is not a commit sha"):
        resolve(monorepo, pipeline, sha)


def test_resolve_defaults_to_the_branch_head(monorepo, pipeline):
    assert resolve(monorepo, pipeline) == monorepo.head.commit.hexsha
    with pytest.raises(RepoError, match="branch 'release' not found.*fix `branch`"):
        resolve(monorepo, pipeline.model_copy(update={"branch": "release"}))
