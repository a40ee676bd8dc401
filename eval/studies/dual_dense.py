"""Side study (issue 13): a second dense arm read by multilingual-e5-small beside MiniLM, on tune and check sets.

Usage: python eval/studies/dual_dense.py MINILM_INDEX_DIR E5_INDEX_DIR TUNE_SET CHECK_SET [MORE_CHECK_SETS...]
(both indexes built from the same content with `kb index`, the second with KB_MODEL=multilingual-e5-small).

For every query the service's signals (MiniLM dense over the glossary rendering, lexical, codes, language) are
collected as the service does; the e5 arm adds its own nearest passages and scores every candidate by the cosine of
the query *as written* (the Indonesian original, not the rendering). Fused: (1 - a) * MiniLM + a * e5 (both min-max
normalised) + the service's lexical and code weights. Settings are chosen on TUNE_SET only (the best Indonesian
MRR@10 whose English MRR@10 does not fall), then reported on every set. Confidence: a class-balanced logistic fit
of (top, gap) of MiniLM and of e5 per language, fitted on TUNE_SET, applied to the check sets.
Prints per set and group MRR@10 / R@3 and, per language, answerable and unanswerable items flagged confident.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from study import open_searcher, read_ticket_set
from search.confidence import Calibration, features, fit_calibration
from search.fusion import LinearCombiner, normalise_minmax, rank
from search.ticket_evaluation import article_metrics, ticket_query

ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
LEXICAL = (None, 0.15)  # None: the service's weight for the query's language


def mapping(a, b) -> dict[int, int]:
    """Key in index a -> key of the same passage in index b."""
    ids = {p.passage_id: k for k, p in b.version.passages(range(b.version.size)).items()}
    return {k: ids[p.passage_id] for k, p in a.version.passages(range(a.version.size)).items()}


def probe(mini, e5, m2e, e2m, item) -> dict:
    """Every signal's scores of one query's candidates (MiniLM keys), the e5 arm's included."""
    query = ticket_query(item, mini)
    original = ticket_query(item, mini, translate=False)
    found = mini.collect(query)
    e5_vector = e5.encoder.encode_queries([original.dense])
    proposed = e5.version.dense_search(e5_vector[0], mini.settings.candidates)
    rows = sorted(set(found.rows) | {e2m[k] for k in proposed})
    mini_vectors = mini.encoder.encode_queries([query.dense, *query.alternatives])
    dense = dict(zip(rows, (mini.version.vectors(rows) @ mini_vectors.T).max(axis=1).tolist()))
    e5_cos = dict(zip(rows, (e5.version.vectors([m2e[r] for r in rows]) @ e5_vector.T)[:, 0].tolist()))
    signals = dict(found.signals)
    signals["dense"], signals["dense_e5"] = dense, e5_cos
    own = set(found.rows)  # the e5 arm scoring the service's candidates only, proposing none of its own
    scored = {**found.signals, "dense_e5": {r: v for r, v in e5_cos.items() if r in own}}
    return {"query": query, "signals": signals, "scored": scored, "service_dense": found.get("dense")}


def ranking(mini, p, alpha: float, lexical: float | None, which: str = "signals") -> list[str]:
    base = mini.combiner_for(p["query"]).weights
    weights = {**base, "dense": 1.0 - alpha, "dense_e5": alpha}
    if lexical is not None:
        weights["lexical"] = lexical
    combiner = LinearCombiner(weights, normalised=frozenset({"dense", "dense_e5", "lexical"}))
    scores = combiner.combine(p[which])
    return [a for a, _, _ in mini.group_articles(scores, 10)]


def evaluate(mini, probes, items, qrels, settings_of, which: str = "signals") -> dict:
    sums: dict[str, list[float]] = {}
    for item, p in zip(items, probes):
        if item["id"] not in qrels:
            continue
        lang, kind = item.get("lang", "en"), item.get("kind", "ticket")
        alpha, lexical = settings_of(lang)
        m = article_metrics(ranking(mini, p, alpha, lexical, which), qrels[item["id"]])
        for g in ("all", lang, f"{lang} {kind}"):
            s = sums.setdefault(g, [0.0, 0.0, 0])
            s[0] += m["MRR@10"]; s[1] += m["R@3"]; s[2] += 1
    return {g: (s[0] / s[2], s[1] / s[2], s[2]) for g, s in sums.items()}


def confidence_rows(probes, items, qrels, lang: str, arm: str) -> list[tuple[float, float, bool]]:
    out = []
    for item, p in zip(items, probes):
        if item.get("lang", "en") != lang:
            continue
        scores = p["service_dense"] if arm == "mini" else {r: p["signals"]["dense_e5"][r]
                                                            for r in rank(p["signals"]["dense_e5"])[:100]}
        top, gap = features(scores)
        out.append((top, gap, item["id"] in qrels))
    return out


def flagged(calibration: Calibration, rows) -> tuple[str, str]:
    yes = [calibration.probability(t, g) >= 0.5 for t, g, _ in rows]
    pos = [y for y, (_, _, a) in zip(yes, rows) if a]
    neg = [y for y, (_, _, a) in zip(yes, rows) if not a]
    return f"{sum(pos)}/{len(pos)}", f"{sum(neg)}/{len(neg)}"


def main() -> None:
    mini_dir, e5_dir, *sets = sys.argv[1:]
    mini, e5 = open_searcher(mini_dir), open_searcher(e5_dir, "multilingual-e5-small")
    m2e = mapping(mini, e5)
    e2m = {v: k for k, v in m2e.items()}
    data = {}
    for folder in sets:
        qrels, items = read_ticket_set(folder)
        data[folder] = (qrels, items, [probe(mini, e5, m2e, e2m, it) for it in items])
    tune = sets[0]
    grid = {}
    for alpha in ALPHAS:
        for lexical in LEXICAL:
            grid[(alpha, lexical)] = evaluate(mini, data[tune][2], data[tune][1], data[tune][0],
                                              lambda lang, a=alpha, w=lexical: (a, w))
    print(f"tune grid on {tune} (MRR@10 / R@3): alpha, lexical -> en | id | id ticket | id query")
    for key, r in grid.items():
        print(key, " | ".join(f"{r[g][0]:.3f}/{r[g][1]:.3f}" for g in ("en", "id", "id ticket", "id query") if g in r))
    base = grid[(0.0, None)]
    chosen = {}
    for lang in ("en", "id"):
        ok = [k for k, r in grid.items() if lang in r and r[lang][0] >= base[lang][0] - 1e-9]
        chosen[lang] = max(ok, key=lambda k: (round(grid[k][lang][0], 4), -k[0]))
    print("chosen on the tune set:", chosen)
    variants = {"service": lambda lang: (0.0, None),
                "dual, id only": lambda lang: chosen["id"] if lang == "id" else (0.0, None),
                "dual, both languages": lambda lang: chosen[lang]}
    for folder in sets:
        qrels, items, probes = data[folder]
        print(f"\n== {folder} (MRR@10 / R@3 (n))")
        for (name, settings_of), which in [*((v, "signals") for v in variants.items()),
                                           (("dual id, no e5 proposals", variants["dual, id only"]), "scored")]:
            r = evaluate(mini, probes, items, qrels, settings_of, which)
            print(f"{name:22s}", " | ".join(f"{g} {r[g][0]:.3f}/{r[g][1]:.3f} ({r[g][2]})" for g in
                                           ("all", "en", "id", "en ticket", "id ticket", "en query", "id query") if g in r))
    print("\nconfidence: (answerable flagged, unanswerable flagged); fits on the tune set, per language")
    for lang in ("en", "id"):
        for arm in ("mini", "e5"):
            fit = fit_calibration(confidence_rows(data[tune][2], data[tune][1], data[tune][0], lang, arm))
            cells = []
            for folder in sets:
                rows = confidence_rows(data[folder][2], data[folder][1], data[folder][0], lang, arm)
                cells.append(f"{folder.rstrip('/').split('/')[-1]} {flagged(fit, rows)}")
            print(lang, arm, fit, " | ".join(cells))


if __name__ == "__main__":
    main()
