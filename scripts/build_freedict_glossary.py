"""Build search/glossary_freedict_id_en.tsv from Debian's dict-freedict-eng-ind (FreeDict + WikDict, from Wiktionary).

The English -> Indonesian dictionary is reversed: every Indonesian translation (up to 3 words) maps to the English
headwords it translates, in dictionary order. The hand glossary (search/glossary_id_en.tsv) stays first; this file is
the systematic fallback for the Indonesian words it lacks (search/glossary.py).

Usage (a maintainer's step; the TSV is committed, so users need neither Debian nor this script):
    apt-get download dict-freedict-eng-ind && dpkg-deb -x dict-freedict-eng-ind_*.deb /tmp/freedict
    python scripts/build_freedict_glossary.py /tmp/freedict/usr/share/dictd search/glossary_freedict_id_en.tsv
"""
from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
HEAD = re.compile(r"^(?P<word>.+?)\s+(?:/[^<]*/\s*)*<(?P<pos>[^>]+)>\s*$")
SENSE = re.compile(r"^\d+\.\s+\S")
WORD = re.compile(r"^[a-z][a-z' -]*$")
HEADER = """# Indonesian -> English words reversed from FreeDict's English-Bahasa Indonesia dictionary (FreeDict + WikDict,
# from Wiktionary via DBnary), edition {edition}, Debian package dict-freedict-eng-ind.
# Licence: Creative Commons Attribution-ShareAlike 3.0 Unported (https://creativecommons.org/licenses/by-sa/3.0/);
# this file is a derivative under the same licence. Built by scripts/build_freedict_glossary.py.
# Format: indonesian<TAB>english / english / ... (English headwords in dictionary order).
"""


def number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + B64[char]
    return value


def entries(folder: Path):
    """(English headword, part of speech, Indonesian translations) of every dictionary entry."""
    raw = gzip.open(folder / "freedict-eng-ind.dict.dz").read()
    for line in (folder / "freedict-eng-ind.index").read_text(encoding="utf-8").splitlines():
        head, offset, length = line.split("\t")[:3]
        if head.startswith("00-"):
            continue
        lines = raw[number(offset):number(offset) + number(length)].decode("utf-8").splitlines()
        match = HEAD.match(lines[0]) if lines else None
        if not match:
            continue
        translations = [lines[1]] + [ln for ln in lines[2:] if SENSE.match(ln)] if len(lines) > 1 else []
        words = []
        for text in translations:
            text = re.sub(r"\s+\d+\.$", "", re.sub(r"^\d+\.\s*", "", text.strip()))
            words += [w.strip().lower() for w in text.split(",") if w.strip()]
        yield match["word"].strip(), match["pos"], words


def edition(folder: Path) -> str:
    head = gzip.open(folder / "freedict-eng-ind.dict.dz").read(4000).decode("utf-8", "replace")
    found = re.search(r"Edition:\s*(\S+)", head)
    return found[1] if found else "unknown"


def build(folder: Path) -> dict[str, list[str]]:
    reverse: dict[str, list[str]] = {}
    for english, pos, indonesian in entries(folder):
        english = english.lower()
        if pos in ("pn", "prefix", "suffix") or not WORD.match(english) or len(english.split()) > 3:
            continue
        for word in indonesian:
            if WORD.match(word) and len(word.split()) <= 3 and word != english:
                targets = reverse.setdefault(word, [])
                if english not in targets:
                    targets.append(english)
    return reverse


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    reverse = build(folder)
    lines = [f"{word}\t{' / '.join(targets[:4])}" for word, targets in sorted(reverse.items())]
    out.write_text(HEADER.format(edition=edition(folder)) + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out}: {len(lines)} Indonesian words and phrases")


if __name__ == "__main__":
    main()
