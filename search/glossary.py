"""Indonesian -> English glossary translation of ticket text, so English articles can answer Indonesian tickets."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Mapping

GLOSSARY_FILE = resources.files("search") / "glossary_id_en.tsv"  # package data, shipped in the wheel
DICTIONARY_FILE = resources.files("search") / "glossary_freedict_id_en.tsv"  # FreeDict, CC BY-SA 3.0
WORD = re.compile(r"\w+(?:[-']\w+)*", re.UNICODE)
PUNCTUATION = ".,;:!?\"'()[]{}<>«»“”‘’"
# Function words dropped from the translation (they would only be noise to an English model).
DROP = frozenset("""yang dan di ke dari ini itu dengan untuk pada adalah akan ada saya aku kami kita anda kamu mereka
dia ia sudah telah juga atau karena jika kalau agar supaya sebagai oleh dalam tersebut sangat lagi hanya masih
harus dapat mohon tolong bantu bantuannya terima kasih halo hai selamat pagi siang sore malam apakah bagaimana
kenapa mengapa gimana nya ya sih dong kok tapi tetapi namun sini situ begitu seperti pak bu bapak ibu mas mbak
kak tim yth hormat salam deh nih kah lah pun jadi sama bisa""".split())

# A word in at least this many passages of the knowledge base is its own vocabulary, kept untranslated (tickets-dev:
# 10 and 30 alike, 3 lost an Indonesian query; tickets-check: Indonesian R@3 0.875 -> 0.917; docs/quality.md).
KEEP_MIN_DF = 10


@dataclass(frozen=True)
class Glossary:
    """Phrases (up to `longest` words) mapped to their English support terms: the hand-written glossary first, then
    the words it lacks from a dictionary (`fallback`, FreeDict's), exactly or by their Indonesian stem."""

    entries: dict[tuple[str, ...], str]
    longest: int
    fallback: dict[tuple[str, ...], str] = field(default_factory=dict)
    stems: dict[str, str] = field(default_factory=dict)   # one-word fallback entry -> English, for words stemming to it
    english: frozenset[str] = frozenset()                 # words the dictionary knows as English: kept as they are
    alternatives: dict[tuple[str, ...], list[str]] = field(default_factory=dict, repr=False)  # unresolved fallback

    def translate(self, text: str) -> str:
        """Word-by-word English rendering: glossary phrases replaced (longest first), then dictionary phrases and
        words, function words dropped, everything else (product names, error codes, English words) kept in place."""
        words = [(chunk, chunk.strip(PUNCTUATION).lower()) for chunk in text.split()]
        out, i = [], 0
        while i < len(words):
            size, english = self._match(words, i)
            if size:
                out.append(english)
                i += size
                continue
            original, lower = words[i]
            if lower and lower not in DROP:
                out.append(self._word(original, lower))
            i += 1
        return " ".join(out)

    @cached_property
    def _phrase_starts(self) -> tuple[frozenset[str], frozenset[str]]:
        """First words of the phrases (two words or more) of the glossary and of the dictionary: at any other word
        only one-word entries can match."""
        return tuple(frozenset(key[0] for key in table if len(key) > 1) for table in (self.entries, self.fallback))

    def _match(self, words: list[tuple[str, str]], i: int) -> tuple[int, str]:
        first = words[i][1]
        for table, longest, starts in ((self.entries, self.longest, self._phrase_starts[0]),
                                       (self.fallback, FALLBACK_LONGEST, self._phrase_starts[1])):
            for size in range(min(longest, len(words) - i) if first in starts else 1, 0, -1):
                key = tuple(w for _, w in words[i:i + size])
                if size == 1 and table is self.fallback and key[0] in self.english:
                    continue  # an English word (or an Indonesian loanword spelt the same): kept
                if key in table:
                    return size, table[key]
        return 0, ""

    def _word(self, original: str, lower: str) -> str:
        if self.stems and lower.isalpha() and lower not in self.english and len(lower) > 3:
            stem = indonesian_stem(lower)
            if stem in self.stems and indonesian_stem(stem) == stem:  # only a root word answers (see for_vocabulary)
                return self.stems[stem]
        return original

    def for_vocabulary(self, df: Mapping[str, int], keep_min_df: int = KEEP_MIN_DF) -> Glossary:
        """The dictionary's alternatives resolved for one knowledge base: the English word its passages use most
        (so "sandi" is "password" in an IT knowledge base), the dictionary's first when none is used. Words its
        passages use (in at least `keep_min_df` of them) are kept as written, as the dictionary's English words are:
        "per" stays "per" (not "spring"), "Notes" stays "Notes" (not "notebook")."""
        used = frozenset(w for w, n in df.items() if n >= keep_min_df and w.isalpha())
        self = dataclasses.replace(self, english=self.english | used)
        if not self.alternatives:
            return self
        choose = lambda options: max(options, key=lambda o: (min(df.get(w, 0) for w in o.split()), -options.index(o)))
        fallback = {key: choose(options) for key, options in self.alternatives.items()}
        # only root words answer for their inflections ("tertahan" -> "tahan": "hold"): a derived word sharing the stem
        # may mean something else ("pertahanan": "defense"). Whether an entry is a root is asked when a word is looked
        # up (`_word`), not here: stemming the dictionary's ~7,300 one-word entries took 0.46 s (under cProfile) of
        # every process that opened an index (`kb search` 1.58 -> 1.46 s median, docs/benchmarks.md)
        stems = {key[0]: english for key, english in fallback.items() if len(key) == 1}
        return dataclasses.replace(self, fallback=fallback, stems=stems)


FALLBACK_LONGEST = 3


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


def parse_dictionary(text: str) -> dict[tuple[str, ...], list[str]]:
    """indonesian<TAB>english / english ... lines -> {phrase: [English alternatives]}."""
    out: dict[tuple[str, ...], list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or "\t" not in line:
            continue
        source, target = line.split("\t", 1)
        key = tuple(w.lower() for w in WORD.findall(source))
        options = [t.strip() for t in target.split(" / ") if t.strip()]
        if key and options:
            out[key] = options
    return out


@lru_cache(maxsize=1)
def load_glossary(path: Traversable = GLOSSARY_FILE, dictionary: Traversable = DICTIONARY_FILE) -> Glossary:
    """The packaged glossary (empty when the file is missing) with the packaged dictionary as its fallback,
    unresolved: `for_vocabulary` picks each word's English alternative for a knowledge base."""
    glossary = parse_glossary(path.read_text(encoding="utf-8") if path.is_file() else "")
    alternatives = parse_dictionary(dictionary.read_text(encoding="utf-8")) if dictionary.is_file() else {}
    alternatives = {k: v for k, v in alternatives.items() if k not in glossary.entries}
    english = frozenset(w for options in alternatives.values() for o in options for w in o.split())
    return dataclasses.replace(glossary, fallback={k: v[0] for k, v in alternatives.items()}, english=english,
                               alternatives=alternatives)


@lru_cache(maxsize=65536)  # the dictionary's 10,000 words are stemmed once per process, not per index swap
def indonesian_stem(word: str) -> str:
    """The Snowball Indonesian stem ("dibagikan" -> "bagi"), for dictionary look-ups of inflected words."""
    return _stemmer().stemWord(word)


@lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer  # pure Python (BSD-3); the Snowball project's Indonesian stemmer

    return snowballstemmer.stemmer("indonesian")


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
