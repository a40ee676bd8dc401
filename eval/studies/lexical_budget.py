"""Study (issue 15): the lexical query bounded by the postings it reads (search.lexical.spend_budget), forced on.

Usage: python eval/studies/lexical_budget.py [--shares 0.02,0.05,0.1] SET ...
  dev, check                  eval/tickets-dev (tuning) and eval/tickets-check over OFFICE_IDX
  d365                        eval/d365-check over D365_IDX
  starter                     eval/starter-en over the starter content's index STARTER_IDX (built by `kb index`)
  stackfaq, titles            ../shared/datasets/stackfaq (and variant_title_to_answer), over the index `kb eval`
                              builds for them in var/eval (run `kb eval` on the set once first)
Indexes: OFFICE_IDX (default /tmp/serve-bench/office-idx), D365_IDX (default /tmp/eval/d365-idx); DATASETS
(../shared/datasets). Open copies: the study only reads them.

Each share runs the service as it is (Searcher.collect and its combiner, as `kb eval` ranks) with KB_LEXICAL_BUDGET
at that share and KB_LEXICAL_BUDGET_ABOVE 0 (the rule on at any size, so that its effect on ranking is measured on
these knowledge bases as it would act on one 16 times larger with the same word shares), next to the rule off.
Per set and group: MRR@10 and R@3 of the fused service and of the lexical arm alone (ticket sets: the best article,
`kb eval`'s article metrics; stackfaq: any relevant answer, R@3 = share of its answers in the top 3 as `kb eval`'s
R@k), the paired bootstrap 95% interval of the fused MRR@10 difference from the rule off (2,000 resamples of
queries), and what the lexical query reads: its words and its postings (summed passage counts) as a share of passages.
Ends with one JSON line of every figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "studies"))
from study import open_searcher, read_ticket_set  # noqa: E402  (puts the repo on sys.path)

from search.evaluation import metrics  # noqa: E402
from search.fusion import FusionWeights, fuse_scores  # noqa: E402
from search.lexical import TermBudget, term_query  # noqa: E402
from search.searcher import Query, Searcher  # noqa: E402
from search.signals import only  # noqa: E402
from search.ticket_evaluation import article_metrics, ticket_query  # noqa: E402

DATASETS = Path(os.environ.get("DATASETS", ROOT.parent / "shared" / "datasets"))
OFFICE_IDX = Path(os.environ.get("OFFICE_IDX", "/tmp/serve-bench/office-idx"))
D365_IDX = Path(os.environ.get("D365_IDX", "/tmp/eval/d365-idx"))
STARTER_IDX = Path(os.environ.get("STARTER_IDX", ROOT / "var" / "index"))
SHARES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def beir_index(folder: Path) -> Path:
    digest = hashlib.sha256((folder / "corpus.jsonl").read_bytes()).hexdigest()[:12]
    index_dir = ROOT / "var" / "eval" / f"{folder.name}-{digest}"  # where `kb eval` builds it (evaluation.py)
    if not (index_dir / "CURRENT").is_file():
        sys.exit(f"{index_dir} is missing: run `kb eval {folder}` once first")
    return index_dir


SETS = {  # name -> (query folder, index, role, public: judged per answer as kb eval judges BEIR sets)
    "dev": (ROOT / "eval" / "tickets-dev", lambda: OFFICE_IDX, "tune", False),
    "check": (ROOT / "eval" / "tickets-check", lambda: OFFICE_IDX, "check", False),
    "d365": (ROOT / "eval" / "d365-check", lambda: D365_IDX, "check", False),
    "starter": (ROOT / "eval" / "starter-en", lambda: STARTER_IDX, "check", False),
    "stackfaq": (DATASETS / "stackfaq", lambda: beir_index(DATASETS / "stackfaq"), "public", True),
    "titles": (DATASETS / "stackfaq" / "variant_title_to_answer",
               lambda: beir_index(DATASETS / "stackfaq" / "variant_title_to_answer"), "public", True),
}


def boot(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def judged(searcher: Searcher, scores: dict[int, float], relevant: dict[str, int], public: bool) -> tuple[float, float]:
    """(MRR@10, R@3) of one ranking, as `kb eval` judges the set."""
    if public:
        top = [a for a, _, _ in searcher.group_articles(scores, 100)]
        return metrics(top, relevant)["MRR@10"], len([d for d in top[:3] if d in relevant]) / len(relevant)
    m = article_metrics([a for a, _, _ in searcher.group_articles(scores, 10)], relevant)
    return m["MRR@10"], m["R@3"]


def run(key: str, shares: list[float]) -> dict:
    folder, index_of, role, public = SETS[key]
    searcher = open_searcher(index_of())
    base, total = searcher.settings, len(searcher.row_article)
    qrels, queries = read_ticket_set(folder)
    items = [q for q in queries if q.get("id", q.get("_id")) in qrels]
    per: dict[str, dict[str, list[tuple[float, ...]]]] = {}  # group -> variant -> (fused MRR, R@3, arm MRR, R@3, ...)
    names = ["off", *[f"{s:g}" for s in shares]]
    for item in items:
        qid = item.get("id", item.get("_id"))
        if public:
            query, groups = Query(item["text"], item["text"]), ("all",)
        else:
            query = ticket_query(item, searcher)
            groups = ("all", f"{item.get('lang', 'en')} {item.get('kind', 'ticket')}")
        vector = searcher.encoder.encode_queries([query.dense, *query.alternatives])
        for name, share in zip(names, [0.0, *shares]):
            searcher.settings = dataclasses.replace(base, lexical_budget=share, lexical_budget_above=0)
            found = searcher.collect(query, vector=vector[0] if len(vector) == 1 else None)
            fused = (fuse_scores(found.get("dense"), found.get("lexical"), found.get("codes"),
                                 FusionWeights(lexical=base.lexical_weight)) if public
                     else found.combined(searcher.combiner_for(query)))
            arm = only(found, "lexical", base.candidates)
            terms = term_query(query.lexical, df=searcher.term_df, total=total,
                               budget=TermBudget(share, 0)).terms
            read = sum(searcher.term_df.get(t, 0) for t in terms) / total
            row = (*judged(searcher, fused, qrels[qid], public), *judged(searcher, arm, qrels[qid], public),
                   len(terms), read)
            for g in groups:
                per.setdefault(g, {}).setdefault(name, []).append(row)
    searcher.settings = base
    print(f"\n## {folder.name} ({role}): {len(items)} queries, {total} passages")
    print("| group | budget (share of passages) | n | fused MRR@10 | R@3 | fused MRR@10 - off [95% CI] | "
          "lexical alone MRR@10 | R@3 | words | postings read / passages |\n|---|---|---|---|---|---|---|---|---|---|")
    report = {}
    for g, rows in per.items():
        off = np.array([r[0] for r in rows["off"]])
        for name in names:
            a = np.array(rows[name])
            lo, hi = boot(a[:, 0] - off)
            print(f"| {g} | {name} | {len(a)} | {a[:, 0].mean():.3f} | {a[:, 1].mean():.3f} | "
                  f"{(a[:, 0] - off).mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {a[:, 2].mean():.3f} | {a[:, 3].mean():.3f} | "
                  f"{np.median(a[:, 4]):.0f} | {np.median(a[:, 5]):.3f} (p90 {np.percentile(a[:, 5], 90):.3f}) |")
            report[f"{g} | {name}"] = {"n": len(a), "MRR@10": round(a[:, 0].mean(), 4), "R@3": round(a[:, 1].mean(), 4),
                                       "diff": round((a[:, 0] - off).mean(), 4), "ci": [round(lo, 4), round(hi, 4)],
                                       "lexical MRR@10": round(a[:, 2].mean(), 4),
                                       "lexical R@3": round(a[:, 3].mean(), 4),
                                       "words p50": float(np.median(a[:, 4])),
                                       "read p50": round(float(np.median(a[:, 5])), 4)}
    sys.stdout.flush()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", choices=list(SETS))
    parser.add_argument("--shares", default=",".join(map(str, SHARES)))
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    print(json.dumps({key: run(key, shares) for key in args.sets}))
