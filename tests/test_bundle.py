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
