"""README.zh-CN.md keeps the shape of README.md: the same headings (outside fenced code blocks) at the same
levels in the same order, the same inline code in each heading pair, and a link each way near the top.

Headings are paired by position. When a check fails, the message names the first pair that differs, says how
(level, inline code, or a heading that one file has and the other lacks, found from the text under the headings,
see `first_drift`), and prints the two outlines side by side."""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
README_EN = REPO / "README.md"
README_ZH = REPO / "README.zh-CN.md"
TOP_LINES = 10  # where the cross-links must be


@pytest.fixture
def embedded_cache():
    """Overrides conftest's session-wide autouse fixture of the same name for this module: these checks read
    two text files and need no embedded model, so running this file alone builds nothing."""
    return None


@dataclass(frozen=True)
class Heading:
    line: int  # 1-based line number in its file
    level: int  # number of leading '#'
    text: str  # the heading as written, without the '#'s

    @property
    def code(self) -> list[str]:
        return code_spans(self.text)

    def __str__(self) -> str:
        return f"line {self.line}: {'#' * self.level} {self.text}"


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/:@]*[A-Za-z0-9]")


def code_spans(text: str) -> list[str]:
    """Contents of the inline code spans in `text`, in order (CommonMark: one space stripped from each end when
    both ends have one)."""
    spans = []
    for match in _CODE_SPAN.finditer(text):
        content = match.group(2)
        if len(content) > 2 and content[0] == " " and content[-1] == " " and content.strip():
            content = content[1:-1]
        spans.append(content)
    return spans


def headings(path: Path) -> list[Heading]:
    """The ATX headings (`#` to `######`) outside fenced code blocks. A fence closes with the same character,
    at least as many times, and nothing else on the line; an unclosed fence runs to the end of the file."""
    found = []
    fence: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence) \
                    and not opening.group(2).strip():
                fence = None
            continue
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            fence = opening.group(1)
            continue
        match = _ATX.match(line)
        if match:
            text = _CLOSING_HASHES.sub("", match.group(2) or "").strip()
            found.append(Heading(number, len(match.group(1)), text))
    return found


def _words(path: Path, heads: list[Heading]) -> tuple[list[str], list[int]]:
    """The file's Latin-script words, numbers, paths and option names in order (headings left out), and where
    each heading falls in that sequence. A translation keeps most of them (code, commands, figures, names)."""
    at = {h.line for h in heads}
    words: list[str] = []
    starts: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if number in at:
            starts.append(len(words))
        else:
            words.extend(w.lower() for w in _WORD.findall(line))
    return words, starts


def _counterparts(src: tuple[list[str], list[int]], dst: tuple[list[str], list[int]]) -> list[int]:
    """For each heading of one file, the index of the other file's heading under which its text starts: the
    heading's position carried over through the words the two files share."""
    (src_words, src_starts), (dst_words, dst_starts) = src, dst
    blocks = SequenceMatcher(None, src_words, dst_words, autojunk=False).get_matching_blocks()
    found: list[int] = []
    for start in src_starts:
        block = next(b for b in blocks if b.a + b.size > start or b.size == 0)
        mapped = block.b + max(0, start - block.a)
        at = max([s for s in dst_starts if s <= mapped], default=0)
        tied = [j for j, s in enumerate(dst_starts) if s == at] or [0]  # headings with no words between them
        found.append(next((j for j in tied if j > (found[-1] if found else -1)), tied[-1]))
    return found


def first_drift(en: list[Heading], zh: list[Heading]) -> str | None:
    """The first heading pair that differs, and how: a heading one file has and the other lacks (told by where
    the text under each heading lands in the other file), a level, or inline code. None when nothing differs."""
    names = (README_EN.name, README_ZH.name)
    heads = (en, zh)
    words = (_words(README_EN, en), _words(README_ZH, zh))
    maps = (_counterparts(words[0], words[1]), _counterparts(words[1], words[0]))  # en->zh, zh->en
    for index in range(max(len(en), len(zh))):
        pair = [h[index] if index < len(h) else None for h in heads]
        where = (f"\n  {names[0]} {pair[0] or '(no heading)'}\n  {names[1]} {pair[1] or '(no heading)'}")
        for side in (0, 1):
            other = 1 - side
            if pair[side] is not None and index not in maps[other]:
                host = heads[other][maps[side][index]]
                return (f"heading {index + 1}: {names[side]} {pair[side]} has no counterpart in {names[other]} "
                        f"(its text is under {names[other]} {host}); add or remove a heading there:{where}")
        if pair[0] is None or pair[1] is None:
            side = 0 if pair[1] is None else 1
            return f"heading {index + 1} is only in {names[side]}:{where}"
        if maps[0][index] != index or maps[1][index] != index:
            return (f"heading {index + 1}: the text under these headings does not correspond "
                    f"({names[0]}'s continues under {names[1]} heading {maps[0][index] + 1}, "
                    f"{names[1]}'s under {names[0]} heading {maps[1][index] + 1}):{where}")
        if pair[0].level != pair[1].level:
            return f"heading {index + 1} differs in level ({pair[0].level} and {pair[1].level}):{where}"
        if pair[0].code != pair[1].code:
            return f"heading {index + 1} differs in inline code ({pair[0].code} and {pair[1].code}):{where}"
    return None


def outline(en: list[Heading], zh: list[Heading]) -> str:
    """Both heading lists side by side, so a reader can see where they drift apart."""
    rows = []
    for index in range(max(len(en), len(zh))):
        left = str(en[index]) if index < len(en) else "(none)"
        right = str(zh[index]) if index < len(zh) else "(none)"
        rows.append(f"  {index + 1:>3}  {left}\n       {right}")
    return f"headings, {README_EN.name} above {README_ZH.name}:\n" + "\n".join(rows)


@pytest.fixture(scope="module")
def pairs() -> tuple[list[Heading], list[Heading]]:
    assert README_ZH.exists(), f"{README_ZH} is missing"
    en, zh = headings(README_EN), headings(README_ZH)
    assert en, f"no headings found in {README_EN}"
    return en, zh


def test_same_headings_at_same_levels(pairs):
    en, zh = pairs
    same = len(en) == len(zh) and [h.level for h in en] == [h.level for h in zh]
    assert same, (f"{README_EN.name} has {len(en)} headings, {README_ZH.name} has {len(zh)}; "
                  f"{first_drift(en, zh)}\n{outline(en, zh)}")


def test_same_inline_code_in_each_heading_pair(pairs):
    en, zh = pairs
    for index, (a, b) in enumerate(zip(en, zh), start=1):
        assert a.code == b.code, (
            f"heading {index}: inline code {a.code} in {README_EN.name} but {b.code} in {README_ZH.name}:\n"
            f"  {README_EN.name} {a}\n  {README_ZH.name} {b}\n"
            f"first difference: {first_drift(en, zh)}\n{outline(en, zh)}")


def links_near_top(path: Path, target: str) -> bool:
    """Whether one of the first TOP_LINES lines links to `target` (Markdown or HTML link, ./ and #anchor
    allowed)."""
    top = "\n".join(path.read_text(encoding="utf-8").splitlines()[:TOP_LINES])
    name = r"(?:\./)?" + re.escape(target) + r"(?:#[^)\s\"']*)?"
    return bool(re.search(r"\]\(\s*<?" + name + r">?(?:\s+\"[^\"]*\")?\s*\)", top)
                or re.search(r"href=[\"']" + name + r"[\"']", top))


def test_english_readme_links_to_chinese():
    assert links_near_top(README_EN, README_ZH.name), (
        f"{README_EN.name} should link to {README_ZH.name} in its first {TOP_LINES} lines, "
        f"e.g. a line [中文说明]({README_ZH.name}) below the title")


def test_chinese_readme_links_back_to_english():
    assert README_ZH.exists(), f"{README_ZH} is missing"
    assert links_near_top(README_ZH, README_EN.name), (
        f"{README_ZH.name} should link back to {README_EN.name} in its first {TOP_LINES} lines, "
        f"e.g. a line [English]({README_EN.name}) below the title")
