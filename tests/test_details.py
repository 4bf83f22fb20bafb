"""The Web UI's details show repository text as written: rendered as Markdown (GitHub's flavour, with tables
and link detection, as the UI renders it), a hostile commit, author, error or branch makes no link, image,
HTML, emphasis or extra table cell, and reads back as written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from markdown_it import MarkdownIt

from airagent import details
from airagent.markdown import block, code, text
from airagent.models import Commit, ConductorStatus, HeldCommit, TrainState, TrainStatus
from airagent.models.conductor import ConductorState
from airagent.models.preview import PreviewState, PreviewStatus
from tests.conftest import read

HOSTILE = [
    "[click](https://evil.example) ![x](https://evil.example/p.png) <img src=x onerror=alert(1)>",
    "**bold** _em_ `code` | a | b | ~~gone~~ www.evil.example https://evil.example",
    "# heading\n- item\n> quote",
    "``` fence ``` and \\ backslash &amp; entity",
]
SHA = "0123456789abcdef" * 2 + "01234567"
MARKUP = {"link_open", "image", "html_inline", "html_block", "strong_open", "em_open", "s_open", "heading_open"}


def render(markdown: str) -> list:
    return MarkdownIt("gfm-like").parse(markdown)


def kinds(tokens: list) -> set[str]:
    found = set()
    for t in tokens:
        found.add(t.type)
        found |= kinds(t.children or [])
    return found


@pytest.mark.parametrize("hostile", HOSTILE)
def test_inline_text_and_code_read_back_as_written_and_make_no_markup(hostile):
    folded = " ".join(hostile.split())
    tokens = render(f"x {text(hostile)} y")
    assert not kinds(tokens) & MARKUP
    assert read(tokens) == f"x {folded} y"
    spans = [t for t in render(code(hostile))[1].children if t.type == "code_inline"]
    assert [s.content for s in spans] == [folded.replace("|", "¦")]
    fenced = [t for t in render(block(hostile)) if t.type == "fence"]
    assert [f.content for f in fenced] == [hostile + "\n"]


def train(says: list[str]) -> TrainStatus:
    return TrainStatus(
        pipeline="p",
        target=SHA,
        state=TrainState.failed,
        reason=says[0],
        commits=[Commit(sha=SHA, author=w, email="m@example.com", summary=w, at=datetime.now(UTC)) for w in says],
        held=[HeldCommit(sha=SHA, author=w, summary=w, teams=[w], reason=w) for w in says],
        notes=[says[1]],
        validation=says[3],
    )


def conductor(says: list[str]) -> ConductorStatus:
    held = [HeldCommit(sha=SHA, author=w, summary=w, teams=[w], reason=w) for w in says]
    return ConductorStatus(pipeline="p", state=ConductorState(held=held, blocked=says[0]))


def preview(says: list[str]) -> PreviewStatus:
    return PreviewStatus(pipeline="p", branch=says[2], state=PreviewState.serving, error=says[0], event=says[1])


def types(tokens: list) -> list[str]:
    """Every token's type, in order, nested ones included: the shape of the rendered page."""
    return [k for t in tokens for k in [t.type, *types(t.children or [])] if k != "text"]


@pytest.mark.parametrize("page", [lambda s: details.train(train(s)), lambda s: details.pipeline(conductor(s))])
def test_hostile_text_leaves_a_page_the_same_shape_as_plain_words_and_reads_back(page):
    """Same shape: no extra link, image, HTML, emphasis, heading, list or table cell."""
    hostile = render(page(HOSTILE))
    assert types(hostile) == types(render(page(["plain words"] * len(HOSTILE))))
    assert not set(types(hostile)) & MARKUP - {"strong_open"}
    shown = read(hostile)
    for h in HOSTILE[:2]:
        assert " ".join(h.split()) in shown


def test_a_preview_s_branch_shows_as_code_whatever_it_holds():
    branch = "feature/`x`|[y](z)"
    hostile = render(preview([HOSTILE[0], HOSTILE[1], branch]).details())
    assert types(hostile) == types(render(preview(["plain words", "plain words", "feature"]).details()))
    assert "feature/`x`¦[y](z)" in [t.content for t in hostile[1].children if t.type == "code_inline"]
