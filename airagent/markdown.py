"""Text from a repository, an Airflow or a person, made safe to put into the Markdown the Web UI renders.

A commit summary, an author, a DAG's error or a branch name is shown as written: never as a link,
an image, HTML, emphasis or a table cell boundary. Pure, so workflow code calls it freely.
"""

from __future__ import annotations

import re

# Every character CommonMark may read as markup, and the table cell separator of GitHub's tables.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&=:\"'$])")


def text(value: object) -> str:
    """Inline text: markup characters escaped, line breaks folded into spaces (a line break would end a table
    row or start a heading)."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def code(value: object) -> str:
    """An inline code span holding the text as written, whatever backticks it has: its fence is one backtick
    longer than the longest run inside it. Folded to one line, and a pipe shown as a look-alike, since a table
    row ends its cell at a pipe even inside code."""
    inner = " ".join(str(value).split()).replace("|", "¦")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", inner)), default=0) + 1)
    return f"{fence} {inner} {fence}"


def block(value: object) -> str:
    """A fenced code block holding many lines as written: its fence is longer than any backtick run inside."""
    inner = str(value)
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", inner)), default=0) + 1)
    return f"{fence}\n{inner}\n{fence}"
