"""Reports at scale: a synthetic analytics event log (1,000,000 events over 90 days by default), each report timed.

With --baseline DIR (a checkout of older code, e.g. `git archive <commit> | tar -x -C DIR`) the same reports are also
timed with that code, in a child process that runs each job when asked: the rounds of both are interleaved, so a
change in the machine's load falls on both.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("REPORTS_BENCH_CODE") or REPO)  # the code the reports are timed with (--baseline: older)
sys.path[:0] = [str(CODE)]

from kb import event_schema  # noqa: E402

SCHEMA = getattr(event_schema, "SQLITE", event_schema.SCHEMA)  # the SQLite script (older code: SCHEMA)

DIM = 384
PRODUCTS = ["Outlook", "Teams", "OneDrive", "SharePoint", "Exchange", "Excel", "Word", "Windows", "Intune",
            "Entra", "Billing", "Accounts"]
SOURCES_SEARCH = (["page", "api:crm-sidebar", "cli"], [0.86, 0.12, 0.02])
SOURCES_SUGGEST = (["widget", "webhook:zendesk", "webhook:freshdesk", "page", "api:zendesk-prod"],
                   [0.45, 0.30, 0.05, 0.10, 0.10])
OWNERS = ["support-outlook", "support-teams", "support-files", "support-identity", "support-billing", "kb-team"]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def int8(vectors: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.clip(np.round(vectors * 127), -127, 127).astype(np.int8)]


class Catalog:
    """Synthetic articles (ids, metadata, centroids) and topics: most topics have an article, some (the gaps) none."""

    def __init__(self, rng: np.random.Generator, n_articles: int = 2400, n_topics: int = 300, gap_share: float = 0.2):
        product_dirs = unit(rng.normal(size=(len(PRODUCTS), DIM)))
        self.topic_product = rng.integers(0, len(PRODUCTS), n_topics)
        # a topic's direction shares a part with its product (related topics are somewhat similar, as in real text)
        self.topics = unit(0.45 * product_dirs[self.topic_product] + unit(rng.normal(size=(n_topics, DIM))))
        self.gap = rng.random(n_topics) < gap_share
        self.popularity = 1.0 / np.arange(1, n_topics + 1) ** 0.8
        rng.shuffle(self.popularity)
        self.popularity /= self.popularity.sum()
        self.ids, self.meta = [], {}
        covered = np.flatnonzero(~self.gap)
        self.topic_article: dict[int, int] = {}
        vectors = []
        for i in range(n_articles):
            if i < len(covered):  # one article per covered topic, the rest spread over products
                topic = int(covered[i])
                self.topic_article[topic] = i
                product = int(self.topic_product[topic])
                vector = unit(self.topics[topic] + 0.5 * unit(rng.normal(size=DIM)))
            else:
                product = int(rng.integers(0, len(PRODUCTS)))
                vector = unit(0.45 * product_dirs[product] + unit(rng.normal(size=DIM)))
            article_id = f"{PRODUCTS[product]}/article-{i:04d}"
            self.ids.append(article_id)
            vectors.append(vector)
            reviewed = dt.date(2026, 1, 1) + dt.timedelta(days=int(rng.integers(0, 330)))
            self.meta[article_id] = {"title": f"{PRODUCTS[product]} article {i}", "summary": "",
                                     "product": PRODUCTS[product], "language": "id" if rng.random() < 0.15 else "en",
                                     "audience": "public", "owner": OWNERS[int(rng.integers(0, len(OWNERS)))],
                                     "reviewed": reviewed.isoformat()}
        self.centroids = np.asarray(vectors, dtype=np.float32)
        self.by_product = {p: [i for i, a in enumerate(self.ids) if self.meta[a]["product"] == PRODUCTS[p]]
                           for p in range(len(PRODUCTS))}


def generate(path: Path, events: int = 1_000_000, days: int = 90, end: dt.date | None = None, seed: int = 7,
             phrasings: int = 40) -> Catalog:
    """Write a synthetic event log of about `events` events over `days` days ending on `end` into `path`."""
    rng = np.random.default_rng(seed)
    catalog = Catalog(rng)
    end = end or dt.datetime.now(dt.timezone.utc).date()
    start = dt.datetime.combine(end - dt.timedelta(days=days - 1), dt.time(), dt.timezone.utc)
    answers = int(events / 1.55)  # about 0.55 actions per answer
    # answer times: weekdays busier than weekends, office hours busier than nights
    day_weights = np.array([1.0 if (start + dt.timedelta(days=d)).weekday() < 5 else 0.35 for d in range(days)])
    day = rng.choice(days, size=answers, p=day_weights / day_weights.sum())
    seconds = np.sort(day * 86400 + np.clip(rng.normal(13 * 3600, 3 * 3600, answers), 0, 86399))
    topic = rng.choice(len(catalog.topics), size=answers, p=catalog.popularity)
    suggest = rng.random(answers) < 0.4
    language = np.where(rng.random(answers) < 0.25, "id", "en")
    phrasing = np.minimum(rng.zipf(1.6, answers) - 1, phrasings - 1)
    # distinct queries: searches reuse a topic's few phrasings; tickets are (nearly) all different
    key_noise = unit(rng.normal(size=(len(catalog.topics), phrasings, DIM)))
    rows, results = [], []
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '1')")
    batch = 50_000
    event_id = 0
    pending: list[tuple] = []
    for lo in range(0, answers, batch):
        hi = min(lo + batch, answers)
        t = topic[lo:hi]
        ticket_noise = unit(rng.normal(size=(hi - lo, DIM)))
        noise = np.where(suggest[lo:hi, None], ticket_noise, key_noise[t, phrasing[lo:hi]])
        vectors = int8(unit(catalog.topics[t] + 0.85 * noise))
        gap = catalog.gap[t]
        confidence = np.clip(np.where(gap, rng.beta(2, 7, hi - lo), rng.beta(7, 2, hi - lo)), 0, 1)
        latency = rng.lognormal(np.where(suggest[lo:hi], 3.7, 3.2), 0.35)
        for j in range(hi - lo):
            n = lo + j
            at = start + dt.timedelta(seconds=float(seconds[n]))
            kind = "suggest" if suggest[n] else "search"
            names, weights = SOURCES_SUGGEST if suggest[n] else SOURCES_SEARCH
            source = names[int(rng.choice(len(names), p=weights))]
            tp = int(t[j])
            if suggest[n]:
                key = hashlib.sha256(f"ticket-{n}".encode()).hexdigest()[:16]
                text = f"ticket about topic {tp} number {n}"
            else:
                key = hashlib.sha256(f"q-{tp}-{phrasing[n]}".encode()).hexdigest()[:16]
                text = f"question about topic {tp} phrased way {phrasing[n]}"
            product = PRODUCTS[catalog.topic_product[tp]] if not suggest[n] and rng.random() < 0.2 else None
            pool = catalog.by_product[int(catalog.topic_product[tp])]
            shown = list(rng.choice(pool, size=5, replace=False))
            if tp in catalog.topic_article and rng.random() < 0.85:
                shown = [catalog.topic_article[tp]] + [a for a in shown if a != catalog.topic_article[tp]][:4]
            answer_id = f"a{n:08x}"
            confident = int(confidence[j] >= 0.5)
            pending.append((at, (kind, source, answer_id, str(language[n]), product, text, key, vectors[j],
                                 round(float(confidence[j]), 4), confident, round(float(latency[j]), 2), 5, None, None,
                                 None), [catalog.ids[a] for a in shown]))
            actions = []
            if rng.random() < 0.33:
                actions.append(("open", 1 if rng.random() < 0.6 else int(rng.integers(2, 6))))
            if rng.random() < 0.07:
                actions.append(("copy", 1))
            if suggest[n] and rng.random() < (0.25 if confident else 0.06):
                actions.append(("insert", 1))
            if suggest[n] and rng.random() < (0.12 if confident else 0.03):
                actions.append(("link", 1))
            if rng.random() < 0.09:
                actions.append(("feedback", 1))
            for k, (action, position) in enumerate(actions):
                article = catalog.ids[shown[position - 1]]
                helpful = int(rng.random() < (0.75 if confident else 0.25)) if action == "feedback" else None
                # as kb/events.py writes actions: no language of their own (it is their answer's), the article's product
                pending.append((at + dt.timedelta(seconds=20 + 40 * k), (
                    action, source, answer_id, None, catalog.meta[article]["product"], None, None, None,
                    None, None, None, None, article, position, helpful), None))
        # write everything older than this batch's last answer in time order (ids grow with time, as the writer's)
        pending.sort(key=lambda item: item[0])
        cutoff = start + dt.timedelta(seconds=float(seconds[hi - 1])) if hi < answers else None
        keep = [p for p in pending if cutoff is not None and p[0] > cutoff]
        write = pending[:len(pending) - len(keep)]
        pending = keep
        rows.clear()
        results.clear()
        for at, values, shown_ids in write:
            event_id += 1
            stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
            rows.append((event_id, stamp, stamp[:10], *values))
            if shown_ids:
                results.extend((event_id, pos, aid, round(1.0 - 0.05 * pos, 3)) for pos, aid in enumerate(shown_ids, 1))
        conn.executemany("INSERT INTO events (id, at, day, kind, source, answer_id, language, product, query, "
                         "query_key, topic_vector, confidence, confident, latency_ms, result_count, article_id, "
                         "position, helpful)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?)", results)
        conn.commit()
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return catalog


def gap_purity(reports, filters) -> dict:
    """Purity of the gap topics against the synthetic topics (each query's text names its topic)."""
    from search.content_gaps import gap_rows
    from search.topics import group_topics, inverse_purity, purity, threshold_for

    rows = gap_rows(reports, filters)
    grouping = group_topics(rows["vectors"], rows["counts"], threshold_for(reports.model))
    truth = np.array([int(text.split("topic ")[1].split()[0]) for text in rows["texts"]])
    return {"purity": round(purity(grouping.labels, truth, rows["counts"]), 4),
            "inverse_purity": round(inverse_purity(grouping.labels, truth, rows["counts"]), 4),
            "topics": grouping.count, "true_topics": int(len(np.unique(truth)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, default=Path("/tmp/kb-reports-bench.sqlite"),
                        help="event log to write (kept and reused when it exists; --regenerate to rewrite)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each report (the median is reported)")
    parser.add_argument("--skip-purity", action="store_true", help="do not measure gap topic purity")
    parser.add_argument("--page-workers", default="2", help="comma-separated thread counts to time the page with, "
                        "side by side (1 = the four reports one after another; /reports uses 2)")
    parser.add_argument("--baseline", type=Path, help="a checkout of older code: time its reports too, interleaved")
    parser.add_argument("--cases", default="90,30,id,outlook", help="filter sets to time, comma-separated: 90 "
                        "(90 days), 30 (30 days), id (90 days, language id), outlook (90 days, product Outlook)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the --baseline child
    args = parser.parse_args()
    if args.regenerate and args.db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(args.db) + suffix).unlink(missing_ok=True)
    started = time.perf_counter()
    if not args.db.exists():
        generate(args.db, args.events, args.days)
        print(f"generated {args.db} in {time.perf_counter() - started:.1f} s")
    conn = sqlite3.connect(args.db)
    events, first, last = conn.execute("SELECT count(*), min(day), max(day) FROM events").fetchone()
    today = conn.execute("SELECT max(day) FROM events WHERE kind IN ('search', 'suggest')").fetchone()[0]
    indexes = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                              "tbl_name = 'events'")]
    rollup_seconds = None
    if not args.serve:  # as the writer leaves the log: the days before the last day of answers ("today") rolled up
        # at midnight, today's events written since (the reports read them, and the days their actions touch)
        from kb import event_rollups
        from kb.database import Connection

        conn.executescript(SCHEMA)
        t0 = time.perf_counter()
        midnight = conn.execute("SELECT min(id) - 1 FROM events WHERE day >= ?", (today,)).fetchone()[0]
        db = Connection(sqlite3.connect(args.db, isolation_level=None), "sqlite")
        _, days = event_rollups.pending(db, dt.date.fromisoformat(today))
        for day in days:
            event_rollups.roll_up(db, day, midnight)
        event_rollups.set_watermark(db, midnight)
        db.close()
        rollup_seconds = round(time.perf_counter() - t0, 1)
        print(f"rolled up {len(days)} closed days before {today} in {rollup_seconds} s")
    conn.close()
    from search.reports import Catalog as ReportCatalog, Reports, parse_filters

    catalog = Catalog(np.random.default_rng(7))  # the same seed as generate(): the same articles and vectors
    reports = Reports(args.db, ReportCatalog(catalog.meta, catalog.ids, catalog.centroids),
                      today=dt.date.fromisoformat(last))
    last_day = dt.date.fromisoformat(last)
    every_case = {"90 days": parse_filters(first, last),
                  "30 days": parse_filters(str(last_day - dt.timedelta(days=29)), last),
                  "90 days, language id": parse_filters(first, last, language="id"),
                  "90 days, product Outlook": parse_filters(first, last, product="Outlook")}
    short = dict(zip(("90", "30", "id", "outlook"), every_case))
    cases = every_case if args.serve else {short[name]: every_case[short[name]] for name in args.cases.split(",")}
    from concurrent.futures import ThreadPoolExecutor

    def page(filters, workers: int) -> None:  # what /reports computes when nothing is cached: the four reports
        with ThreadPoolExecutor(max_workers=workers) as pool:
            [f.result() for f in [pool.submit(getattr(reports, n), filters) for n in ("summary", "queries", "gaps",
                                                                                     "articles")]]

    jobs = {"summary": lambda f: reports.summary(f), "queries": lambda f: reports.queries(f),
            "gaps": lambda f: reports.gaps(f), "articles": lambda f: reports.articles(f)}
    for workers in (int(w) for w in args.page_workers.split(",")):
        jobs[f"page/{workers}"] = lambda f, w=workers: page(f, w)

    def timed(label: str, name: str) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process: every thread, SQLite's and numpy's work included)."""
        t0, c0 = time.perf_counter(), time.process_time()
        jobs[name](cases[label])
        return time.perf_counter() - t0, time.process_time() - c0

    if args.serve:  # the --baseline child: one "case<TAB>job" a line in, its seconds out
        print("ready", flush=True)
        for line in sys.stdin:
            label, name = line.rstrip("\n").split("\t")
            print("%.6f %.6f" % timed(label, name), flush=True)
        return
    print(f"{args.db}: {events:,} events, {first} .. {last}, {os.path.getsize(args.db) / 1e6:,.0f} MB; "
          f"indexes on events: {', '.join(indexes)}")
    load = os.getloadavg()
    if load[0] > 0.5:
        print(f"WARNING: 1-minute load average is {load[0]:.2f}: other processes share the CPUs")
    baseline = None
    if args.baseline:
        baseline = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", "--db", str(args.db), "--page-workers",
             args.page_workers], env={**os.environ, "REPORTS_BENCH_CODE": str(args.baseline.resolve())},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert baseline.stdout.readline().strip() == "ready"

    def ask_baseline(label: str, name: str) -> tuple[float, float]:
        baseline.stdin.write(f"{label}\t{name}\n")
        baseline.stdin.flush()
        wall, cpu = baseline.stdout.readline().split()
        return float(wall), float(cpu)

    figures: dict = {"events": events, "db_mb": round(os.path.getsize(args.db) / 1e6), "load_at_start": load,
                     "report_index": "events_report" in indexes, "rollup_build_seconds": rollup_seconds,
                     "today": today, "seconds": {}, "baseline_seconds": {}, "cpu_seconds": {},
                     "baseline_cpu_seconds": {}, "baseline": str(args.baseline or "")}
    print(f"{'filters':<34}" + "".join(f"{name:>10}" for name in jobs) + f"  (median of {args.repeat}, s; CPU: "
          "seconds of CPU the process used, all threads)")
    for label in cases:
        times: dict[str, list[float]] = {name: [] for name in jobs}
        before: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeat):  # rounds interleaved: a change in the machine's load falls on every column
            for name in jobs:
                times[name].append(timed(label, name))
                if baseline is not None:
                    before[name].append(ask_baseline(label, name))
        rows = {"": times, " (before)": before} if baseline is not None else {"": times}
        for measure, column in (("seconds", 0), ("cpu_seconds", 1)):
            for suffix, series in rows.items():
                row = {name: round(sorted(t[column] for t in ts)[len(ts) // 2], 3) for name, ts in series.items()}
                figures[("baseline_" if suffix else "") + measure][label] = row
                print(f"{label + suffix + (', CPU' if column else ''):<34}" + "".join(f"{row[n]:>10.3f}"
                                                                                     for n in jobs))
            if baseline is not None:
                after, older = figures[measure][label], figures["baseline_" + measure][label]
                print(f"{label + ' before / after' + (', CPU' if column else ''):<34}"
                      + "".join(f"{older[n] / after[n]:>9.1f}x" for n in jobs))
    figures["load_at_end"] = os.getloadavg()
    if baseline is not None:
        baseline.stdin.close()
        baseline.wait(timeout=60)
    if not args.skip_purity:
        figures["gap_purity_30_days"] = gap_purity(reports, every_case["30 days"])
        print(f"gap topics, last 30 days: {figures['gap_purity_30_days']}")
    print(f"load average at the end: {' / '.join(f'{x:.2f}' for x in figures['load_at_end'])} (1 / 5 / 15 min)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
