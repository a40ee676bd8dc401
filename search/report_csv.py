"""Reports as CSV: one table per report, safe to open in a spreadsheet, and the file name a download gets."""
from __future__ import annotations

import csv
import io
import re
from typing import Any, Callable, Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a cell starting so would run as a formula in a spreadsheet


def cell(value: Any) -> Any:
    """A CSV cell: None empty, text that a spreadsheet would read as a formula prefixed with ' (OWASP)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def summary_rows(report: dict) -> tuple[list[str], Iterable[list]]:
    """Volume per day (or week): the series the summary's chart draws."""
    header = ["period", "days", "searches", "suggestions", "confident_share"]
    return header, ([row[name] for name in header] for row in report["volume"])


def queries_rows(report: dict) -> tuple[list[str], Iterable[list]]:
    header = ["query_key", "query", "count", "not_confident", "not_confident_share", "top_article_id",
              "top_article_title", "top_article_count"]

    def row(q: dict) -> list:
        top = q["top_article"] or {}
        return [q["query_key"], q["query"], q["count"], q["not_confident"], q["not_confident_share"], top.get("id"),
                top.get("title"), top.get("count")]

    return header, (row(q) for q in report["queries"])


def gaps_rows(report: dict) -> tuple[list[str], Iterable[list]]:
    header = ["rank", "size", "queries", "not_confident", "not_helpful", "first_half", "second_half", "trend",
              "change", "example_1", "example_2", "example_3", "nearest_article_id", "nearest_article_title",
              "nearest_cosine", "not_covered"]

    def row(t: dict) -> list:
        near = t["nearest_article"] or {}
        examples = (t["examples"] + [None, None, None])[:3]
        return [t["rank"], t["size"], t["queries"], t["not_confident"], t["not_helpful"], t["first_half"],
                t["second_half"], t["trend"], t["change"], *examples, near.get("id"), near.get("title"),
                near.get("cosine"), t.get("not_covered")]

    return header, (row(t) for t in report["topics"])


def articles_rows(report: dict) -> tuple[list[str], Iterable[list]]:
    header = ["id", "title", "product", "owner", "reviewed", "shown", "opened", "copied", "inserted", "linked",
              "helpful", "not_helpful", "helpful_rate", "flags"]
    return header, ([*(a[name] for name in header[:-1]), " ".join(a["flags"])] for a in report["articles"])


TABLES: dict[str, Callable[[dict], tuple[list[str], Iterable[list]]]] = {
    "summary": summary_rows, "queries": queries_rows, "gaps": gaps_rows, "articles": articles_rows}


def to_csv(name: str, report: dict) -> str:
    """The report called `name` (summary, queries, gaps, articles) as CSV text with a header row."""
    header, rows = TABLES[name](report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([cell(value) for value in row] for row in rows)
    return out.getvalue()


def filename(name: str, filters: dict) -> str:
    """kb-<report>-<since>-<until>[-<language>][-<product>].csv, with only safe characters."""
    parts = ["kb", name, filters["since"], filters["until"], filters.get("language"), filters.get("product")]
    stem = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)) for p in parts if p)
    return f"{stem}.csv"
