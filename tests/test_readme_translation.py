"""README.zh-CN.md keeps the shape of README.md: the same headings (outside fenced code blocks) at the same
levels in the same order, the same inline code in each heading pair, and a link each way near the top.
A failure names the first heading pair that differs, with both line numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
README_EN, README_ZH = REPO / "README.md", REPO / "README.zh-CN.md"
TOP_LINES = 10  # where the cross-links must be


def headings(path: Path) -> list[tuple[int, int, str]]:
    """(line number, level, text) of each `#` heading; `# comment` lines inside ``` or ~~~ blocks are code."""
    found, fence = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        marker = re.match(r"\s{0,3}(`{3,}|~{3,})", line)
        if marker and (fence is None or marker.group(1).startswith(fence)):
            fence = None if fence else marker.group(1)[:3]
        elif fence is None and (match := re.match(r"(#{1,6})\s+(.*?)\s*$", line)):
            found.append((number, len(match.group(1)), match.group(2)))
    return found


def shape(heading: tuple[int, int, str]) -> tuple[int, list[str]]:
    """What a translation keeps of a heading: its level and its inline code."""
    return heading[1], re.findall(r"`([^`]+)`", heading[2])


def test_same_headings_at_same_levels_with_the_same_inline_code():
    en, zh = headings(README_EN), headings(README_ZH)
    assert en, f"no headings found in {README_EN}"
    for index in range(max(len(en), len(zh))):
        a, b = (h[index] if index < len(h) else (0, 0, "(none)") for h in (en, zh))
        assert shape(a) == shape(b), (f"heading {index + 1} differs (level or inline code):\n"
                                      f"  README.md:{a[0]} {'#' * a[1]} {a[2]}\n  README.zh-CN.md:{b[0]} {'#' * b[1]} {b[2]}")


@pytest.mark.parametrize("path, target", [(README_EN, README_ZH.name), (README_ZH, README_EN.name)])
def test_each_readme_links_to_the_other_near_its_top(path, target):
    top = "\n".join(path.read_text(encoding="utf-8").splitlines()[:TOP_LINES])
    assert f"]({target})" in top, f"{path.name} should link to {target} in its first {TOP_LINES} lines"
