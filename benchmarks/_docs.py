"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections as they are."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(title: str, body: list[str]) -> None:
    """Replace the section headed ``title`` (``## ...``) with ``body``, or append it."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section = "\n".join([title, "", *body]).rstrip() + "\n"
    start = text.find(title + "\n")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    DOCS.write_text(text)
