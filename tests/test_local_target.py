"""The local target driven directly, without Temporal: releases/, the `current` link and the record."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import git
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.build import build
from activities.environment import LocalDriver
from activities.roll import roll
from activities.targets.base import UnexpectedLive
from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import EnvironmentSettings, LocalTarget, home
from airagent.models import BuildInput, Expected, Release, RollInput, RolloutMode
from tests.conftest import make_pipeline


def release(tmp_path: Path, name: str) -> Release:
    """A built release as the build stage leaves it: a bundle folder outside the environment."""
    bundle = tmp_path / "built" / name / "bundle"
    (bundle / "dags").mkdir(parents=True)
    (bundle / "dags" / "dag.py").write_text(f"# release {name}\n")
    return Release(
        id=name,
        commit=hashlib.sha1(name.encode()).hexdigest(),
        runtime_hash="0" * 16,
        runtime=str(tmp_path / "runtime"),
        bundle=str(bundle),
        dag_folder="dags",
        plugins_folder="plugins",
    )


def swaps(env: LocalEnvironment) -> list[tuple]:
    return [(s.action, s.release, s.replaced) for s in env.record().history]


def leftovers(env: LocalEnvironment) -> list[str]:
    """Temporary links, copies and manifests a finished change must not leave behind."""
    return [
        p.name
        for folder in (env.path, env.releases)
        if folder.exists()
        for p in folder.iterdir()
        if p.name.startswith(".")
    ]


@pytest.fixture
def env(tmp_path) -> LocalEnvironment:
    return LocalEnvironment(tmp_path / "env")


def test_roll_installs_the_release_and_points_current_at_it(env, tmp_path):
    a = release(tmp_path, "a")
    record, changed = env.roll(a)

    assert changed
    installed = env.releases / "a"
    assert (installed / "dags" / "dag.py").read_text() == "# release a\n"
    assert Release.model_validate_json((installed / "release.json").read_text()).bundle == str(installed)
    assert env.current.is_symlink() and os.readlink(env.current) == "releases/a"  # relative: the folder can move
    assert (env.current / "dags" / "dag.py").read_text() == "# release a\n"
    assert record == env.record()
    assert (record.live.id, record.live.commit, record.previous) == ("a", a.commit, None)
    assert swaps(env) == [("roll", "a", None)]
    assert leftovers(env) == []


def test_second_roll_swaps_current_and_keeps_the_first(env, tmp_path):
    env.roll(release(tmp_path, "a"))
    record, changed = env.roll(release(tmp_path, "b"))

    assert changed
    assert os.readlink(env.current) == "releases/b"
    assert (env.current / "dags" / "dag.py").read_text() == "# release b\n"
    assert sorted(p.name for p in env.releases.iterdir()) == ["a", "b"]
    assert (record.live.id, record.previous.id) == ("b", "a")
    assert swaps(env) == [("roll", "a", None), ("roll", "b", "a")]
    assert leftovers(env) == []


def test_a_release_is_installed_as_links_and_only_what_changed_gets_a_fresh_mtime(env, tmp_path):
    """A file no train changed takes its space once; the DAG processor is pointed at the files that differ."""
    a, b = release(tmp_path, "a"), release(tmp_path, "b")
    shared = Path(a.bundle) / "dags" / "shared.py"
    shared.write_text("# the same in both\n")
    os.link(shared, Path(b.bundle) / "dags" / "shared.py")  # as an export by difference leaves it
    env.roll(a)  # a first roll marks every file
    for path in (shared, Path(b.bundle) / "dags" / "dag.py"):
        os.utime(path, (1_000_000, 1_000_000))
    env.roll(b)

    installed = env.releases / "b" / "dags"
    assert os.path.samefile(installed / "shared.py", shared) and os.path.samefile(
        installed / "dag.py", Path(b.bundle) / "dags" / "dag.py"
    )
    assert (installed / "dag.py").stat().st_mtime > 1_000_000 and (installed / "shared.py").stat().st_mtime == 1_000_000


def test_rolling_the_live_release_is_a_noop(env, tmp_path):
    """A retried or replayed roll activity must not roll twice."""
    a = release(tmp_path, "a")
    first, _ = env.roll(a)
    again, changed = env.roll(a)
    assert not changed
    assert again == first == env.record()
    assert swaps(env) == [("roll", "a", None)]


def test_rollback_to_previous(env, tmp_path):
    env.roll(release(tmp_path, "a"))
    env.roll(release(tmp_path, "b"))
    record, changed = env.rollback("a")

    assert changed
    assert os.readlink(env.current) == "releases/a"
    assert (record.live.id, record.previous.id) == ("a", "b")
    assert swaps(env)[-1] == ("rollback", "a", "b")
    assert env.rollback("a") == (record, False)


def test_rollback_to_none_removes_current(env, tmp_path):
    env.roll(release(tmp_path, "a"))
    record, changed = env.rollback(None)

    assert changed
    assert not env.current.is_symlink() and not env.current.exists()
    assert env.linked() is None
    assert (record.live, record.previous.id) == (None, "a")
    assert swaps(env) == [("roll", "a", None), ("rollback", None, "a")]
    assert (env.releases / "a" / "release.json").exists()  # kept, so it can be rolled back to
    assert env.rollback(None) == (record, False)


def test_rollback_to_a_release_never_rolled_here(env, tmp_path):
    env.roll(release(tmp_path, "a"))
    with pytest.raises(FileNotFoundError, match="release zz was never rolled"):
        env.rollback("zz")
    assert swaps(env) == [("roll", "a", None)]


def test_crash_between_link_swap_and_manifest_write(env, tmp_path):
    """The retried roll finds the link already swapped: it records the swap once, and only once."""
    a, b = release(tmp_path, "a"), release(tmp_path, "b")
    env.roll(a)
    # What a crash leaves: b copied in and `current` swapped, manifest.json still saying a.
    env._install(b)
    link = env.path / "crash-link"
    link.symlink_to(Path("releases") / "b")
    os.replace(link, env.current)
    assert env.live().id == "a" and env.linked() == "b"

    record, changed = env.roll(b)
    assert changed
    assert (record.live.id, record.previous.id) == ("b", "a")
    assert swaps(env) == [("roll", "a", None), ("roll", "b", "a")]
    assert os.readlink(env.current) == "releases/b"
    assert env.roll(b)[1] is False


def test_current_missing_while_manifest_says_live_is_repaired(env, tmp_path):
    """The link is the truth about what runs; a record alone does not make a roll a no-op."""
    a = release(tmp_path, "a")
    env.roll(a)
    env.current.unlink()
    _, changed = env.roll(a)
    assert changed and env.linked() == "a"


# --- a roll names the release it replaces ----------------------------------------------


def state(env: LocalEnvironment) -> tuple:
    """Everything a roll could change: the record as written, the link, the installed releases, stray files."""
    record = env.record_file.read_text() if env.record_file.exists() else None
    installed = sorted(p.name for p in env.releases.iterdir()) if env.releases.exists() else []
    return record, env.linked(), installed, sorted(p.name for p in env.path.iterdir()) if env.path.exists() else []


@pytest.mark.parametrize(
    ("rolled", "expected"),
    [
        (["a", "b"], "a"),  # another train rolled b since the diff saw a
        (["a"], None),  # the diff saw nothing live, someone rolled a since
        ([], "a"),  # the diff saw a, someone put the environment back to nothing
    ],
    ids=["other-release", "first-deploy", "emptied"],
)
def test_a_roll_over_an_unexpected_release_is_refused_and_changes_nothing(env, tmp_path, rolled, expected):
    for name in rolled:
        env.roll(release(tmp_path, name))
    before = state(env)

    with pytest.raises(UnexpectedLive) as refused:
        env.roll(release(tmp_path, "c"), Expected(live=expected))

    err = refused.value
    live = rolled[-1] if rolled else None
    assert (err.expected, err.live, err.release) == (expected, live, "c")
    assert f"runs {live or 'nothing'}" in str(err) and f"expected {expected or 'nothing'}" in str(err)
    assert "next train will diff again" in str(err)
    assert state(env) == before


def test_a_retried_roll_is_still_a_noop_though_replaces_names_the_release_before(env, tmp_path):
    a, b = release(tmp_path, "a"), release(tmp_path, "b")
    env.roll(a)
    first, _ = env.roll(b, Expected(live="a"))

    again, changed = env.roll(b, Expected(live="a"))

    assert not changed and again == first == env.record()
    assert swaps(env) == [("roll", "a", None), ("roll", "b", "a")]
    env.current.unlink()  # the record names b already: repairing the link is not rolling over another release
    assert env.roll(b, Expected(live="a"))[1] and env.linked() == "b"


@pytest.mark.parametrize("replaces", [Expected(live="a"), None], ids=["matching", "unchecked"])
def test_a_roll_whose_replaces_matches_or_is_absent_rolls_as_before(env, tmp_path, replaces):
    env.roll(release(tmp_path, "a"), Expected(live=None) if replaces else None)

    record, changed = env.roll(release(tmp_path, "b"), replaces)

    assert changed and env.linked() == "b"
    assert (record.live.id, record.previous.id) == ("b", "a")
    assert swaps(env) == [("roll", "a", None), ("roll", "b", "a")]


def test_a_refused_roll_of_an_airflow_environment_takes_no_baseline(tmp_path):
    """Refused before anything else, the `env up` check and the baseline included."""
    settings = EnvironmentSettings(name="staging", target=LocalTarget(path=tmp_path / "env"))
    env = LocalEnvironment(settings.target.path)
    env.roll(release(tmp_path, "a"))
    before = state(env)

    with pytest.raises(UnexpectedLive, match="^staging runs a "):
        LocalDriver(settings).roll(release(tmp_path, "b"), RolloutMode.dags_only, {}, Expected(live="z"))

    assert state(env) == before
    assert not (env.path / "baseline.json").exists()


def test_the_roll_activity_fails_an_unexpected_live_release_for_good(tmp_path):
    settings = EnvironmentSettings(name="staging", target=LocalTarget(path=tmp_path / "env", airflow=False))
    LocalEnvironment(settings.target.path).roll(release(tmp_path, "a"))

    with pytest.raises(ApplicationError) as failed:
        ActivityEnvironment().run(
            roll,
            RollInput(
                environment=settings,
                release=release(tmp_path, "b"),
                mode=RolloutMode.dags_only,
                replaces=Expected(live="z"),
            ),
        )

    assert failed.value.non_retryable and failed.value.type == "UnexpectedLive"
    assert failed.value.message.startswith("staging runs a (commit ") and "expected z" in failed.value.message
    assert LocalEnvironment(settings.target.path).live().id == "a"


# --- build: links that escape the repository -------------------------------------------


@pytest.fixture
def repo_with_dags_link(tmp_path, request) -> git.Repo:
    """A repository whose `dags` is a committed symlink to a folder outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stolen.py").write_text("SECRET = 1\n")
    root = tmp_path / "repo"
    repo = git.Repo.init(root, initial_branch="main")
    (root / "requirements.txt").write_text(example.FILES["requirements.txt"])
    os.symlink(request.param(outside), root / "dags")
    repo.git.add("requirements.txt", "dags")
    example.commit(repo, {}, "dags live elsewhere")
    return repo


@pytest.mark.parametrize(
    "repo_with_dags_link",
    [
        lambda outside: "../../outside",
        lambda outside: os.path.relpath(outside, outside.parent / "repo"),  # ../outside: out of the bundle too
        lambda outside: str(outside),
    ],
    indirect=True,
    ids=["relative", "one-up", "absolute"],
)
def test_build_refuses_a_dag_folder_linked_outside_the_repository(repo_with_dags_link, tmp_path):
    repo = repo_with_dags_link
    sha = repo.head.commit.hexsha
    pipeline = make_pipeline(repo, tmp_path / "envs")
    with pytest.raises(ApplicationError) as err:
        build(BuildInput(pipeline=pipeline, target=sha))
    assert err.value.non_retryable and err.value.type == "BadInput"
    message = str(err.value)
    assert sha[:12] in message and "dags links outside the repository" in message
    assert "replace the link" in message
    scratch = home() / "releases" / pipeline.name
    assert not any(p.name.startswith(f".{sha[:12]}.") for p in scratch.iterdir())  # nothing half-built is left


def test_build_keeps_a_link_that_stays_inside(tmp_path):
    """A symlinked DAG folder inside the repository is fine, and survives into the environment."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    root = Path(repo.working_tree_dir)
    repo.git.mv("dags", "airflow")
    os.symlink("airflow", root / "dags")
    repo.git.add("dags")
    repo.index.commit("dags is a link now")
    pipeline = make_pipeline(repo, tmp_path / "envs")

    built = build(BuildInput(pipeline=pipeline, target=repo.head.commit.hexsha))
    env = LocalEnvironment(pipeline.environment("staging").target.path)
    env.roll(built)
    assert os.readlink(env.current / "dags") == "airflow"
    assert (env.current / "dags" / "finance" / "fx_rates.py").resolve().is_relative_to(env.releases.resolve())


@pytest.mark.parametrize(("dag_folder", "plugins_folder"), [("dags", "plugins"), (".", "plugins"), ("", "plugins")])
def test_only_what_components_read_at_start_asks_for_a_restart(tmp_path, dag_folder, plugins_folder):
    from activities.targets.local_airflow import _restart_key

    def key(files: dict[str, str]) -> str:
        bundle = tmp_path / uuid.uuid4().hex
        for name, text in files.items():
            (bundle / name).parent.mkdir(parents=True, exist_ok=True)
            (bundle / name).write_text(text)
        folders = {"dag_folder": dag_folder, "plugins_folder": plugins_folder}
        return _restart_key(Release(id="r", commit="c", runtime_hash="h", runtime="", bundle=str(bundle), **folders))

    dag = f"{dag_folder.strip('.') or ''}/a.py".lstrip("/")
    base = {dag: "v1", "plugins/p.py": "v1", "airflow.cfg": "v1"}
    assert key(base) == key({**base, dag: "v2"})  # a DAG change rolls dags-only
    assert key(base) != key({**base, "plugins/p.py": "v2"})
    assert key(base) != key({**base, "airflow.cfg": "v2"})
