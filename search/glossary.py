"""Indonesian -> English glossary translation of ticket text, so English articles can answer Indonesian tickets."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable

GLOSSARY_FILE = resources.files("search") / "glossary_id_en.tsv"  # package data, shipped in the wheel
WORD = re.compile(r"\w+(?:[-']\w+)*", re.UNICODE)
PUNCTUATION = ".,;:!?\"'()[]{}<>«»“”‘’"
# Function words dropped from the translation (they would only be noise to an English model).
DROP = frozenset("""yang dan di ke dari ini itu dengan untuk pada adalah akan ada saya aku kami kita anda kamu mereka
dia ia sudah telah juga atau karena jika kalau agar supaya sebagai oleh dalam tersebut sangat lagi hanya masih
harus dapat mohon tolong bantu bantuannya terima kasih halo hai selamat pagi siang sore malam apakah bagaimana
kenapa mengapa gimana nya ya sih dong kok tapi tetapi namun sini situ begitu seperti pak bu bapak ibu mas mbak
kak tim yth hormat salam deh nih kah lah pun jadi sama bisa""".split())


@dataclass(frozen=True)
class Glossary:
    """Phrases (up to `longest` words) mapped to their English support terms."""

    entries: dict[tuple[str, ...], str]
    longest: int

    def translate(self, text: str) -> str:
        """Word-by-word English rendering: glossary phrases replaced (longest first), function words dropped,
        everything else (product names, error codes, English words) kept in place."""
        words = [(chunk, chunk.strip(PUNCTUATION).lower()) for chunk in text.split()]
        out, i = [], 0
        while i < len(words):
            for size in range(min(self.longest, len(words) - i), 0, -1):
                key = tuple(w for _, w in words[i:i + size])
                if key in self.entries:
                    out.append(self.entries[key])
                    i += size
                    break
            else:
                original, lower = words[i]
                if lower and lower not in DROP:
                    out.append(original)
                i += 1
        return " ".join(out)


def parse_glossary(text: str) -> Glossary:
    entries: dict[tuple[str, ...], str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or "\t" not in line:
            continue
        source, target = line.split("\t", 1)
        key = tuple(w.lower() for w in WORD.findall(source))
        if key:
            entries[key] = target.split(" / ")[0].strip()
    return Glossary(entries, max((len(k) for k in entries), default=1))


@lru_cache(maxsize=1)
def load_glossary(path: Traversable = GLOSSARY_FILE) -> Glossary:
    """The packaged glossary (empty when the file is missing)."""
    return parse_glossary(path.read_text(encoding="utf-8") if path.is_file() else "")


# Words of the glossary's Indonesian phrases that English support text uses too (each at least 5 times in
# md-office-support-kb): no evidence of Indonesian.
ALSO_ENGLISH = frozenset("cache cas force ga hp ini item login logout map program setting".split())


@lru_cache(maxsize=1)
def indonesian_vocabulary() -> frozenset[str]:
    """Words of the glossary's Indonesian phrases that no English rendering uses and English text does not
    ("sandi", "meminta"; not "login"): evidence of Indonesian in a query without function words."""
    glossary = load_glossary()
    english = {w for target in glossary.entries.values() for w in WORD.findall(target.lower())}
    return frozenset(w for key in glossary.entries for w in key if not w.isdigit()) - english - ALSO_ENGLISH
