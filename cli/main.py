"""The `kb` console script: parses flags into Settings and runs one command."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

from cli import integrations, keys, query, report
from kb.errors import BadRequest, KBError
from kb.settings import Settings, describe_settings, load_settings, to_environment


def build_parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {env:<22} {help} (default: {default})" for _, env, default, help in describe_settings())
    parser = argparse.ArgumentParser(prog="kb", description="KB Search: index Markdown articles and serve search.",
                                     epilog="Settings from the environment:\n" + env_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kb {metadata.version('kb-search')}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--content", dest="content_dir", help="content folder (KB_CONTENT_DIR, default ./content)")
    common.add_argument("--index-dir", dest="index_dir", help="index folder (KB_INDEX_DIR, default ./var/index)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", parents=[common], help="build or update the index from the content folder")
    p.add_argument("--full", action="store_true", help="rebuild everything instead of only what changed")
    p.add_argument("--strict", action="store_true", help="fail on any content error instead of skipping the file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("serve", parents=[common], help="serve the HTTP API")
    p.add_argument("--host", help="bind address (KB_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (KB_PORT, default 8000)")
    p.add_argument("--workers", type=int, help="worker processes over the same index folder (KB_WORKERS, default 1); "
                   "each follows new versions, one of them watches the content folder")
    p.add_argument("--watch", action=argparse.BooleanOptionalAction, default=None,
                   help="re-index the content folder when it changes and swap the new version in without a "
                        "restart (KB_WATCH, default on); --no-watch only follows versions built by other processes")
    p.add_argument("--insecure", action="store_true",
                   help="allow KB_AUTH=off on an address other than loopback (anyone who reaches the port can "
                        "search, read internal articles and start builds)")

    p = sub.add_parser("watch", parents=[common], help="watch the content folder and re-index on change "
                       "(a separate process; a running `kb serve` picks each new version up)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    query.add_parsers(sub, common)

    p = sub.add_parser("eval", parents=[common], help="evaluate retrieval on a BEIR folder or a ticket set",
                       description="A folder with corpus.jsonl is a BEIR set (one passage per document); a folder "
                                   "without it is a ticket set (queries.jsonl, qrels.tsv) evaluated against the "
                                   "Markdown knowledge base given by --content, indexed into --index-dir.")
    p.add_argument("dataset", type=Path, help="folder with queries.jsonl and qrels.tsv (and corpus.jsonl for BEIR)")
    p.add_argument("--limit", type=int, help="evaluate only the first N queries")
    p.add_argument("--weights", help="comma-separated lexical weights to compare (default: the setting)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--confidence", action="store_true",
                   help="ticket sets: also measure how well `confident` separates answerable from unanswerable "
                        "tickets and print a calibration refitted on this set")

    p = sub.add_parser("check", parents=[common], help="check content health: links, front matter, duplicates, "
                       "staleness (exit 1 on errors)",
                       description="Checks the content folder for writers and CI: invalid front matter, broken "
                                   "links and anchors, missing includes (errors: exit code 1), empty sections, "
                                   "duplicate and near-duplicate articles (with an index), stale articles, old "
                                   "drafts and articles no search has returned (warnings).")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--today", help="date to measure ages from, YYYY-MM-DD (default: today), for reproducible runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar, and list errors only (warnings are "
                   "still counted)")
    keys.add_parser(sub)
    integrations.add_parser(sub)
    report.add_parser(sub)
    return parser


def run_index(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.build import build_index
    from kb.embedder import make_embedder

    report = build_index(settings, make_embedder(settings, for_queries=False), full=args.full, strict=args.strict,
                         progress=not args.quiet)
    for problem in report.problems:
        print(f"{settings.content_dir / problem.path}:{problem.line}: {problem.severity}: {problem.message}",
              file=sys.stderr)
    print(report.summary())
    return 1 if (args.strict and report.errors) else 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from cli.preflight import check_serve, content_given
    from search.app import create_app

    # before any slow work: KB_AUTH=off on a network address, a taken port, another folder's index
    check_serve(settings, content_given(args.content_dir), args.insecure)
    watch = settings.watch if args.watch is None else args.watch
    workers = settings.workers if args.workers is None else args.workers
    if workers < 1:
        raise BadRequest(f"--workers must be at least 1, got {workers}")
    if workers > 1:  # uvicorn starts each worker from an import string: the settings travel as KB_* variables
        from search.metrics_folder import worker_metrics_folder

        os.environ.update(to_environment(dataclasses.replace(settings, watch=watch, workers=workers)))
        with worker_metrics_folder():  # PROMETHEUS_MULTIPROC_DIR: /metrics of any worker counts all of them
            uvicorn.run("search.app:app_from_environment", factory=True, workers=workers, host=settings.host,
                        port=settings.port, log_level=settings.log_level, proxy_headers=False)
        return 0
    # proxy_headers=False: the peer address stays the real one, so that only KB_TRUSTED_PROXIES may name agents
    uvicorn.run(create_app(settings, watch=watch), host=settings.host, port=settings.port,
                log_level=settings.log_level, proxy_headers=False)
    return 0


def run_watch(args: argparse.Namespace, settings: Settings) -> int:
    import threading

    from indexer.build import build_index
    from indexer.watch import watch_content
    from kb.embedder import make_embedder
    from kb.errors import Conflict, ContentError

    encoder = make_embedder(settings, for_queries=False)

    def build(paths: set[str] | None = None) -> None:
        try:
            report = build_index(settings, encoder, progress=not args.quiet)
        except (Conflict, ContentError) as exc:  # another builder, or an empty folder: wait for the next change
            print(f"kb watch: {exc.message}", file=sys.stderr)
            return
        for problem in report.problems:
            print(f"{settings.content_dir / problem.path}:{problem.line}: {problem.severity}: {problem.message}",
                  file=sys.stderr)
        print(report.summary(), flush=True)

    if not settings.content_dir.is_dir():
        raise ContentError(f"content folder {settings.content_dir} does not exist")
    build()
    print(f"watching {settings.content_dir} (Ctrl+C to stop)", flush=True)
    stop = threading.Event()
    try:
        watch_content(settings.content_dir, build, settings.watch_debounce_ms, stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def open_searcher(settings: Settings, encoder=None):
    from kb.embedder import make_embedder
    from kb.index import backend_for
    from search.searcher import Searcher

    encoder = encoder or make_embedder(settings)
    return Searcher(backend_for(settings).open(model_id=encoder.model_id), encoder, settings)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from kb.embedder import make_embedder
    from search.evaluation import evaluate_beir, format_table

    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else [settings.lexical_weight]
    except ValueError:
        raise BadRequest(f"--weights must be numbers separated by commas, got {args.weights!r}") from None
    missing = [name for name in ("queries.jsonl", "qrels.tsv") if not (args.dataset / name).is_file()]
    if missing:
        raise BadRequest(f"{args.dataset} has no {' or '.join(missing)}: give a folder with queries.jsonl and "
                         "qrels.tsv (plus corpus.jsonl for a BEIR set)")
    if (args.dataset / "corpus.jsonl").is_file():
        results = evaluate_beir(args.dataset, make_embedder(settings), settings, weights=weights, limit=args.limit)
        print(json.dumps(results, indent=2) if args.json else format_table(results, args.dataset))
        return 0
    from indexer.build import build_index
    from search.ticket_evaluation import evaluate_tickets, format_ticket_table

    if args.index_dir is None:  # never build an evaluation corpus into the index the service answers from
        digest = hashlib.sha256(str(settings.content_dir.resolve()).encode()).hexdigest()[:8]
        eval_dir = settings.index_dir.parent / "eval" / f"{settings.content_dir.resolve().name}-{digest}"
        # On Milvus, a milvus-lite file in that folder: never collections beside the service's on KB_MILVUS_URI.
        settings = dataclasses.replace(settings, index_dir=eval_dir, milvus_uri="")
    encoder = make_embedder(settings)
    print(build_index(settings, encoder, progress=False).summary(), file=sys.stderr)
    searcher = open_searcher(settings, encoder)
    results = evaluate_tickets(args.dataset, searcher, weights)
    print(json.dumps(results, indent=2) if args.json else format_ticket_table(results))
    if args.confidence:
        from search.ticket_evaluation import evaluate_confidence

        print(json.dumps(evaluate_confidence(args.dataset, searcher), indent=2))
    return 0


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    import datetime as dt
    import os

    from indexer.health import check_content
    from indexer.health_report import format_report

    try:
        today = dt.date.fromisoformat(args.today) if args.today else None
    except ValueError:
        raise BadRequest(f"--today must be a date as YYYY-MM-DD, got {args.today!r}") from None
    report = check_content(settings, today=today, progress=not (args.quiet or args.json),
                           workers=os.cpu_count() or 1)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report, settings.content_dir, errors_only=args.quiet))
    return 1 if report.errors else 0


COMMANDS = {"index": run_index, "serve": run_serve, "watch": run_watch, "search": query.run_search,
            "suggest": query.run_suggest, "eval": run_eval, "check": run_check, "keys": keys.run,
            "integrations": integrations.run, "report": report.run}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = load_settings(content_dir=getattr(args, "content_dir", None),
                                 index_dir=getattr(args, "index_dir", None),
                                 host=getattr(args, "host", None), port=getattr(args, "port", None))
        return COMMANDS[args.command](args, settings)
    except KBError as exc:
        print(f"kb {args.command}: error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
