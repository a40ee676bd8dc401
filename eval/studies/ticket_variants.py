"""Study (issue 13): ticket-query and code-matching variants on a tuning set and a check set side by side, with
paired bootstrap intervals of each variant's difference from the service.

Usage: python eval/studies/ticket_variants.py INDEX_DIR TUNE_SET CHECK_SET [more sets ...]
The decision rule: a variant is kept only if it does not lose on the tuning set and wins on the check set(s).
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from study import open_searcher, read_ticket_set

from search.fusion import FusionWeights, fuse_scores
from kb.index import PhraseQuery
from search.lexical import TOKEN
from search.searcher import Query, make_query
from search.ticket_evaluation import article_metrics, ticket_query
from search.tickets import build_query, clean_ticket, split_sentences, score_sentence

S = open_searcher(sys.argv[1])
N = len(S.row_article)


def code_rows(code: str, near: bool) -> set[int]:
    tokens = TOKEN.findall(code.lower())
    if not tokens:
        return set()
    query = PhraseQuery((tuple(tokens),))
    if near and tokens[0] == "error" and len(tokens) == 2:  # "error 30088" also as "error code 30088"
        query = PhraseQuery((("error",), (tokens[1],)), near=2)
    return set(S.version.phrase_search(query, 5000).keys)


def code_bonus(codes, near: bool, idf: bool) -> dict[int, float]:
    out: dict[int, float] = {}
    for code in codes:
        rows = code_rows(code, near)
        if not rows:
            continue
        weight = min(1.0, math.log(N / len(rows)) / math.log(N / 5)) if idf else 1.0  # full bonus up to 5 passages
        for r in rows:
            out[r] = out.get(r, 0.0) + weight
    return out


def full_text(item) -> str:
    sents = split_sentences(clean_ticket(item.get("text", "")))
    kept = [s for k, s in enumerate(sents) if score_sentence(s, k) > float("-inf")]
    return " ".join([item.get("subject", ""), *kept])


def query_of(item, words: int) -> Query:
    ticket = build_query(item.get("subject", ""), item.get("text", ""), language=item.get("lang"), max_words=words)
    return make_query(ticket, item["text"], S.glossary, S.embed)


def rank_articles(query: Query, codes: dict | None, near=False, idf=False) -> list[str]:
    dense, lexical, hits = S.candidates(dataclasses.replace(query, codes=()) if codes is not None else query)
    if codes is None:
        bonus = {r: float(c) for r, c in S.candidates(query, lexical_only=True)[2].items()}
    else:
        bonus = code_bonus(query.codes, near, idf)
    extra = [r for r in bonus if r not in dense]
    if extra:
        vecs = S.encoder.encode_queries([query.dense, *query.alternatives])
        dense.update(zip(extra, (S.version.vectors(extra) @ vecs.T).max(axis=1).tolist()))
    scores = fuse_scores(dense, lexical, bonus, S.weights_for(query))
    return [a for a, _, _ in S.group_articles(scores, 10)]


def variants(item):
    base = ticket_query(item, S)
    out = {"service": lambda: rank_articles(base, None)}
    out["codes near"] = lambda: rank_articles(base, {}, near=True)
    out["codes idf"] = lambda: rank_articles(base, {}, idf=True)
    out["codes near+idf"] = lambda: rank_articles(base, {}, near=True, idf=True)
    out["no codes"] = lambda: rank_articles(dataclasses.replace(base, codes=()), {})
    if item.get("kind") != "query":
        for words in (120, 200):
            out[f"words {words}"] = (lambda w: lambda: rank_articles(query_of(item, w), None))(words)
        q = base
        whole = full_text(item)
        if q.language == "id" and S.glossary is not None:
            whole_en = S.glossary.translate(whole)
            alt = dataclasses.replace(q, alternatives=tuple(q.alternatives) + (whole_en,))
        else:
            alt = dataclasses.replace(q, alternatives=tuple(q.alternatives) + (whole,))
        out["+whole ticket vector"] = lambda: rank_articles(alt, None)
        out["+whole, near+idf"] = lambda: rank_articles(alt, {}, near=True, idf=True)
    return out


def groups(item):
    lang, kind = item.get("lang", "en"), item.get("kind", "ticket")
    return ("all", f"{lang} {kind}")


def run(folder):
    qrels, queries = read_ticket_set(folder)
    items = [q for q in queries if q["id"] in qrels]
    per: dict[str, dict[str, list]] = {}
    for item in items:
        for name, fn in variants(item).items():
            m = article_metrics(fn(), qrels[item["id"]])
            for g in groups(item):
                per.setdefault(g, {}).setdefault(name, []).append((item["id"], m["MRR@10"], m["R@3"]))
    return per


def boot(diff: np.ndarray, n=2000, seed=0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


for folder in sys.argv[2:]:
    per = run(folder)
    print(f"\n## {folder}\n| group | variant | n | MRR@10 | R@3 | dMRR vs service [95% CI] | dR@3 |\n|---|---|---|---|---|---|---|")
    for g, table in per.items():
        base = {i: (m, r) for i, m, r in table["service"]}
        for name, rows in table.items():
            mrr = np.array([m for _, m, _ in rows]); r3 = np.array([r for _, _, r in rows])
            d = np.array([m - base[i][0] for i, m, _ in rows]); d3 = np.array([r - base[i][1] for i, _, r in rows])
            lo, hi = boot(d)
            print(f"| {g} | {name} | {len(rows)} | {mrr.mean():.3f} | {r3.mean():.3f} | {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {d3.mean():+.3f} |")
