"""Build ``data/homoglyphs.json``: a code point -> ASCII folding table for the normaliser.

The table is derived from the Unicode confusables data that the PyPI package
``confusable-homoglyphs`` ships (its ``confusables.json``), so the plugin itself carries no
dependency and downloads nothing at run time.  Only single code points that Unicode lists as
confusable with an ASCII letter or digit are kept; when one glyph is confusable with several ASCII
characters (``l``, ``I``, ``1``, ``|``) the lowercase letter wins, because the detection view is
lowercase anyway.

Run (build-time dependency only)::

    pip install confusable-homoglyphs==3.3.1
    python -m kong_plugins.prompt_inspector.training.build_homoglyphs
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "homoglyphs.json"


def _rank(target: str) -> int:
    if target.islower():
        return 0
    if target.isupper():
        return 1
    return 2


def build() -> dict[str, str]:
    source = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data: dict[str, list[dict[str, str]]] = json.loads(source.read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    for target, glyphs in data.items():
        if not (len(target) == 1 and target.isascii() and target.isalnum()):
            continue
        for glyph in glyphs:
            char = glyph["c"]
            if len(char) != 1 or char.isascii():
                continue
            current = table.get(char)
            if current is None or _rank(target) < _rank(current):
                table[char] = target.lower()
    return dict(sorted(table.items()))


def main() -> None:
    table = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(table, ensure_ascii=True, sort_keys=True, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(table)} entries to {OUT}")


if __name__ == "__main__":
    main()
