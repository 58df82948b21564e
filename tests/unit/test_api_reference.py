"""docs/api.md is the rendering of the public docstrings: a docstring or a signature changed
without regenerating it (``.venv/bin/python tests/unit/api_reference.py > docs/api.md``)
fails here."""

from __future__ import annotations

import difflib
from pathlib import Path

from api_reference import render

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_docs_api_md_matches_the_docstrings():
    expected = render()
    actual = API_MD.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            "docs/api.md",
            "rendered from the docstrings",
            n=1,
        )
    )
    assert not diff, "docs/api.md is out of date; regenerate it:\n" + diff[:4000]


def test_the_reference_covers_every_public_name():
    import ugro_health

    text = API_MD.read_text(encoding="utf-8")
    for name in ugro_health.__all__:
        if name != "__version__":
            assert f"`{name}`" in text, name
