"""Study (issue 13): a calibration of `confident` for short agent queries (<= 10 words) of their own, fitted on the
tuning set's short queries (answerable and unanswerable), leave-one-out there, then applied to the check sets.

Usage: python eval/studies/short_query_confidence.py INDEX_DIR TUNE_SET CHECK_SET [CHECK_SET ...]
"""
from __future__ import annotations

import sys

from study import open_searcher, read_ticket_set

from search.confidence import features, fit_calibration
from search.ticket_evaluation import SHORT_QUERY_WORDS, ticket_query

S = open_searcher(sys.argv[1])
THRESHOLD = S.settings.confidence_threshold


def rows(folder):
    qrels, queries = read_ticket_set(folder)
    out = []
    for item in queries:
        query = ticket_query(item, S)
        if len(query.dense.split()) > SHORT_QUERY_WORDS:
            continue
        dense, _, codes = S.candidates(query)
        top, gap = features(dense)
        out.append((item["id"], item.get("lang", "en"), top, gap, item["id"] in qrels,
                    S.assess(dense, query, codes)["confidence"]))
    return out


def report(name, scored):
    for lang in ("all", "en", "id"):
        chosen = [(p, label) for (_, l, *_rest), (p, label) in scored if lang in ("all", l)]
        pos = [p >= THRESHOLD for p, label in chosen if label]
        neg = [p >= THRESHOLD for p, label in chosen if not label]
        print(f"| {name} | {lang} | {len(pos)} | {sum(pos) / max(1, len(pos)):.3f} | {len(neg)} | "
              f"{sum(neg)}/{len(neg)} |")


tune = rows(sys.argv[2])
fitted = fit_calibration([(t, g, label) for _, _, t, g, label, _ in tune])
print("fitted on the tuning set's short queries:", fitted)
loo = []
for k, row in enumerate(tune):
    model = fit_calibration([(t, g, label) for j, (_, _, t, g, label, _) in enumerate(tune) if j != k])
    loo.append((row, (model.probability(row[2], row[3]), row[4])))
print("| set | language | answerable | flagged confident | unanswerable | flagged confident |")
print("|---|---|---|---|---|---|")
report(f"{sys.argv[2]} (tune), current", [(r, (r[5], r[4])) for r in tune])
report(f"{sys.argv[2]} (tune), short fit, leave-one-out", loo)
for folder in sys.argv[3:]:
    check = rows(folder)
    report(f"{folder} (check), current", [(r, (r[5], r[4])) for r in check])
    report(f"{folder} (check), short fit", [(r, (fitted.probability(r[2], r[3]), r[4])) for r in check])
