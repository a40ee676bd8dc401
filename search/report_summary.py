"""The summary report: volume over time, by source and language, latency, confidence, and self-service."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import numpy as np

from kb.database import Connection
from search.reports import (Days, ReportFilters, Reports, answer_filter, percentile, period_of, periods, share,
                            used_sql)


def summary_report(reports: Reports, filters: ReportFilters) -> dict:
    """Volume by day or week, by source and language; latency p50/p95 per kind; share confident; self-service."""
    weekly = filters.weekly
    slots = periods(filters, weekly)
    volume = {p.isoformat(): {"period": p.isoformat(), "days": n, "searches": 0, "suggestions": 0,
                              "confident": 0, "rated": 0} for p, n in slots}
    sources: dict[str, dict] = defaultdict(lambda: {"searches": 0, "suggestions": 0})
    languages: dict[str, dict] = defaultdict(lambda: {"searches": 0, "suggestions": 0})
    totals = {"searches": 0, "suggestions": 0, "confident": 0, "rated": 0, "no_results": 0}
    latency: dict[str, np.ndarray] = {"search": np.zeros(0), "suggest": np.zeros(0)}
    with reports.log.connect(filters, reports.catalog) as conn:
        notes = reports.notes(conn)
        if conn is not None:
            days = reports.days(conn, filters, usable=not filters.product)  # rollups keep no answer's product
            where, params = answer_filter(filters, days=days)
            rows = conn.execute(
                "SELECT day, kind, source, language, count(*), count(*) FILTER (WHERE confident = 1), "
                "count(confident), count(*) FILTER (WHERE result_count = 0) "
                f"FROM events e WHERE {where} GROUP BY day, kind, source, language",
                params).fetchall()
            if days.rolled:
                rolled, rolled_params = days.rollup_filter(filters)
                rows += conn.execute("SELECT day, kind, source, language, answers, confident, rated, no_results "
                                     f"FROM rollup_answers e WHERE {rolled}", rolled_params).fetchall()
            for day, kind, source, language, n, confident, rated, empty in rows:
                column = "searches" if kind == "search" else "suggestions"
                row = volume[period_of(day, filters, weekly)]
                row[column] += n
                row["confident"] += int(confident)
                row["rated"] += rated
                sources[source or "unknown"][column] += n
                languages[language or "unknown"][column] += n
                totals[column] += n
                totals["confident"] += int(confident)
                totals["rated"] += rated
                totals["no_results"] += int(empty)
            for kind in latency:  # fetched as arrays: cheaper than grouping by value in SQL
                rows = conn.execute(f"SELECT latency_ms FROM events e WHERE {where} AND e.kind = ? "
                                    "AND latency_ms IS NOT NULL", params + [kind]).fetchall()
                parts = [np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))]
                if days.rolled:
                    parts += [np.frombuffer(blob, dtype="<f8") for (blob,) in conn.execute(
                        f"SELECT latencies FROM rollup_latency e WHERE {rolled} AND e.kind = ?",
                        rolled_params + [kind])]
                latency[kind] = np.concatenate(parts)
            service = self_service(conn, filters, days)
        else:
            service = self_service_rows(filters, [])
    latency["all"] = np.concatenate([latency["search"], latency["suggest"]])
    return {
        "filters": filters.to_dict(), "granularity": "week" if weekly else "day",
        "totals": {"answers": totals["searches"] + totals["suggestions"], "searches": totals["searches"],
                   "suggestions": totals["suggestions"], "no_results": totals["no_results"],
                   "confident": totals["confident"], "rated": totals["rated"],
                   "confident_share": share(totals["confident"], totals["rated"])},
        "latency_ms": {kind: {"p50": percentile(values, 50), "p95": percentile(values, 95), "count": len(values)}
                       for kind, values in latency.items()},
        "volume": [{**{k: v for k, v in row.items() if k not in ("confident", "rated")},
                    "confident_share": share(row["confident"], row["rated"])} for row in volume.values()],
        "sources": ranked(sources, "source"), "languages": ranked(languages, "language"),
        "self_service": service, "notes": notes,
    }

def self_service(conn: Connection, filters: ReportFilters, days: Days = Days()) -> dict:
    """The share of suggestions whose answer an agent used, per week, source and language."""
    where, params = answer_filter(filters, days=days)
    used, used_params = used_sql(filters.since)
    rows = conn.execute(
        f"SELECT day, source, language, count(*), count(*) FILTER (WHERE {used}) FROM events e "
        f"WHERE {where} AND e.kind = 'suggest' GROUP BY day, source, language", used_params + params).fetchall()
    if days.rolled:  # `used` of a rolled-up day: by actions on it or later (none is dated before its answer)
        rolled, rolled_params = days.rollup_filter(filters)
        rows += conn.execute("SELECT day, source, language, answers, used FROM rollup_answers e "
                             f"WHERE {rolled} AND e.kind = 'suggest'", rolled_params).fetchall()
    return self_service_rows(filters, rows)

def self_service_rows(filters: ReportFilters, rows: list[tuple]) -> dict:
    weeks = {p.isoformat(): {"week": p.isoformat(), "days": n, "suggestions": 0, "used": 0}
             for p, n in periods(filters, weekly=True)}
    by: dict[str, dict[str, dict]] = {"source": defaultdict(lambda: {"suggestions": 0, "used": 0}),
                                      "language": defaultdict(lambda: {"suggestions": 0, "used": 0})}
    total = {"suggestions": 0, "used": 0}
    for day, source, language, n, used in rows:
        for bucket in (weeks[period_of(day, filters, True)], by["source"][source or "unknown"],
                       by["language"][language or "unknown"], total):
            bucket["suggestions"] += n
            bucket["used"] += int(used)

    def with_share(row: dict) -> dict:
        return {**row, "share": share(row["used"], row["suggestions"])}

    return {**with_share(total), "weeks": [with_share(w) for w in weeks.values()],
            "sources": [with_share({"source": k, **v}) for k, v in
                        sorted(by["source"].items(), key=lambda kv: (-kv[1]["suggestions"], kv[0]))],
            "languages": [with_share({"language": k, **v}) for k, v in
                          sorted(by["language"].items(), key=lambda kv: (-kv[1]["suggestions"], kv[0]))]}


def ranked(groups: Mapping[str, dict], name: str) -> list[dict]:
    """{key: {"searches", "suggestions"}} as rows with a total, most first."""
    rows = [{name: key, **value, "total": value["searches"] + value["suggestions"]} for key, value in groups.items()]
    return sorted(rows, key=lambda row: (-row["total"], row[name]))
