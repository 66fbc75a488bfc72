"""Test helpers: parse a report page and check it; check that a PNG figure shows something."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def check_png(path: Path, min_px: int = 100) -> np.ndarray:
    """Assert ``path`` is a PNG at least ``min_px`` pixels on each side that is not blank; return it.

    Not blank: the RGB values vary (standard deviation over the image above 0.02 on the 0-1 scale)
    and no single colour covers more than 98 % of the pixels.
    """
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_px, f"{path}: too small ({image.shape})"
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.02, f"{path}: blank figure (std {rgb.std():.4f})"
    _, counts = np.unique(np.round(rgb * 255).astype(np.uint8), axis=0, return_counts=True)
    assert counts.max() < 0.98 * len(rgb), f"{path}: one colour covers {counts.max() / len(rgb):.1%}"
    return image


def check_page(page: Path) -> list[str]:
    """Parse a report page; assert it is well formed and every image is an existing, non-blank PNG.

    Returns the image sources, relative to the page's folder.
    """
    checker = _Checker()
    checker.feed(page.read_text(encoding="utf-8"))
    assert checker.errors == [] and checker.stack == []
    assert checker.images
    for src in checker.images:
        assert (page.parent / src).is_file(), src
        check_png(page.parent / src)
    return checker.images
