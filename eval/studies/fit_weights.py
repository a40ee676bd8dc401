"""Study (issue 13): the fusion weights fitted by a pairwise logistic model (RankNet-style, no intercept, the dense
weight fixed at 1) on the tuning set under 5-fold cross-validation by query, against the hand-set weights; then fitted
on the whole tuning set and applied to the check sets. Per language where the tuning set has enough queries.

Features of a candidate passage: min-max normalised cosine and BM25 of the query, and the rarity-weighted exact codes
(search/signals.py). A pair is a passage of a best article (relevance 2) against a passage of an unlabelled article
among the query's 50 best candidates by the service's score.

Usage: python eval/studies/fit_weights.py INDEX_DIR TUNE_SET [CHECK_SET ...]
"""
from __future__ import annotations

import sys

import numpy as np
from study import open_searcher, read_ticket_set

from search.fusion import LinearCombiner, normalise_minmax, rank
from search.ticket_evaluation import article_metrics, ticket_query

S = open_searcher(sys.argv[1])
NAMES = ("lexical", "codes")


def prepared(folder):
    qrels, queries = read_ticket_set(folder)
    out = []
    for item in queries:
        if item["id"] not in qrels:
            continue
        query = ticket_query(item, S)
        found = S.collect(query)
        rows = sorted(found.rows)
        dense, lexical = normalise_minmax(found.get("dense")), normalise_minmax(found.get("lexical"))
        codes = found.get("codes")
        x = np.array([[dense.get(r, 0.0), lexical.get(r, 0.0), codes.get(r, 0.0)] for r in rows])
        service = found.combined(S.combiner_for(query))
        out.append({"id": item["id"], "lang": item.get("lang", "en"), "rows": rows, "x": x, "labels": qrels[item["id"]],
                    "service": service, "query": query})
    return out


def pairs(data):
    diffs = []
    for q in data:
        top = set(rank(q["service"])[:50])
        best = {a for a, r in q["labels"].items() if r >= 2}
        arts = [S.row_article[r] for r in q["rows"]]
        pos = [k for k, a in enumerate(arts) if a in best]
        neg = [k for k, (r, a) in enumerate(zip(q["rows"], arts)) if r in top and a not in q["labels"]]
        for p in pos:
            for n in neg:
                diffs.append(q["x"][p] - q["x"][n])
    return np.array(diffs)


def fit(data, l2=1.0, steps=30):
    d = pairs(data)
    if not len(d):
        return np.array([0.07, 0.5])
    base, x = d[:, 0], d[:, 1:]  # dense weight fixed at 1: score = dense + w . others
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        z = base + x @ w
        p = 1 / (1 + np.exp(-z))
        g = -x.T @ (1 - p) + l2 * w / len(d) * 100
        h = (x * (p * (1 - p))[:, None]).T @ x + l2 / len(d) * 100 * np.eye(len(w))
        w -= np.linalg.solve(h, g)
    return w


GRID = [np.array([lex, code]) for lex in (0.0, 0.03, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5)
        for code in (0.0, 0.25, 0.5, 1.0)]


def fit_grid(data):
    """The grid point with the best mean MRR@10 on `data` (ties: the smaller weights)."""
    return max(GRID, key=lambda w: (round(mean([score(q, w) for q in data]), 6), -w.sum()))


def score(q, w):
    s = q["x"][:, 0] + q["x"][:, 1:] @ w
    scores = dict(zip(q["rows"], s.tolist()))
    ranking = [a for a, _, _ in S.group_articles(scores, 10)]
    return article_metrics(ranking, q["labels"])


def service(q):
    return article_metrics([a for a, _, _ in S.group_articles(q["service"], 10)], q["labels"])


def mean(ms, key="MRR@10"):
    return sum(m[key] for m in ms) / max(1, len(ms))


tune = prepared(sys.argv[2])
rng = np.random.default_rng(13)
folds = rng.permutation(len(tune)) % 5
for lang in ("all", "en", "id"):
    chosen = [k for k, q in enumerate(tune) if lang in ("all", q["lang"])]
    cv, grid, hand = [], [], []
    for f in range(5):
        train = [tune[k] for k in chosen if folds[k] != f]
        test = [tune[k] for k in chosen if folds[k] == f]
        w, g = fit(train), fit_grid(train)
        cv += [score(q, w) for q in test]
        grid += [score(q, g) for q in test]
        hand += [service(q) for q in test]
    w_all, g_all = fit([tune[k] for k in chosen]), fit_grid([tune[k] for k in chosen])
    print(f"tune {lang}: n={len(chosen)} 5-fold CV MRR@10: pairwise {mean(cv):.3f} (R@3 {mean(cv, 'R@3'):.3f}), "
          f"grid {mean(grid):.3f} ({mean(grid, 'R@3'):.3f}), service {mean(hand):.3f} ({mean(hand, 'R@3'):.3f}); "
          f"on all: pairwise lexical {w_all[0]:.3f} codes {w_all[1]:.3f}, grid lexical {g_all[0]} codes {g_all[1]}")
weights = {lang: fit_grid([q for q in tune if lang in ("all", q["lang"])]) for lang in ("all", "en", "id")}
for folder in sys.argv[3:]:
    data = prepared(folder)
    for lang in ("all", "en", "id"):
        sel = [q for q in data if lang in ("all", q["lang"])]
        one = [score(q, weights["all"]) for q in sel]
        per = [score(q, weights[q["lang"]]) for q in sel]
        hand = [service(q) for q in sel]
        print(f"check {folder} {lang}: n={len(sel)} MRR@10 service {mean(hand):.3f} (R@3 {mean(hand, 'R@3'):.3f}), "
              f"fitted one {mean(one):.3f} ({mean(one, 'R@3'):.3f}), fitted per language {mean(per):.3f} ({mean(per, 'R@3'):.3f})")
