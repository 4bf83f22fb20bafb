"""PromQL query templates: which `{{name}}`s a query may use, where each may stand, and how a value is written in.

Label values (`environment`, `release`, `dag_id`) come from outside the file (a DAG id is whatever a DAG file
says), so they may stand only inside a quoted string and are escaped for that string's quote: no value can
end the string and add PromQL of its own. Inside a regular-expression matcher (`=~`, `!~`) a value is also
escaped as a regular expression, so it matches itself only. The soak's times are numbers airagent makes, and
may stand anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LABEL_VALUES = ("environment", "release", "dag_id")
TIMES = ("soak_start", "soak_duration")
VARIABLES = LABEL_VALUES + TIMES
_MATCHER = re.compile(r"[=!]~\s*$")


@dataclass(frozen=True)
class Slot:
    """One `{{name}}` of a query, and the string it stands in (`quote` None: outside any string)."""

    name: str
    quote: str | None
    regex: bool


def parse(query: str) -> list[str | Slot]:
    """The query as literal text and slots. Strings follow PromQL: double or single quotes with backslash
    escapes, backticks without; `#` outside a string starts a comment, where nothing is substituted."""
    parts: list[str | Slot] = []
    text, quote, regex, i = "", None, False, 0
    while i < len(query):
        if query.startswith("{{", i) and (end := query.find("}}", i + 2)) != -1:
            parts += [text, Slot(query[i + 2 : end].strip(), quote, regex)]
            text, i = "", end + 2
            continue
        char = query[i]
        if quote is None and char == "#":
            end = query.find("\n", i)
            end = len(query) if end == -1 else end
            text, i = text + query[i:end], end
            continue
        if quote is None and char in "\"'`":
            quote, regex = char, bool(_MATCHER.search(text))
        elif char == quote:
            quote, regex = None, False
        elif char == "\\" and quote in ('"', "'") and i + 1 < len(query):
            text, i = text + query[i : i + 2], i + 2
            continue
        text, i = text + char, i + 1
    return [p for p in [*parts, text] if p != ""]


def problems(query: str) -> list[str]:
    """What is wrong with the query's `{{...}}`s, each with the fix."""
    found = []
    for slot in (p for p in parse(query) if isinstance(p, Slot)):
        if slot.name not in VARIABLES:
            found.append(f"{{{{{slot.name}}}}} is not a template variable; use {', '.join(VARIABLES)}")
        elif slot.name in LABEL_VALUES and slot.quote not in ('"', "'"):
            found.append(
                f"{{{{{slot.name}}}}} must stand inside a double- or single-quoted label value, like "
                f'{slot.name}="{{{{{slot.name}}}}}", where airagent escapes it'
            )
    return found


def names(query: str) -> set[str]:
    return {p.name for p in parse(query) if isinstance(p, Slot)}


def render(query: str, values: dict[str, str]) -> str:
    """The query with each slot's value written in, escaped for where it stands."""
    return "".join(p if isinstance(p, str) else quoted(values[p.name], p.quote, p.regex) for p in parse(query))


def quoted(value: str, quote: str | None, regex: bool) -> str:
    """`value` as it must be written inside a string opened by `quote` (Go's escapes, which PromQL reads)."""
    if quote not in ('"', "'"):
        return value  # a time, which only label values need not be
    if regex:
        value = re.escape(value)
    escaped = []
    for char in value:
        if char in ("\\", quote):
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return "".join(escaped)
