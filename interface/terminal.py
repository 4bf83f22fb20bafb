"""The consoles airagent writes to, which show every string as written.

Most of what airagent prints comes from a repository, an Airflow or a user: a commit summary with `[/x]` in it
would be rich markup (and a crash), `:bug:` an emoji. So no console here reads markup or emoji codes, and
airagent's own styling is given apart from the text: `labelled("error:", "red", message)`, `Text.assemble`, or
`style=` for a whole line.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


def plain_console(**options: Any) -> Console:
    """A console that shows text as written; tests render with one to see what a person sees."""
    return Console(markup=False, emoji=False, **options)


console = plain_console()
# Soft wrap keeps `file:line: field` messages whole for grep and CI logs.
err_console = plain_console(stderr=True, soft_wrap=True)


def labelled(label: str, style: str, message: str) -> Text:
    """airagent's own label in its style, then a message as written."""
    return Text.assemble((label, style), " ", message)
