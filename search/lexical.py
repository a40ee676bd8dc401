"""Lexical arm: query text -> SQLite FTS5 MATCH expression -> BM25 scores per passage row."""
from __future__ import annotations

import math
import re
import sqlite3

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


def quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def match_expression(terms: list[str]) -> str:
    """OR of quoted terms: any matching term scores, BM25 ranks by how many and how rare."""
    return " OR ".join(quote(t) for t in terms)


def phrase_expression(code: str) -> str:
    """A phrase of the code's tokens ("5.7.124" -> "5 7 124"), so the exact identifier must appear."""
    return quote(" ".join(TOKEN.findall(code.lower())))


def prune_terms(terms: list[str], df: dict[str, int], total: int, max_share: float = 0.1, min_df: int = 1000,
                max_terms: int = 32, min_terms: int = 3) -> list[str]:
    """Drop words with long posting lists (in over `max_share` of passages and over `min_df` passages).

    Such words cost most of a BM25 query's time and add least to its ranking; on small knowledge bases
    nothing is dropped (measured: dropping at 10% of stackfaq's 719 docs cost the lexical arm 0.04 MRR).
    A query made only of common words keeps its `min_terms` rarest, so it still matches.
    """
    if not df or total <= 0:
        return terms[:max_terms]
    limit = max(max_share * total, min_df)
    by_rarity = sorted(terms, key=lambda t: df.get(t, 0))
    keep = [t for t in by_rarity if df.get(t, 0) <= limit] or by_rarity[:min_terms]
    chosen = set(keep[:max_terms])
    return [t for t in terms if t in chosen]


def search_lexical(db: sqlite3.Connection, text: str, limit: int,
                   weights: tuple[float, float, float] = (2.0, 1.5, 1.0),
                   df: dict[str, int] | None = None, total: int = 0) -> dict[int, float]:
    """Passage row -> BM25 score (higher is better) for the best `limit` passages."""
    terms = prune_terms(extract_terms(text), df or {}, total)
    if not terms:
        return {}
    sql = (f"SELECT rowid, -bm25(passages_fts, {weights[0]}, {weights[1]}, {weights[2]}) AS score "
           "FROM passages_fts WHERE passages_fts MATCH ? ORDER BY score DESC LIMIT ?")
    return {row: score for row, score in db.execute(sql, (match_expression(terms), limit))}


def code_expression(code: str) -> str:
    """The MATCH expression of one normalised code: its exact phrase; "error 30088" (the ticket cleaner's form of
    "error 30088", "error code 30088", "kode kesalahan 30088") also as "error code 30088" and "error: code 30088"."""
    tokens = TOKEN.findall(code.lower())
    if len(tokens) >= 2 and tokens[0] == "error" and tokens[1].isdigit():
        return f"NEAR({quote(tokens[0])} {quote(' '.join(tokens[1:]))}, 2)"
    return phrase_expression(code)


def code_rows(db: sqlite3.Connection, codes: list[str], limit: int = 1000) -> dict[str, list[int]]:
    """Code -> the passage rows containing it (at most `limit`: a code in more passages is hardly a clue)."""
    out: dict[str, list[int]] = {}
    for code in dict.fromkeys(codes):
        if TOKEN.findall(code):
            out[code] = [row for (row,) in db.execute("SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? "
                                                      "LIMIT ?", (code_expression(code), limit))]
    return out


def search_codes(db: sqlite3.Connection, codes: list[str], limit: int = 1000) -> dict[int, int]:
    """Passage row -> number of the exact `codes` it contains."""
    hits: dict[int, int] = {}
    for rows in code_rows(db, codes, limit).values():
        for row in rows:
            hits[row] = hits.get(row, 0) + 1
    return hits


RARE_CODE_PASSAGES = 5  # a code found in at most this many passages is specific: its match counts in full


def code_weight(found: int, total: int) -> float:
    """How much finding a code says, by its rarity: 1 up to RARE_CODE_PASSAGES passages, falling with the log of
    the passages it is in, 0 for a code in every passage (a common code such as 0x80070005 in dozens of passages
    pulls toward all of them alike)."""
    if found <= RARE_CODE_PASSAGES or total <= RARE_CODE_PASSAGES:
        return 1.0
    return max(0.0, math.log(total / found) / math.log(total / RARE_CODE_PASSAGES))


def weigh_codes(db: sqlite3.Connection, codes: list[str], total: int, limit: int = 1000) -> dict[int, float]:
    """Passage row -> the summed rarity weight (code_weight) of the exact `codes` it contains."""
    weights: dict[int, float] = {}
    for rows in code_rows(db, codes, limit).values():
        weight = code_weight(len(rows), total)
        for row in rows:
            weights[row] = weights.get(row, 0.0) + weight
    return weights
