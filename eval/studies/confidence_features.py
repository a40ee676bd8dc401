"""Side study (issue 13): does `confident` separate better with signals beyond the dense cosines? Fits class-balanced
logistic models on the tuning set and decides the check sets with them (threshold 0.5), with 10-fold
cross-validation on the tuning set; each feature set against the service's calibration.

Usage: python eval/studies/confidence_features.py INDEX_DIR TUNE_SET CHECK_SET [CHECK_SET ...]
  (all sets over the same index, e.g. /tmp/office-idx eval/tickets-dev eval/tickets-check)
Prints, per model and set: answerable flagged confident (en, id) and unanswerable flagged confident (en, id).
"""
import math
import sys

import numpy as np
from study import open_searcher, read_ticket_set

from search.confidence import features
from search.lexical import extract_terms, term_query
from search.ticket_evaluation import ticket_query

FEATURES = ("top", "gap", "fused_cos", "lex_share", "lex_agrees", "dense_agrees", "spread", "is_id", "coverage",
            "unknown")
MODELS = {
    "top+gap (service's form)": ("top", "gap"),
    "+ Indonesian bias": ("top", "gap", "is_id"),
    "+ lexical share of the fused top": ("top", "gap", "lex_share"),
    "+ lexical top agrees": ("top", "gap", "lex_agrees"),
    "+ dense spread": ("top", "gap", "spread"),
    "+ fused top's cosine": ("top", "gap", "fused_cos"),
    "+ lex share + agrees": ("top", "gap", "lex_share", "lex_agrees"),
    "+ lex share + Indonesian bias": ("top", "gap", "lex_share", "is_id"),
    "+ coverage": ("top", "gap", "coverage"),
    "+ coverage + unknown words": ("top", "gap", "coverage", "unknown"),
    "+ coverage + lex share": ("top", "gap", "coverage", "lex_share"),
    "all": FEATURES,
}


def top_article(searcher, scores: dict[int, float]) -> str | None:
    return searcher.row_article[max(scores, key=scores.get)] if scores else None


def stem(word: str) -> str:
    return word[:6]  # crude: "freezes" and "freezing" meet "freeze" (the lexical arm's Porter stems do better)


def coverage(searcher, query, row: int | None) -> tuple[float, float]:
    """(share of the query's known words, weighted by idf, found in the passage `row` or its headings; share of
    the query's words no passage has)."""
    total = len(searcher.row_article)
    terms = term_query(query.lexical, df=searcher.term_df, total=total).terms
    if not terms or row is None:
        return 0.0, 1.0
    record = searcher.fetch([row])[row]
    present = {stem(w) for w in extract_terms(" ".join((*record.heading_path, record.text)), limit=100000)}
    known = [t for t in terms if searcher.term_df.get(t, 0) > 0]
    idf = {t: math.log(total / searcher.term_df[t]) for t in known}
    found = sum(idf[t] for t in known if stem(t) in present)
    return found / max(sum(idf.values()), 1e-9), 1 - len(known) / len(terms)


def item_features(searcher, item: dict) -> dict:
    query = ticket_query(item, searcher)
    fused, dense, codes = searcher.retrieve(query)
    _, lexical, _ = searcher.candidates(query)
    top, gap = features(dense)
    best = max(fused, key=fused.get) if fused else None
    ordered = sorted(dense, key=dense.get, reverse=True)[:10]
    cov, unknown = coverage(searcher, query, best)
    return {"top": top, "gap": gap, "coverage": cov, "unknown": unknown,
            "fused_cos": dense.get(best, 0.0) if best is not None else 0.0,
            "lex_share": (lexical.get(best, 0.0) / max(lexical.values())) if lexical and best is not None else 0.0,
            "lex_agrees": float(top_article(searcher, lexical) == top_article(searcher, fused)),
            "dense_agrees": float(top_article(searcher, dense) == top_article(searcher, fused)),
            "spread": len({searcher.row_article[r] for r in ordered}) / max(1, len(ordered)),
            "is_id": float(query.language == "id"),
            "service": searcher.assess(dense, query, codes)["confidence"]}


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Class-balanced logistic regression by Newton steps: search/confidence.py's fit_calibration for any number of
    features (that one is fixed to top and gap; a study, so it was not generalised)."""
    x = np.c_[np.ones(len(x)), x]
    pos, neg = max(y.sum(), 1.0), max(len(y) - y.sum(), 1.0)
    weight = np.where(y == 1.0, len(y) / (2 * pos), len(y) / (2 * neg))
    w = np.zeros(x.shape[1])
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
        w -= np.linalg.solve((x * (weight * p * (1 - p))[:, None]).T @ x + penalty,
                             x.T @ (weight * (p - y)) + penalty @ w)
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.c_[np.ones(len(x)), x] @ w, -50, 50)))


def summary(rows: list[dict], probs) -> str:
    out = []
    for lang in ("en", "id"):
        ans = [p >= 0.5 for r, p in zip(rows, probs) if r["lang"] == lang and r["answerable"]]
        un = [p >= 0.5 for r, p in zip(rows, probs) if r["lang"] == lang and not r["answerable"]]
        out.append(f"{lang} {sum(ans)}/{len(ans)} ({sum(ans) / max(1, len(ans)):.3f}) oos {sum(un)}/{len(un)}")
    return "; ".join(out)


def main() -> None:
    searcher = open_searcher(sys.argv[1])
    sets = {}
    for folder in sys.argv[2:]:
        qrels, queries = read_ticket_set(folder)
        sets[folder] = [{**item_features(searcher, it), "lang": it.get("lang", "en"), "answerable": it["id"] in qrels}
                        for it in queries]
    tune_name, tune = next(iter(sets.items()))
    y = np.array([float(r["answerable"]) for r in tune])
    folds = np.arange(len(tune)) % 10
    print(f"tune {tune_name}: {len(tune)} items")
    print(f"service's calibration | tune {summary(tune, [r['service'] for r in tune])}")
    for check_name, check in list(sets.items())[1:]:
        print(f"  service | {check_name}: {summary(check, [r['service'] for r in check])}")
    for name, cols in MODELS.items():
        x = np.array([[r[c] for c in cols] for r in tune])
        w = fit(x, y)
        cv = np.zeros(len(tune))
        for k in range(10):
            cv[folds == k] = predict(fit(x[folds != k], y[folds != k]), x[folds == k])
        print(f"{name}: w={np.round(w, 2).tolist()}")
        print(f"  tune in-sample {summary(tune, predict(w, x))}")
        print(f"  tune 10-fold   {summary(tune, cv)}")
        for check_name, check in list(sets.items())[1:]:
            print(f"  {check_name}: {summary(check, predict(w, np.array([[r[c] for c in cols] for r in check])))}")


if __name__ == "__main__":
    main()
