"""Only airagent's own release commits speak through their trailers: a user's commit carrying
`Airagent-Release-Of` and `Airagent-Held` (a copied message, a cherry-picked release) is an ordinary commit,
on real git repositories."""

from __future__ import annotations

from pathlib import Path

import git

from activities.build import build
from activities.diff import diff
from activities.holdback import release_commit
from activities.targets.local import LocalEnvironment
from airagent import example
from airagent.config import EnvironmentSettings, KubernetesTarget
from airagent.models import BuildInput, DiffInput, HeldCommit
from airagent.repo import HELD, RELEASE_OF, RELEASES, open_repository, ref_of, stands_for
from tests.conftest import make_pipeline

FX = "dags/finance/fx_rates.py"


def held(sha: str) -> HeldCommit:
    return HeldCommit(sha=sha, author="Ada", summary="oops", paths=[example.BROKEN_PATH], reason="no import")


def test_a_cherry_picked_release_commit_is_an_ordinary_commit(monorepo, pipeline):
    live = monorepo.head.commit.hexsha
    broken = example.commit(monorepo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")
    good = example.commit(monorepo, {FX: example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    made = release_commit(monorepo, pipeline, good, live, [held(broken)])

    example.commit(monorepo, {"dags/finance/tax.py": example.dag_file("tax")}, "tax", "finance")
    monorepo.git.cherry_pick(made)  # onto main: the same message, trailers and all
    picked = monorepo.head.commit

    assert (RELEASE_OF, good) in picked.trailers_list and (HELD, broken) in picked.trailers_list
    assert stands_for(monorepo, made) == (good, [broken])
    assert stands_for(monorepo, picked.hexsha) == (picked.hexsha, [])
    assert ref_of(monorepo, pipeline, made) == RELEASES + made
    assert ref_of(monorepo, pipeline, picked.hexsha) == "refs/heads/main"


def test_diff_treats_a_user_commit_with_release_trailers_as_any_other(monorepo, pipeline):
    """Its trailers name a head off the branch and an earlier commit as held: taken at their word, diff would
    call the branch rewritten and carry the earlier commit again."""
    main = monorepo.active_branch
    side = monorepo.create_head("side")
    side.checkout()
    elsewhere = example.commit(monorepo, {"dags/finance/side.py": example.dag_file("side")}, "side work")
    main.checkout()
    earlier = example.commit(monorepo, {FX: example.dag_file("fx_rates", tasks=5)}, "fx", "finance")
    copied = example.commit(
        monorepo,
        {"dags/finance/tax.py": example.dag_file("tax")},
        f"finance: tax DAG\n\n{RELEASE_OF}: {elsewhere}\n{HELD}: {earlier}\n",
        "finance",
    )
    release = build(BuildInput(pipeline=pipeline, target=copied))
    for env in pipeline.environments:
        LocalEnvironment(env.target.path).roll(release)
    after = example.commit(monorepo, {FX: example.dag_file("fx_rates", tasks=6)}, "fx again", "finance")

    result = diff(DiffInput(pipeline=pipeline, target=after))

    assert [c.sha for c in result.commits] == [after]
    for change in result.environments:
        assert change.live_commit == copied and [f.path for f in change.files] == [FX]


def test_a_worker_that_did_not_make_the_release_sees_it_through_its_own_fetch(tmp_path, monkeypatch):
    """A kubernetes pipeline may run any stage on any worker: each fetches the release refs the others push, and
    a cherry-pick of the release pushed to the branch stays an ordinary commit there too."""
    repo = example.create(tmp_path / "repo", tmp_path / "envs")
    origin = git.Repo.init(tmp_path / "origin.git", bare=True)
    repo.git.push(origin.git_dir, "main")
    cluster = EnvironmentSettings(
        name="prod", target=KubernetesTarget(namespace="airflow", kubeconfig=tmp_path / "none")
    )
    pipeline = make_pipeline(repo, tmp_path / "envs", environments=("staging",))
    pipeline = pipeline.model_copy(
        update={"repo": Path(origin.git_dir).as_uri(), "environments": [*pipeline.environments, cluster]}
    )
    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "b"))
    open_repository(pipeline)  # b's clone, from before the commits below
    live = repo.head.commit.hexsha
    broken = example.commit(repo, {example.BROKEN_PATH: example.BROKEN_DAG}, "marketing: v2", "marketing")
    good = example.commit(repo, {FX: example.dag_file("fx_rates", tasks=7)}, "fx", "finance")
    repo.git.push(origin.git_dir, "main")

    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "a"))
    made = release_commit(open_repository(pipeline), pipeline, good, live, [held(broken)])
    example.commit(repo, {"dags/finance/tax.py": example.dag_file("tax")}, "tax", "finance")
    repo.git.fetch(origin.git_dir, RELEASES + made)  # a developer picks it from where a worker pushed it
    repo.git.cherry_pick(made)
    repo.git.push(origin.git_dir, "main")
    picked = repo.head.commit.hexsha

    monkeypatch.setenv("AIRAGENT_HOME", str(tmp_path / "b"))
    clone = open_repository(pipeline)

    assert stands_for(clone, made) == (good, [broken])
    assert stands_for(clone, picked) == (picked, [])
