"""In-process time of the lexical arm, Searcher.search and .suggest with the postings budget off and on, side by side.

The budget (KB_LEXICAL_BUDGET, search.lexical.spend_budget) keeps a query's rarest words while their summed passage
counts stay within a share of the passages; KB_LEXICAL_BUDGET_ABOVE is set to 0 here so that it acts on any index.
One process, one Searcher over --index-dir (opened read-only); each call is made once per variant in turn (budget
off, then each share; the order turned every round) so that all see the same machine load. Kinds: `lexical arm` (the
BM25 query of a suggest alone: search_lexical on the index, as LexicalSignal runs it), `suggest` and `search` (as the
API calls them, encoding included). Prints p50 / p99 per kind and variant, the ratio to budget off, the median of the
per-call ratios (paired under the same load), the words and postings each query read, and one JSON line.
Tickets: bench/suggest_latency.py's 20 (English and Indonesian, pasted codes), plus --set's (an eval ticket set).
Usage:
  .venv/bin/python bench/lexical_budget.py --index-dir /tmp/office-idx [--shares 0.3] [--rounds 5] [--set eval/tickets-dev]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.suggest_latency import TICKETS  # noqa: E402
from kb.embedder import make_embedder  # noqa: E402
from kb.index import open_backend  # noqa: E402
from kb.settings import load_settings  # noqa: E402
from search.evaluation import read_jsonl  # noqa: E402
from search.lexical import TermBudget, search_lexical, term_query  # noqa: E402
from search.searcher import Searcher, make_query  # noqa: E402
from search.tickets import build_query  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--shares", default="0.3", help="budgets to compare with none (shares of passages)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", type=Path, help="also the tickets of an eval set (queries.jsonl)")
    args = parser.parse_args()
    load = os.getloadavg()
    settings = load_settings({}, index_dir=args.index_dir)
    encoder = make_embedder(settings)
    encoder.load()
    searcher = Searcher(open_backend(args.index_dir).open(model_id=encoder.model_id), encoder, settings)
    total = len(searcher.row_article)
    tickets = [{"subject": t["subject"], "body": t["body"]} for t in TICKETS]
    if args.set:
        tickets += [{"subject": q.get("subject", ""), "body": q["text"], "lang": q.get("lang")}
                    for q in read_jsonl(args.set / "queries.jsonl") if q.get("kind", "ticket") == "ticket"]
    lexical = []
    for t in tickets:
        ticket = build_query(t["subject"], t["body"], language=t.get("lang"), max_words=settings.query_max_words)
        lexical.append(make_query(ticket, t["subject"], searcher.glossary, searcher.embed).lexical)
    variants = {"off": 0.0, **{f"budget {float(s):g}": float(s) for s in args.shares.split(",")}}
    configured = {name: dataclasses.replace(settings, lexical_budget=share, lexical_budget_above=0)
                  for name, share in variants.items()}
    read = {name: [(len(q.terms), sum(searcher.term_df.get(w, 0) for w in q.terms) / total)
                   for q in (term_query(text, df=searcher.term_df, total=total, budget=TermBudget(share, 0))
                             for text in lexical)] for name, share in variants.items()}

    def call(kind: str, i: int, name: str) -> None:
        searcher.settings = configured[name]
        t = tickets[i]
        if kind == "lexical arm":
            search_lexical(searcher.version, lexical[i], settings.candidates, df=searcher.term_df, total=total,
                           budget=TermBudget(variants[name], 0))
        elif kind == "suggest":
            searcher.suggest(t["subject"], t["body"], k=5, language=t.get("lang"))
        else:
            searcher.search(t["subject"], k=10)

    kinds = ("lexical arm", "suggest", "search")
    names = list(variants)
    for kind in kinds:  # warm-up: lazy loads, page cache
        for i in range(len(tickets)):
            call(kind, i, "off")
    times: dict[tuple[str, str], list[float]] = {(k, n): [] for k in kinds for n in names}
    for r in range(args.rounds):
        for i in range(len(tickets)):
            for kind in kinds:
                for name in (names if (r + i) % 2 == 0 else names[::-1]):
                    started = time.perf_counter()
                    call(kind, i, name)
                    times[(kind, name)].append((time.perf_counter() - started) * 1000)
    searcher.settings = settings
    load_after = os.getloadavg()
    print(f"{args.index_dir}: {total} passages, {len(tickets)} tickets x {args.rounds} rounds; "
          f"load average {load[0]:.2f} -> {load_after[0]:.2f}")
    print("| kind | variant | p50 ms | p99 ms | p50 / off | median per-call ratio | suggest query words p50 | its postings / passages p50 |")
    print("|---|---|---|---|---|---|---|---|")
    report: dict = {"index": str(args.index_dir), "passages": total, "tickets": len(tickets), "rounds": args.rounds,
                    "load": [round(load[0], 2), round(load_after[0], 2)], "figures": {}}
    for kind in kinds:
        base = times[(kind, "off")]
        for name in names:
            values = times[(kind, name)]
            ratio = statistics.median(v / b for v, b in zip(values, base))
            words = statistics.median(w for w, _ in read[name])
            postings = statistics.median(p for _, p in read[name])
            print(f"| {kind} | {name} | {percentile(values, 50):.1f} | {percentile(values, 99):.1f} | "
                  f"{percentile(values, 50) / percentile(base, 50):.2f} | {ratio:.2f} | {words:.0f} | {postings:.3f} |")
            report["figures"][f"{kind} | {name}"] = {"p50": round(percentile(values, 50), 2),
                                                     "p99": round(percentile(values, 99), 2),
                                                     "ratio_p50": round(percentile(values, 50) / percentile(base, 50), 3),
                                                     "paired_ratio": round(ratio, 3)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
