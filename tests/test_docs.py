"""The documentation's links work: relative links name files of the repository and `#anchors`
name headings of the file they point to (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *(ROOT / "docs").glob("*.md")]
)

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target) and ![alt](target); the text may hold inline code but no nested brackets
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line, those of fenced code blocks made empty."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            line = ""
        lines.append((number, "" if fenced else line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercase, with every character other
    than letters, digits, '_', '-' and spaces removed, and spaces turned into '-'."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a markdown file has, numbering repeated headings as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link of a markdown file, outside code; a link may run
    over several lines of a paragraph."""
    found = []
    paragraph: list[tuple[int, str]] = []
    for number, line in [*prose_lines(path.read_text(encoding="utf-8")), (0, "")]:
        reference = REFERENCE.match(line)
        if reference:
            found.append((number, reference.group(1)))
            continue
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            text = "\n".join(text for _, text in paragraph)
            # inline code holds no links; blank it, keeping the line breaks
            text = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
            for match in LINK.finditer(text):
                found.append((paragraph[text.count("\n", 0, match.start())][0], match.group(1)))
            paragraph = []
    return sorted(found, key=lambda item: item[0])


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        file = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not file.exists():
            problems.append(f"{where}: no such file")
            continue
        if ROOT.resolve() not in (file.resolve(), *file.resolve().parents):
            problems.append(f"{where}: outside the repository")
            continue
        if anchor and file.suffix == ".md" and unquote(anchor) not in anchors(file):
            problems.append(f"{where}: no heading with this anchor in {file.name}")
        elif anchor and file.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not markdown")
    return problems


def test_slug_follows_github():
    assert slug("Quality of the default codec (`benchmarks/quality.py`)") == (
        "quality-of-the-default-codec-benchmarksqualitypy"
    )
    assert slug("What `load_codec(source)` accepts") == "what-load_codecsource-accepts"
    assert slug("The `.atok` format, version 1.0") == "the-atok-format-version-10"
    assert slug("coder 1: adaptive rANS") == "coder-1-adaptive-rans"


def test_links_found_outside_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Title\n\nSee [a](page.md#title-1), [b](#title) and `[c](nowhere.md)`.\n"
        "```\n[d](nowhere.md)\n```\n[e]: other.md#x\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"title", "title-1"}
    assert links(page) == [(5, "page.md#title-1"), (5, "#title"), (9, "other.md#x")]
    page.write_text("A [link\nover lines](\n  gone.md) and `x\n[y](z.md)`.\n", encoding="utf-8")
    assert links(page) == [(1, "gone.md")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_anchors_resolve(path):
    assert path.exists()
    assert broken_links(path) == []
