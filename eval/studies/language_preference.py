"""Study (issue 13): how much a passage in the agent's language should add on a mixed English/Indonesian knowledge
base. For each KB_LANGUAGE_WEIGHT: MRR@10 and R@3, the share of queries whose first article is in another language
than the agent's, and the share of other-language articles among the top 3.

Usage: python eval/studies/language_preference.py INDEX_DIR_OF_content/ SET [SET ...]
(tune on the dev queries whose best article is a starter article and on eval/starter-id; check on eval/starter-en)
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from study import open_searcher

from search.ticket_evaluation import article_metrics
from search.evaluation import read_jsonl, read_qrels

WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
CONTENT = Path(__file__).resolve().parents[2] / "content"
S = open_searcher(sys.argv[1])


def labelled(folder: Path) -> tuple[list[dict], dict]:
    qrels = {q: {a: r for a, r in labels.items() if (CONTENT / f"{a}.md").is_file()}
             for q, labels in read_qrels(folder / "qrels.tsv").items()}
    qrels = {q: labels for q, labels in qrels.items() if any(r >= 2 for r in labels.values())}
    return [i for i in read_jsonl(folder / "queries.jsonl") if i["id"] in qrels], qrels


def ranking(item: dict) -> list[str]:
    if item.get("kind") == "query":
        return [r["id"] for r in S.search(item["text"], k=10)["results"]]
    return [a["id"] for a in S.suggest(item.get("subject", ""), item["text"], language=item.get("lang"), k=10)["articles"]]


print("| set | group | weight | n | MRR@10 | R@3 | first article in another language | other-language share of top 3 |")
print("|---|---|---|---|---|---|---|---|")
for folder in map(Path, sys.argv[2:]):
    items, qrels = labelled(folder)
    for weight in WEIGHTS:
        S.settings = dataclasses.replace(S.settings, language_weight=weight)
        rows = {}
        for item in items:
            ranked = ranking(item)
            m = article_metrics(ranked, qrels[item["id"]])
            other = [S.articles[a]["language"] != item["lang"] for a in ranked[:3]]
            for g in ("all", item["lang"]):
                rows.setdefault(g, []).append((m["MRR@10"], m["R@3"], bool(other[:1] and other[0]),
                                               sum(other) / max(1, len(other))))
        for g, vals in rows.items():
            n = len(vals)
            print(f"| {folder.name} | {g} | {weight} | {n} | {sum(v[0] for v in vals) / n:.3f} | "
                  f"{sum(v[1] for v in vals) / n:.3f} | {sum(v[2] for v in vals) / n:.3f} | {sum(v[3] for v in vals) / n:.3f} |")
