"""`kb report`: the analytics reports (summary, queries, gaps, articles) as text, JSON (as the API) or CSV."""
from __future__ import annotations

import argparse
import json
import sys

from kb.errors import BadRequest, KBError
from kb.settings import Settings

REPORTS = ("summary", "queries", "gaps", "articles")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="search analytics: volume, top queries, content gaps, article performance",
                       description="Reports over the analytics event log (KB_ANALYTICS_DB, or KB_DATABASE_URL) "
                                   "against the index in service (titles, owners, nearest articles). Dates are UTC "
                                   "days, inclusive; "
                                   "default: the last 30 days.")
    p.add_argument("--index-dir", dest="index_dir", help="index folder (KB_INDEX_DIR, default ./var/index)")
    p.add_argument("--since", help="first day, YYYY-MM-DD (default: 29 days before --until)")
    p.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
    p.add_argument("--language", help="only queries in this language (en, id, ...)")
    p.add_argument("--product", help="only answers about this product (articles report: its articles)")
    p.add_argument("--report", choices=REPORTS, help="one report only (with --csv default summary; otherwise all)")
    p.add_argument("--limit", type=int, help="rows of queries, gap topics or articles (default 50, 30, 100)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the same JSON as GET /api/analytics/<report>; all four "
                     "reports as one object without --report")
    out.add_argument("--csv", action="store_true", help="one report as CSV (--report, default summary)")


class IndexView:
    """What search/related.py's article_vectors reads from a searcher, taken from an index version on disk."""

    def __init__(self, version):
        self.version = version
        self.articles = {a.id: {"id": a.id, "title": a.title, "summary": a.summary, "product": a.product,
                                "language": a.language, "audience": a.audience, "owner": a.owner,
                                "reviewed": a.reviewed} for a in version.articles()}
        self.row_article = version.passage_articles()


def load_catalog(settings: Settings):
    """Articles and their centroid vectors from the index on disk (no model is loaded); empty without an index."""
    from kb.embedder import MODEL_IDS
    from search.reports import Catalog
    from kb.index import backend_for
    from search.coverage import Coverage
    from search.related import article_vectors

    try:
        view = IndexView(backend_for(settings).open(model_id=MODEL_IDS.get(settings.model, settings.model)))
    except KBError as exc:
        print(f"kb report: {exc.message}; reports show article ids and no nearest articles", file=sys.stderr)
        return Catalog()
    if view.version.size == 0:
        return Catalog(view.articles)
    vectors = article_vectors(view)
    return Catalog(view.articles, vectors.ids, vectors.centroids, Coverage.of_articles(view.articles,
                                                                                       view.version.term_df()))


def run(args: argparse.Namespace, settings: Settings) -> int:
    from kb.database import side_database
    from search.report_csv import to_csv
    from search.reports import Reports, parse_filters

    filters = parse_filters(args.since, args.until, args.language, args.product)
    if args.limit is not None and args.limit < 1:
        raise BadRequest(f"--limit must be at least 1, got {args.limit}")
    database = side_database(settings, "analytics")
    reports = Reports(database, load_catalog(settings), settings.stale_days, settings.model)
    names = [args.report] if args.report else ["summary"] if args.csv else list(REPORTS)
    results = {}
    for name in names:
        if name == "summary":
            results[name] = reports.summary(filters)
        else:
            report = getattr(reports, name)
            results[name] = report(filters, args.limit) if args.limit else report(filters)
    if args.csv:
        sys.stdout.write(to_csv(names[0], results[names[0]]))
    elif args.json:
        print(json.dumps(results[names[0]] if len(names) == 1 else results, indent=2, ensure_ascii=False))
    else:
        print(f"{filters.since} to {filters.until} ({filters.days} days, UTC)"
              + (f", language {filters.language}" if filters.language else "")
              + (f", product {filters.product}" if filters.product else "") + f"; log {database.where}")
        for name in names:
            print()
            TEXT[name](results[name])
    return 0


# ---- text -----------------------------------------------------------------------------------------
def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def table(rows: list[tuple], indent: str = "  ") -> None:
    rows = [tuple(str(c) for c in row) for row in rows]
    if len(rows) <= 1:
        print(indent + "(none)")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))).rstrip())


def notes(report: dict) -> None:
    for note in report["notes"]:
        print(f"  note: {note}")


def print_summary(s: dict) -> None:
    t = s["totals"]
    print(f"SUMMARY: {t['searches']:,} searches, {t['suggestions']:,} suggestions; "
          f"confident {pct(t['confident_share'])}; no results {t['no_results']:,}")
    lat = s["latency_ms"]
    print(f"  latency p50 / p95: search {ms(lat['search']['p50'])} / {ms(lat['search']['p95'])}, "
          f"suggest {ms(lat['suggest']['p50'])} / {ms(lat['suggest']['p95'])}")
    ss = s["self_service"]
    print(f"  self-service: {ss['used']:,} of {ss['suggestions']:,} suggestions used ({pct(ss['share'])})")
    notes(s)
    print(f"  per {s['granularity']}:")
    table([("period", "searches", "suggestions", "confident")] +
          [(v["period"], v["searches"], v["suggestions"], pct(v["confident_share"])) for v in s["volume"]], "    ")
    print("  sources:")
    table([("source", "searches", "suggestions")] + [(r["source"], r["searches"], r["suggestions"])
                                                     for r in s["sources"]], "    ")
    print("  languages:")
    table([("language", "searches", "suggestions")] + [(r["language"], r["searches"], r["suggestions"])
                                                       for r in s["languages"]], "    ")
    print("  self-service per week:")
    table([("week", "suggestions", "used", "share")] + [(w["week"], w["suggestions"], w["used"], pct(w["share"]))
                                                        for w in ss["weeks"]], "    ")


def print_queries(q: dict) -> None:
    print(f"TOP QUERIES: {q['distinct_queries']:,} distinct of {q['answers']:,} searches and suggestions")
    notes(q)
    table([("query", "asked", "not confident", "first result, most often")] +
          [(row["query"] if row["query"] is not None else f"[{row['query_key']}]", row["count"],
            pct(row["not_confident_share"]), row["top_article"]["title"] if row["top_article"] else "-")
           for row in q["queries"]])


def print_gaps(g: dict) -> None:
    print(f"CONTENT GAPS: {g['gap_events']:,} without a good answer ({g['not_confident']:,} not confident, "
          f"{g['not_helpful']:,} not helpful); {g['grouped']:,} in {g['topic_count']:,} topics")
    notes(g)
    for topic in g["topics"]:
        near = topic["nearest_article"]
        print(f"  {topic['rank']:>2}. {topic['size']:,} events, {topic['trend']} ({topic['first_half']} -> "
              f"{topic['second_half']}); nearest: " + (f"{near['title']} ({near['cosine']:.2f})" if near else "-") +
              (f"; no article mentions {topic['not_covered']}" if topic.get("not_covered") else ""))
        for example in topic["examples"]:
            print(f"        \"{example}\"")
    if not g["topics"]:
        print("  (none)")


def print_articles(a: dict) -> None:
    print(f"ARTICLES: {a['total_articles']:,} shown or used; flags: " +
          ", ".join(f"{k} {v}" for k, v in a["flag_counts"].items()))
    notes(a)
    table([("article", "shown", "opened", "copied", "inserted", "linked", "helpful", "flags")] +
          [(row["title"][:60], row["shown"], row["opened"], row["copied"], row["inserted"], row["linked"],
            pct(row["helpful_rate"]), " ".join(row["flags"])) for row in a["articles"]])
    for key in ("owner", "product"):
        print(f"  per {key}:")
        table([(key, "articles", "shown", "opened", "helpful")] +
              [(row[key], row["articles"], row["shown"], row["opened"], pct(row["helpful_rate"]))
               for row in a[f"{key}s"]], "    ")


TEXT = {"summary": print_summary, "queries": print_queries, "gaps": print_gaps, "articles": print_articles}
