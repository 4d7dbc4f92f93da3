"""The README's configuration reference is the one the plugin schemas generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from kong_plugins import SUITE_PLUGINS
from kong_plugins.reference import BEGIN_MARKER, END_MARKER, plugin_reference, render, replace_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_matches_the_schemas() -> None:
    document = README.read_text(encoding="utf-8")
    assert replace_block(document, render()) == document, (
        "README.md's configuration reference is stale: run `python -m kong_plugins.reference --write README.md`"
    )


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_every_field_of_every_plugin_is_documented(plugin: str) -> None:
    rows = [line for line in plugin_reference(plugin).splitlines() if line.startswith("| `")]
    assert len(rows) > 10
    for row in rows:
        description = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert len(description) >= 10, row


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        replace_block("# no reference here\n", render())
    assert replace_block(f"a\n{BEGIN_MARKER}\nold\n{END_MARKER}\nb", "NEW") == "a\nNEW\nb"
