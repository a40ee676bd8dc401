"""Lexical arm: query text -> content words -> the index's BM25 and exact-phrase search, scores per passage key."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kb.index import IndexReader, PhraseHits, PhraseQuery, Selection, TermQuery

# Words that carry no topic in English or Indonesian support text; dropped from the MATCH expression.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can cannot could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just me more most my no nor not of off on once only or other our
out over own same she should so some such than that the their them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours
im ive dont cant doesnt didnt wont isnt hi hello dear thanks thank please regards team help issue problem get
got also still any anyone someone something now today yesterday
yang dan di ke dari ini itu dengan untuk pada adalah akan ada tidak bisa saya kami kita anda mereka sudah belum
juga atau karena jika kalau agar supaya sebagai oleh dalam tersebut sangat lagi hanya masih harus dapat mohon
tolong bantu bantuan terima kasih halo hai selamat pagi siang sore malam apakah bagaimana kenapa mengapa gimana
nya ya sih dong kok tapi tetapi namun setelah sebelum saat ketika sini situ begitu seperti
""".split())

TOKEN = re.compile(r"\w+", re.UNICODE)


def extract_terms(text: str, limit: int = 64) -> list[str]:
    """Distinct lower-case content words of `text`, in order of first appearance, at most `limit`."""
    terms: dict[str, None] = {}
    for token in TOKEN.findall(text.lower()):
        if token in STOP_WORDS or (len(token) < 2 and not token.isdigit()) or token.replace("_", "") == "":
            continue
        terms.setdefault(token, None)
        if len(terms) >= limit:
            break
    return list(terms)


def prune_terms(terms: list[str], df: dict[str, int], total: int, max_share: float = 0.1, min_df: int = 1000,
                min_terms: int = 3, max_terms: int | None = None) -> list[str]:
    """Drop words with long posting lists (in over `max_share` of passages and over `min_df` passages).

    Such words cost most of a BM25 query's time and add least to its ranking; on small knowledge bases
    nothing is dropped (measured: dropping at 10% of stackfaq's 719 docs cost the lexical arm 0.04 MRR).
    A query made only of common words keeps its `min_terms` rarest, so it still matches. No count cap: a cap on
    the rarest words spent itself on words no passage has (an Indonesian ticket's own words) and pushed out their
    English rendering and long tickets' topic words (docs/quality.md, "The lexical arm against plain BM25");
    `max_terms` keeps such a cap for eval/studies/lexical_arm.py.
    """
    if not df or total <= 0:
        return terms[:max_terms]
    limit = max(max_share * total, min_df)
    by_rarity = sorted(terms, key=lambda t: df.get(t, 0))
    chosen = set(([t for t in by_rarity if df.get(t, 0) <= limit] or by_rarity[:min_terms])[:max_terms])
    return [t for t in terms if t in chosen]


@dataclass(frozen=True)
class TermBudget:
    """How many postings a lexical query may read on a large knowledge base: above `above` passages, its known words'
    summed passage counts stay within `share` x passages (KB_LEXICAL_BUDGET, KB_LEXICAL_BUDGET_ABOVE); share 0: none."""

    share: float = 0.0
    above: int = 0
    min_terms: int = 3  # the rarest known words always kept, whatever they read, so that the query still matches

    def applies(self, total: int) -> bool:
        return self.share > 0 and total > self.above


def spend_budget(terms: list[str], df: dict[str, int], total: int, budget: TermBudget | None) -> list[str]:
    """`terms` (in their order) bounded by what BM25 reads: its known words from the rarest up while their summed
    passage counts fit `budget.share` x `total` (at least `budget.min_terms` of them); words no passage has read no
    posting list and are all kept (an Indonesian ticket's own words, typos), so they take nothing from the budget
    of the rest (its English rendering, error codes, topic words). Unchanged where the budget does not apply.

    A query's BM25 time grows with the postings it reads (sum of df, corpus-relative: replicating a corpus keeps
    each word's share); df counts passages holding the word as written, which under-counts its Porter stem's list.
    """
    if budget is None or not budget.applies(total) or not df:
        return terms
    limit, spent, kept = budget.share * total, 0, set()
    for n, term in enumerate(sorted((t for t in terms if df.get(t, 0) > 0), key=lambda t: df[t])):
        if n >= max(budget.min_terms, 1) and spent + df[term] > limit:
            break  # rarest first: every later word reads at least as much
        kept.add(term)
        spent += df[term]
    return [t for t in terms if t in kept or df.get(t, 0) == 0]


def term_query(text: str, weights: tuple[float, float, float] = (2.0, 1.5, 1.0), df: dict[str, int] | None = None,
               total: int = 0, budget: TermBudget | None = None) -> TermQuery:
    """The BM25 query of `text`: its content words, common ones pruned (prune_terms), bounded by `budget`."""
    return TermQuery(tuple(spend_budget(prune_terms(extract_terms(text), df or {}, total), df or {}, total, budget)),
                     weights)


def search_lexical(index: IndexReader, text: str, limit: int,
                   weights: tuple[float, float, float] = (2.0, 1.5, 1.0),
                   df: dict[str, int] | None = None, total: int = 0,
                   selection: Selection | None = None, budget: TermBudget | None = None) -> dict[int, float]:
    """Passage key -> BM25 score (higher is better) for the best `limit` passages."""
    query = term_query(text, weights, df, total, budget)
    return index.lexical_search(query, limit, selection) if query.terms else {}


def code_query(code: str) -> PhraseQuery:
    """The phrase query of one normalised code: its exact tokens ("5.7.124" -> 5 7 124); "error 30088" (the ticket
    cleaner's form of "error 30088", "error code 30088", "kode kesalahan 30088") also as "error code 30088" and
    "error: code 30088"."""
    tokens = tuple(TOKEN.findall(code.lower()))
    if len(tokens) >= 2 and tokens[0] == "error" and tokens[1].isdigit():
        return PhraseQuery(((tokens[0],), tokens[1:]), near=2)
    return PhraseQuery((tokens,))


def code_rows(index: IndexReader, codes: list[str], limit: int = 1000,
              selection: Selection | None = None) -> dict[str, PhraseHits]:
    """Code -> the passages containing it (at most `limit`: a code in more passages is hardly a clue)."""
    return {code: index.phrase_search(code_query(code), limit, selection)
            for code in dict.fromkeys(codes) if TOKEN.findall(code)}


def search_codes(index: IndexReader, codes: list[str], limit: int = 1000) -> dict[int, int]:
    """Passage key -> number of the exact `codes` it contains."""
    hits: dict[int, int] = {}
    for found in code_rows(index, codes, limit).values():
        for key in found.keys:
            hits[key] = hits.get(key, 0) + 1
    return hits


RARE_CODE_PASSAGES = 5  # a code found in at most this many passages is specific: its match counts in full


def code_weight(found: int, total: int) -> float:
    """How much finding a code says, by its rarity: 1 up to RARE_CODE_PASSAGES passages, falling with the log of
    the passages it is in, 0 for a code in every passage (a common code such as 0x80070005 in dozens of passages
    pulls toward all of them alike)."""
    if found <= RARE_CODE_PASSAGES or total <= RARE_CODE_PASSAGES:
        return 1.0
    return max(0.0, math.log(total / found) / math.log(total / RARE_CODE_PASSAGES))


def weigh_codes(index: IndexReader, codes: list[str], total: int, limit: int = 1000,
                selection: Selection | None = None) -> dict[int, float]:
    """Passage key -> the summed rarity weight (code_weight, by every passage the code is in) of the exact `codes`
    it contains, for the passages `selection` admits."""
    weights: dict[int, float] = {}
    for found in code_rows(index, codes, limit, selection).values():
        weight = code_weight(found.found, total)
        for key in found.keys:
            weights[key] = weights.get(key, 0.0) + weight
    return weights
