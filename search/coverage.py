"""Products the knowledge base covers, and other vendors' products it never mentions: a query about only those has no
good answer here, however close its symptom is to one the knowledge base documents (a Zoom screen-sharing question
lands on a Teams screen-sharing article)."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Iterable, Mapping

from search.lexical import STOP_WORDS, TOKEN

OTHER_PRODUCTS_FILE = files("search").joinpath("other_products.txt")
TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+")
MIN_TITLES = 2  # a covered product is named, capitalised, in at least this many titles
CAPITALISED_SHARE = 0.9  # ... and capitalised in at least this share of the titles that hold it


@lru_cache(maxsize=1)
def other_products() -> frozenset[str]:
    """The shipped list of other vendors' workplace software (search/other_products.txt)."""
    lines = (line.split("#", 1)[0].strip().lower() for line in OTHER_PRODUCTS_FILE.read_text("utf-8").splitlines())
    return frozenset(line for line in lines if line)


def covered_products(titles: Iterable[str], products: Iterable[str] = ()) -> frozenset[str]:
    """Lower-case names of what the knowledge base documents: its articles' product fields, and the words its
    titles write as proper nouns ("Outlook", "SharePoint", "OWA"), capitalised in at least MIN_TITLES titles and in
    at least CAPITALISED_SHARE of their places. A title's first word counts too, so a word that only ever starts
    titles ("Fix ...") may pass: that errs towards calling a query covered, which leaves its confidence alone."""
    upper, lower = Counter(), Counter()
    for title in titles:
        for word in set(TITLE_WORD.findall(title or "")):
            (upper if word[0].isupper() else lower)[word.lower()] += 1
    named = {w for w, n in upper.items()
             if n >= MIN_TITLES and n >= CAPITALISED_SHARE * (n + lower[w]) and w not in STOP_WORDS}
    return frozenset(named | {w for p in products for w in TOKEN.findall((p or "").lower())})


@dataclass(frozen=True)
class Coverage:
    """`covered`: product names of this knowledge base; `uncovered`: other vendors' products none of its passages
    mention."""

    covered: frozenset[str]
    uncovered: frozenset[str]

    @classmethod
    def of(cls, titles: Iterable[str], products: Iterable[str], term_df: Mapping[str, int],
           others: frozenset[str] | None = None) -> Coverage:
        others = other_products() if others is None else others
        return cls(covered_products(titles, products), frozenset(p for p in others if not term_df.get(p)))

    @classmethod
    def of_articles(cls, articles: Mapping[str, Mapping], term_df: Mapping[str, int]) -> Coverage:
        """The coverage of an index's articles (id -> metadata with "title" and "product", as Searcher.articles)."""
        return cls.of([a["title"] for a in articles.values()], {a["product"] for a in articles.values()}, term_df)

    def outside(self, head: str) -> str | None:
        """The uncovered product `head` names (as written there) when it names no covered one, else None."""
        words = TOKEN.findall(head or "")
        if not self.uncovered or any(w.lower() in self.covered for w in words):
            return None
        return next((w for w in words if w.lower() in self.uncovered), None)
