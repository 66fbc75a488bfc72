"""Test helper: parse a report page and check it (not a test module)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class _Checker(HTMLParser):
    """Collects image sources and checks that every opened tag is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def check_page(page: Path) -> list[str]:
    """Parse a report page; assert it is well formed and every image is an existing PNG; return srcs."""
    checker = _Checker()
    checker.feed(page.read_text(encoding="utf-8"))
    assert checker.errors == [] and checker.stack == []
    assert checker.images
    for src in checker.images:
        assert (page.parent / src).is_file(), src
        assert (page.parent / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return checker.images
