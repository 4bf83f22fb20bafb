"""The git ref GitDagBundle tracks for a kubernetes environment, moved by airagent for a dags-only roll."""

from __future__ import annotations

import os
from typing import Protocol, cast


class DagRef(Protocol):
    """The git ref an environment's GitDagBundle tracks; moving it is what a dags-only roll does."""

    def read(self) -> str | None: ...

    def move(self, commit: str) -> None: ...

    def delete(self) -> bool: ...


class GitRef:
    """A branch in a repository (GitPython), pushed to `remote` when given, where GitDagBundle clones from."""

    def __init__(self, repo: str | os.PathLike[str], name: str, remote: str | None = None):
        import git

        if name.startswith("-"):
            raise ValueError(f"ref {name!r} must not start with '-'")
        self.repo, self.name, self.remote = git.Repo(repo), name, remote

    def read(self) -> str | None:
        if self.remote:
            # GitPython types a git command's output loosely; without as_process or with_extended_output it is str
            listed = cast(str, self.repo.git.ls_remote(self.remote, f"refs/heads/{self.name}"))
            for line in listed.splitlines():
                return line.split()[0]
            return None
        head = next((h for h in self.repo.heads if h.name == self.name), None)
        return head.commit.hexsha if head else None

    def move(self, commit: str) -> None:
        self.repo.create_head(self.name, commit, force=True)
        if self.remote:
            self.repo.git.push(self.remote, f"+{commit}:refs/heads/{self.name}")

    def delete(self) -> bool:
        """Remove the branch here and on the remote; False when it was already gone from both."""
        import git

        found = False
        if self.remote and self.read():
            self.repo.git.push(self.remote, f":refs/heads/{self.name}")
            found = True
        if any(h.name == self.name for h in self.repo.heads):
            git.Head.delete(self.repo, self.name, force=True)
            found = True
        return found
