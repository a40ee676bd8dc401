"""Study (issue 13): does a confidence calibration per query language, fitted on the tuning set only, flag more
answerable Indonesian items of the check set confident without flagging out-of-scope ones?

Features are the service's (search/confidence.py: best cosine, best minus sixth-best), computed from the query the
service builds (ticket_query). Fits: the shipped one; one refit on the tuning set; one per language (English and
Indonesian rows each); one with a language intercept (shared slopes). Tuning figures are leave-one-out (each item
decided by a fit without it); check figures come from the fit on the whole tuning set. Code-only queries are left
to the service's exact-code rule, as the service does.

Usage: python eval/studies/confidence_by_language.py INDEX_DIR eval/tickets-dev eval/tickets-check
"""
from __future__ import annotations

import sys

import numpy as np
from study import open_searcher, read_ticket_set

from search.confidence import Calibration, features, fit_calibration
from search.searcher import is_code_only
from search.signals import only
from search.ticket_evaluation import ticket_query

S = open_searcher(sys.argv[1])
TUNE, CHECK = sys.argv[2], sys.argv[3]


def rows_of(folder: str) -> list[dict]:
    qrels, queries = read_ticket_set(folder)
    out = []
    for item in queries:
        query = ticket_query(item, S)
        if query.codes and is_code_only(query):
            continue
        found = S.collect(query)
        top, gap = features(found.get("dense"))
        ranking = [a for a, _, _ in S.group_articles(found.combined(S.combiner_for(query)), 3)]
        firsts = [S.group_articles(only(found, arm, S.settings.candidates), 1) for arm in ("dense", "lexical")]
        agree = float(all(firsts) and firsts[0][0][0] == firsts[1][0][0] == (ranking[0] if ranking else None))
        out.append({"id": item["id"], "lang": item.get("lang", "en"), "top": top, "gap": gap,
                    "agree": agree, "answerable": item["id"] in qrels, "first_right": bool(ranking) and ranking[0] in qrels.get(item["id"], {})})
    return out


def fit_intercepts(rows: list[dict]):
    """Shared slopes, one bias per language: the Indonesian bias is the English fit's plus an offset fitted on the
    Indonesian rows with the slopes held (one free parameter, so 8 unanswerable rows can carry it)."""
    base = fit_calibration([(r["top"], r["gap"], r["answerable"]) for r in rows])
    ind = [r for r in rows if r["lang"] == "id"]
    if not ind:
        return {"en": base, "id": base}
    z = np.array([base.bias + base.w_top * r["top"] + base.w_gap * r["gap"] for r in ind])
    y = np.array([1.0 if r["answerable"] else 0.0 for r in ind])
    pos, neg = max(y.sum(), 1.0), max(len(y) - y.sum(), 1.0)
    weight = np.where(y == 1.0, len(y) / (2 * pos), len(y) / (2 * neg))
    offset = 0.0
    for _ in range(50):  # Newton steps on the offset alone, class-balanced, small L2 towards 0
        p = 1.0 / (1.0 + np.exp(-(z + offset)))
        offset -= (float(weight @ (p - y)) + 1e-2 * offset) / (float(weight @ (p * (1 - p))) + 1e-2)
    return {"en": base, "id": Calibration(round(base.bias + offset, 3), base.w_top, base.w_gap)}


def fit_per_language(rows: list[dict]):
    return {lang: fit_calibration([(r["top"], r["gap"], r["answerable"]) for r in rows if r["lang"] == lang])
            for lang in ("en", "id")}


def fit_single(rows: list[dict]):
    one = fit_calibration([(r["top"], r["gap"], r["answerable"]) for r in rows])
    return {"en": one, "id": one}


def fit_agreement(rows: list[dict]):
    """Top, gap and whether the dense and the lexical arm alone put the same article first (the fused first):
    a class-balanced logistic of three features, one fit for both languages."""
    x = np.array([[1.0, r["top"], r["gap"], r["agree"]] for r in rows])
    y = np.array([1.0 if r["answerable"] else 0.0 for r in rows])
    pos, neg = max(y.sum(), 1.0), max(len(y) - y.sum(), 1.0)
    weight = np.where(y == 1.0, len(y) / (2 * pos), len(y) / (2 * neg))
    w = np.zeros(4)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        hessian = (x * (weight * p * (1 - p))[:, None]).T @ x + 1e-2 * np.diag([0.0, 1.0, 1.0, 1.0])
        w -= np.linalg.solve(hessian, x.T @ (weight * (p - y)) + 1e-2 * np.r_[0.0, w[1:]])
    return {"agreement": w}


FITS = {"one refit": fit_single, "per language": fit_per_language, "language intercept": fit_intercepts,
        "with agreement": fit_agreement}


def decide(calibrations: dict, row: dict) -> bool:
    if "agreement" in calibrations:
        w = calibrations["agreement"]
        return float(w @ [1.0, row["top"], row["gap"], row["agree"]]) >= 0.0
    return calibrations[row["lang"]].probability(row["top"], row["gap"]) >= 0.5


def summary(rows: list[dict], decisions: list[bool]) -> str:
    parts = []
    for lang in ("en", "id"):
        ans = [d for r, d in zip(rows, decisions) if r["lang"] == lang and r["answerable"]]
        un = [d for r, d in zip(rows, decisions) if r["lang"] == lang and not r["answerable"]]
        parts.append(f"{lang}: answerable {sum(ans)}/{len(ans)} ({sum(ans) / max(len(ans), 1):.3f}), "
                     f"out of scope {sum(un)}/{len(un)}")
    return "; ".join(parts)


tune, check = rows_of(TUNE), rows_of(CHECK)
shipped = {lang: S.calibrations[lang] for lang in ("en", "id")}
print(f"shipped  tune (in sample): {summary(tune, [decide(shipped, r) for r in tune])}")
for part, rows in (("tune", tune), ("check", check)):
    for lang in ("en", "id"):
        for ok in (True, False):
            got = [r["agree"] for r in rows if r["lang"] == lang and r["answerable"] == ok]
            print(f"{part} {lang} {'answerable' if ok else 'out of scope'}: arms agree {sum(got):.0f}/{len(got)}")
print(f"shipped  check:            {summary(check, [decide(shipped, r) for r in check])}")
missed = [r for r in check if r["answerable"] and not decide(shipped, r)]
print("check answerable not flagged (shipped): " + ", ".join(
    f"{r['id']} top {r['top']:.3f} gap {r['gap']:.3f} first article {'right' if r['first_right'] else 'wrong'}"
    for r in missed))
for name, fit in FITS.items():
    loo = [decide(fit(tune[:i] + tune[i + 1:]), r) for i, r in enumerate(tune)]
    whole = fit(tune)
    print(f"{name:14s} tune LOO: {summary(tune, loo)}")
    print(f"{name:14s} check:    {summary(check, [decide(whole, r) for r in check])}   fit {whole}")
