"""Holding back culprit commits on real git: who is held, and the release commit without their changes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import git
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.diff import train_commits
from activities.holdback import hold_back, touched
from activities.runtime import ensure_runtime
from activities.validation import service as parser_service
from activities.validation.parse import parse_tree
from airagent import example
from airagent.config import PipelineSettings, Runtime
from airagent.models import HoldInput
from airagent.repo import open_repository, stands_for
from tests.conftest import make_pipeline

NAMING = "dags/common/naming.py"


def hold(repo, pipeline, live: str, failures: dict[str, str], bundle: str | None = None, regressions=()):
    target = repo.head.commit.hexsha
    commits = [c.sha for c in train_commits(repo, [live], target)]
    return hold_back(
        HoldInput(
            pipeline=pipeline,
            target=target,
            commits=commits,
            live_commit=live,
            bundle=bundle or repo.working_tree_dir,
            failures=failures,
            held=list(regressions),
        )
    )


def test_the_broken_commit_is_held_and_the_release_keeps_every_other_change(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs", teams={"marketing": ["dags/marketing/*"]})
    live = repo.head.commit.hexsha
    broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")
    good = example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")

    result = hold(repo, pipeline, live, {example.BROKEN_PATH: "ModuleNotFoundError: pandas_but_misspelled"})

    assert [(h.sha, h.teams, h.author) for h in result.held] == [
        (broken, ["marketing"], example.AUTHORS["marketing"][0])
    ]
    assert example.BROKEN_PATH in result.held[0].reason and "pandas_but_misspelled" in result.held[0].reason
    release = repo.commit(result.commit)
    assert list(release.parents) == [repo.commit(good)]
    assert (release.tree / example.BROKEN_PATH).data_stream.read() == (
        repo.commit(live).tree / example.BROKEN_PATH
    ).data_stream.read()
    assert (release.tree / "dags/finance/fx_rates.py").binsha == (
        repo.commit(good).tree / "dags/finance/fx_rates.py"
    ).binsha
    assert stands_for(repo, result.commit) == (good, [broken])
    assert repo.head.commit.hexsha == good and f"refs/airagent/releases/{result.commit}" in [r.path for r in repo.refs]


def test_a_broken_shared_module_holds_its_commit_and_a_commit_sharing_a_path_with_it(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    live = repo.head.commit.hexsha
    added = example.commit(repo, {"dags/finance/new_one.py": example.dag_file("new_one")}, "new DAG", "finance")
    breaks = example.commit(repo, {NAMING: "def task_name(:\n"}, "naming v2", "platform")
    same_file = example.commit(repo, {NAMING: "def task_name(:\n    pass\n"}, "naming v3", "platform")
    unrelated = example.commit(
        repo, {"dags/marketing/campaigns.py": example.dag_file("campaigns", tasks=5)}, "campaigns", "marketing"
    )

    # Every DAG importing the module fails; the commits that changed the module are the culprits.
    failing = {p: "SyntaxError" for p in ("dags/finance/fx_rates.py", "dags/finance/ledger_daily.py")}
    held = {h.sha: h.reason for h in hold(repo, pipeline, live, failing).held}

    assert set(held) == {breaks, same_file}
    assert added not in held and unrelated not in held


def test_a_failure_no_commit_of_the_train_touched_holds_nothing(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    live = repo.head.commit.hexsha
    example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")

    result = hold(repo, pipeline, live, {"dags/marketing/campaigns.py": "worked yesterday"})
    assert result.commit is None and result.held == []


def test_a_train_whose_every_commit_is_held_makes_no_release_commit(tmp_path):
    """Nothing is left to deploy, so nothing is committed or pushed: a remote the cluster clones from that is
    down does not turn a failed validate into retries of the hold."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    live = repo.head.commit.hexsha
    broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")

    result = hold(repo, pipeline, live, {example.BROKEN_PATH: "ModuleNotFoundError: pandas_but_misspelled"})

    assert [h.sha for h in result.held] == [broken] and result.commit is None
    assert not [r for r in repo.refs if r.path.startswith("refs/airagent/releases/")]


def test_the_next_train_from_a_release_carries_the_held_commits_again(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    live = repo.head.commit.hexsha
    broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")
    example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    first = hold(repo, pipeline, live, {example.BROKEN_PATH: "ModuleNotFoundError"})
    fix = example.commit(repo, {example.BROKEN_PATH: example.dag_file("orders_hourly", tasks=4)}, "fix", "marketing")

    # Still failing after the fix (say): the held commit and the fix are held together.
    again = hold(repo, pipeline, first.commit, {example.BROKEN_PATH: "still broken"})
    assert [h.sha for h in again.held] == [broken, fix]
    assert Path(repo.working_tree_dir, example.BROKEN_PATH).read_text() == example.dag_file("orders_hourly", tasks=4)


def test_a_release_commit_survives_the_fetch_of_a_cloned_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "home"))
    upstream = example.create(tmp_path / "repo", tmp_path / "envs")
    live = upstream.head.commit.hexsha
    example.commit(upstream, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")
    example.commit(upstream, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    pipeline = make_pipeline(upstream, tmp_path / "envs").model_copy(update={"repo": f"file://{tmp_path / 'repo'}"})
    clone = open_repository(pipeline)

    result = hold(clone, pipeline, live, {example.BROKEN_PATH: "ModuleNotFoundError"}, bundle=upstream.working_tree_dir)
    again = open_repository(pipeline)  # fetches, and prunes what the remote lost

    assert f"refs/airagent/releases/{result.commit}" in [r.path for r in again.refs]


SHARED = "dags/common/shared.py"
TEAM_FILES = [f"dags/team{t}/dag{i}.py" for t in range(3) for i in range(2)]


def _content(path: str, version: int, broken: bool, uses_shared: bool) -> str:
    if broken:
        return f"def version_{version}(:\n"
    return ("from common import shared\n" if uses_shared else "") + f"VERSION = {version}\n"


@pytest.fixture(scope="module")
def runtime() -> Path:
    """The suite's Airflow runtime, built once and found by hash after; its warm parser ends with this module."""
    _, built = ensure_runtime(Runtime(), None)
    yield built
    parser_service.stop()


def _export(tree: git.Tree, root: Path) -> Path:
    for blob in tree.traverse():
        if blob.type == "blob":
            (root / blob.path).parent.mkdir(parents=True, exist_ok=True)
            (root / blob.path).write_bytes(blob.data_stream.read())
    return root


def _failing(runtime: Path, bundle: Path, pipeline: PipelineSettings) -> dict[str, str]:
    """What validation finds: Airflow parses the tree in the release runtime, as `validate` does."""
    return parse_tree(runtime, bundle, pipeline.dag_folder, pipeline.plugins_folder, pipeline).failures()


edit = st.tuples(st.sampled_from([SHARED, *TEAM_FILES]), st.booleans(), st.booleans())  # path, broken, uses shared


@pytest.mark.slow  # parses with the Airflow runtime
@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(edit, min_size=1, max_size=2), min_size=1, max_size=6))
def test_a_release_without_the_held_commits_parses_and_carries_every_independent_commit(runtime, commits):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git.Repo.init(root / "repo", initial_branch="main")
        with repo.config_writer() as cfg:
            cfg.set_value("user", "name", "Dev").set_value("user", "email", "dev@example.com")
        initial = {
            SHARED: "VALUE = 1\n",
            "dags/common/__init__.py": "",
            **{p: _content(p, 0, False, i % 2 == 0) for i, p in enumerate(TEAM_FILES)},
        }
        live = example.commit(repo, initial, "initial")
        for n, edits in enumerate(commits, start=1):
            example.commit(repo, {p: _content(p, n, broken, shared) for p, broken, shared in edits}, f"change {n}")
        pipeline = make_pipeline(repo, root / "envs")
        head = repo.head.commit
        carried = [c.sha for c in train_commits(repo, [live], head.hexsha)]

        tree, failures, held = head.tree, {}, []
        for round in range(4):
            bundle = _export(tree, root / f"bundle{round}")
            if not (found := _failing(runtime, bundle, pipeline)):
                break
            failures |= found
            result = hold_back(
                HoldInput(
                    pipeline=pipeline,
                    target=head.hexsha,
                    commits=carried,
                    live_commit=live,
                    bundle=str(bundle),
                    failures=failures,
                )
            )
            held = result.held
            if result.commit is None:
                break
            tree = repo.commit(result.commit).tree

        held_shas = {h.sha for h in held}
        if set(carried) <= held_shas:
            return  # every commit held: the train fails and the environment keeps what it runs
        assert not failures or held, f"{failures} traced to no commit"
        assert _failing(runtime, _export(tree, root / "release"), pipeline) == {}
        live_tree = repo.commit(live).tree
        for h in held:
            for path in h.paths:
                assert (tree / path).binsha == (live_tree / path).binsha, f"{path} of held {h.sha[:8]} in the release"
        for sha in set(carried) - held_shas:
            for path in touched(repo.commit(sha)):
                assert (tree / path).binsha == (head.tree / path).binsha, f"{path} of {sha[:8]} left out"


def test_a_regression_stays_held_until_a_later_commit_changes_its_paths(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    live = repo.head.commit.hexsha
    failing = example.commit(repo, {example.FAILING_PATH: example.FAILING_DAG}, "check the feed", "marketing")
    traced = hold_back(
        HoldInput(
            pipeline=pipeline,
            target=failing,
            commits=[failing],
            live_commit=live,
            bundle=repo.working_tree_dir,
            soak=True,
            failures={example.FAILING_PATH: "tasks of orders_feed_check failed"},
        )
    )
    assert [(h.sha, h.regression) for h in traced.held] == [(failing, True)] and traced.commit is None

    example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    again = hold(repo, pipeline, live, {}, regressions=traced.held)
    assert [h.sha for h in again.held] == [failing] and again.commit
    assert example.FAILING_PATH not in [b.path for b in repo.commit(again.commit).tree.traverse()]

    example.commit(repo, {example.FAILING_PATH: example.dag_file("orders_feed_check")}, "fix the check", "marketing")
    assert hold(repo, pipeline, live, {}, regressions=traced.held).held == []


def test_a_held_commit_is_presumed_held_until_a_later_commit_could_have_fixed_it(tmp_path):
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    pipeline = make_pipeline(repo, tmp_path / "envs")
    live = repo.head.commit.hexsha
    broken = example.commit(
        repo, {example.BROKEN_PATH: "from common import naming\n" + example.BROKEN_DAG}, "marketing: v2", "marketing"
    )
    first = hold(repo, pipeline, live, {example.BROKEN_PATH: "ModuleNotFoundError: pandas_but_misspelled"})
    assert {example.BROKEN_PATH, NAMING} <= set(first.held[0].depends)

    # Other teams' DAG files cannot fix it: the next train leaves it out before validating anything.
    example.commit(repo, {"dags/finance/fx_rates.py": example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    assert [h.sha for h in hold(repo, pipeline, live, {}, regressions=first.held).held] == [broken]
    # A module it imports, or the requirements, could: the train carries it and validation decides.
    for could_fix in ({NAMING: "def task_name(prefix, i):\n    return prefix\n"}, {"requirements.txt": "pandas\n"}):
        with_fix = example.commit(repo, could_fix, "maybe a fix", "platform")
        assert hold(repo, pipeline, live, {}, regressions=first.held).held == []
        repo.git.reset("--hard", f"{with_fix}~1")
