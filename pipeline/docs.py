"""Sections of the README generated from code, kept in step by a test.

Run ``python -m pipeline.docs`` to rewrite them in place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .predict import output_dictionary_markdown
from .schema import data_dictionary_markdown

__all__ = ["SECTIONS", "render_readme"]

README = Path(__file__).resolve().parent.parent / "README.md"

SECTIONS: dict[str, Callable[[], str]] = {
    "data-dictionary": data_dictionary_markdown,
    "output-dictionary": output_dictionary_markdown,
}


def render_readme(text: str) -> str:
    """``text`` with every ``<!-- name:start -->...<!-- name:end -->`` section regenerated."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> section.")
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    README.write_text(render_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
