"""A release's files stay inside it: a commit's links are checked member by member, a working tree's before
anything parses it."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.bundle import escapes, export_commit
from activities.validation.tree import check_tree
from airagent import example
from airagent.repo import RepoError
from tests.conftest import make_pipeline


def member(name: str, link: str | None = None, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE if link is not None and kind == tarfile.REGTYPE else kind
    info.linkname = link or ""
    return info


@pytest.mark.parametrize(
    ("info", "links", "escaping"),
    [
        (member("dags/a.py"), set(), False),
        (member("dags/common", "../include/common"), set(), False),
        (member("dags/up", "../../etc"), set(), True),
        (member("dags/abs", "/etc/passwd"), set(), True),
        (member("../outside.py"), set(), True),
        (member("/etc/cron.d/x"), set(), True),
        (member("here/x.py"), {"here"}, True),  # under a link, where the link's target decides
        (member("hard", "dags/a.py", tarfile.LNKTYPE), set(), False),
        (member("hard", "../x", tarfile.LNKTYPE), set(), True),
        (member("dev", kind=tarfile.CHRTYPE), set(), True),
    ],
)
def test_a_member_is_judged_by_where_it_lands(info, links, escaping):
    assert escapes(info, links) is escaping


def test_a_commit_with_a_link_out_is_refused_naming_it(monorepo, tmp_path):
    os.symlink("/etc/passwd", os.path.join(monorepo.working_tree_dir, "dags", "passwd.py"))
    monorepo.index.add(["dags/passwd.py"])
    sha = monorepo.index.commit("a link out").hexsha

    with pytest.raises(ApplicationError, match="dags/passwd.py links outside the repository"):
        export_commit(make_pipeline(monorepo, tmp_path / "envs"), sha, tmp_path / "out")
    assert not (tmp_path / "out" / "dags" / "passwd.py").exists()


def test_a_working_tree_with_a_link_out_is_refused_before_anything_runs(monorepo, tmp_path):
    link = os.path.join(monorepo.working_tree_dir, "dags", "passwd.py")
    os.symlink("/etc/passwd", link)

    with pytest.raises(RepoError, match="passwd.py links outside the repository .*replace the link"):
        check_tree(make_pipeline(monorepo, tmp_path / "envs"), Path(monorepo.working_tree_dir))


def _tree(root: Path) -> dict[str, str]:
    """Every file and link under `root`, with its content or target."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_text()
        elif not any(path.iterdir()):
            found[rel] = "(empty folder)"
    return found


def test_an_export_by_difference_holds_exactly_what_a_whole_export_does(monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs")
    work = Path(monorepo.working_tree_dir)
    base = monorepo.head.commit.hexsha
    export_commit(pipeline, base, tmp_path / "base")
    first = next((work / "dags").rglob("*.py"))
    first.write_text(first.read_text() + "# changed\n")
    (work / "dags" / "fresh" / "deep").mkdir(parents=True)
    (work / "dags" / "fresh" / "deep" / "new.py").write_text("x = 1\n")
    os.symlink("deep/new.py", work / "dags" / "fresh" / "alias.py")
    (work / "plugins").mkdir(exist_ok=True)
    (work / "plugins" / "gone.py").write_text("")
    monorepo.git.add("-A")
    monorepo.index.commit("files change, some arrive")
    between = monorepo.head.commit.hexsha
    export_commit(pipeline, between, tmp_path / "between")
    monorepo.git.rm("-q", "plugins/gone.py")
    (work / "dags" / "fresh" / "deep" / "new.py").unlink()
    (work / "dags" / "fresh" / "deep").rmdir()
    (work / "dags" / "fresh" / "deep").write_text("a file where a folder was\n")
    monorepo.git.add("-A")
    sha = monorepo.index.commit("a folder becomes a file, one goes").hexsha

    for near, made in ((base, tmp_path / "base"), (between, tmp_path / "between")):
        export_commit(pipeline, sha, tmp_path / f"from-{near[:7]}", (near, made))
        export_commit(pipeline, sha, tmp_path / f"whole-{near[:7]}")
        assert _tree(tmp_path / f"from-{near[:7]}") == _tree(tmp_path / f"whole-{near[:7]}")
    unchanged = next(p for p in (tmp_path / "base" / "dags").rglob("*.py") if p.name != first.name)
    unchanged = unchanged.relative_to(tmp_path / "base")
    assert os.path.samefile(tmp_path / "base" / unchanged, tmp_path / f"from-{base[:7]}" / unchanged)


def test_an_export_by_difference_refuses_a_link_out_as_a_whole_one_does(monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs")
    base = monorepo.head.commit.hexsha
    export_commit(pipeline, base, tmp_path / "base")
    os.symlink("../../etc", os.path.join(monorepo.working_tree_dir, "dags", "up"))
    monorepo.index.add(["dags/up"])
    sha = monorepo.index.commit("a link out").hexsha

    with pytest.raises(ApplicationError, match="dags/up links outside the repository"):
        export_commit(pipeline, sha, tmp_path / "out", (base, tmp_path / "base"))
    assert not (tmp_path / "out" / "dags" / "up").exists()


def test_an_export_whose_earlier_bundle_is_gone_is_made_whole(monorepo, tmp_path):
    pipeline = make_pipeline(monorepo, tmp_path / "envs")
    base = monorepo.head.commit.hexsha
    sha = example.commit(monorepo, {"dags/finance/note.py": "# a note\n"}, "a note")

    export_commit(pipeline, sha, tmp_path / "out", (base, tmp_path / "collected"))

    export_commit(pipeline, sha, tmp_path / "whole")
    assert _tree(tmp_path / "out") == _tree(tmp_path / "whole")
