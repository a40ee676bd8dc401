"""Study (issue 13): how many items of each language the service flags confident at each threshold, answerable and
out of scope, with the service's whole confidence (calibration, exact-code rule, search/coverage.py's rule).

The threshold is read against the English fit (the Indonesian shift of search/confidence.py taken out), so that the
tuning set can choose it and the check sets then only check it (docs/quality.md, "Change 10").

Usage: python eval/studies/confidence_thresholds.py INDEX_DIR SET [SET ...]
"""
from __future__ import annotations

import math
import sys

from study import open_searcher, read_ticket_set

from search.confidence import INDONESIAN_SHIFT
from search.ticket_evaluation import ticket_query

THRESHOLDS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25)


def english_scale(probability: float, language: str) -> float:
    """An Indonesian probability as the English fit gave it (undoing the intercept shift). 0 and 1 (the exact-code
    rule) stay; a probability the coverage rule capped at 0.1 falls further, under every threshold either way."""
    if language != "id" or probability in (0.0, 1.0):
        return probability
    z = math.log(probability / (1 - probability)) - INDONESIAN_SHIFT
    return 1 / (1 + math.exp(-z))


def main() -> None:
    searcher = open_searcher(sys.argv[1])
    for folder in sys.argv[2:]:
        qrels, queries = read_ticket_set(folder)
        rows = []
        for item in queries:
            query = ticket_query(item, searcher)
            dense, _, codes = searcher.candidates(query)
            language = item.get("lang", "en")
            rows.append((language, item["id"] in qrels,
                         english_scale(searcher.assess(dense, query, codes)["confidence"], language)))
        for language in ("en", "id"):
            answerable = [c for lang, a, c in rows if lang == language and a]
            outside = [c for lang, a, c in rows if lang == language and not a]
            print(f"{folder} {language}: " + "  ".join(
                f"t={t}: {sum(c >= t for c in answerable)}/{len(answerable)} answerable, "
                f"{sum(c >= t for c in outside)}/{len(outside)} out of scope" for t in THRESHOLDS))


if __name__ == "__main__":
    main()
