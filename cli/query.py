"""`kb search` and `kb suggest`: one query answered in this process without torch, or by a running `kb serve`."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from typing import Iterator

from kb.settings import Settings


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    answering = argparse.ArgumentParser(add_help=False)
    answering.add_argument("-k", type=int, default=5, help="how many articles (default 5)")
    answering.add_argument("--json", action="store_true", help="print the response as one JSON object, nothing else")
    answering.add_argument("--quiet", action="store_true", help="print the verdict and the results only: no "
                           "progress, log lines or warnings")
    answering.add_argument("--url", help="ask the kb serve at URL (e.g. http://127.0.0.1:8000) instead of opening "
                           "the index here; when nothing answers there, the index is opened here")
    answering.add_argument("--api-key-file", metavar="FILE", help="file holding an API key for --url (first "
                           "line), for a service that requires keys (kb keys create NAME --scope search --scope "
                           "suggest)")

    p = sub.add_parser("search", parents=[common, answering], help="search from the command line")
    p.add_argument("query")
    p.add_argument("--product")
    p.add_argument("--language")
    p.add_argument("--mode", default="fused", choices=["fused", "dense", "lexical"])

    p = sub.add_parser("suggest", parents=[common, answering], help="suggest articles for a ticket read from stdin")
    p.add_argument("--subject", default="")


@contextlib.contextmanager
def silenced(args: argparse.Namespace) -> Iterator[None]:
    """No progress bars ever (one query does not need them); with --quiet or --json no log lines or warnings
    either, so that stdout holds the result alone and stderr stays empty unless the command fails. Everything is
    put back afterwards (tests call `main()` in their own process)."""
    names = ["HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"]  # transformers' "Loading weights" bar, tqdm's
    if args.quiet or args.json:
        names.append("TRANSFORMERS_VERBOSITY")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "error" if name == "TRANSFORMERS_VERBOSITY" else "1" for name in names})
    with warnings.catch_warnings():
        if args.quiet or args.json:
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def local_searcher(settings: Settings):
    """The index in service opened here; queries are encoded without torch once a verified ONNX export exists
    (written by the first full load, e.g. the first `kb search` or `kb serve`)."""
    from kb.embedder import make_embedder
    from kb.index import backend_for
    from search.searcher import Searcher

    encoder = make_embedder(settings, queries_without_torch=True)
    return Searcher(backend_for(settings).open(model_id=encoder.model_id), encoder, settings)


def ask(args: argparse.Namespace, settings: Settings, remote, local) -> dict:
    """`remote(service)` when --url names a service that answers, else `local(searcher)`."""
    if args.url:
        from cli.remote import Service, Unreachable, read_key

        try:
            return remote(Service(args.url, read_key(args.api_key_file)))
        except Unreachable as exc:
            if not (args.quiet or args.json):
                print(f"kb {args.command}: {exc.message}; opening the index here", file=sys.stderr)
    return local(local_searcher(settings))


def verdict(result: dict) -> str | None:
    """The line that says whether the knowledge base has a good answer, with the confidence."""
    if result.get("confident") is None:
        return None  # lexical mode: not assessed
    confidence = result.get("confidence")
    figure = f"confidence {confidence:.2f}" if confidence is not None else "confidence unknown"
    if result["confident"]:
        return f"good match ({figure})"
    if result.get("not_covered"):
        return f"no good article found ({figure}): no article mentions {result['not_covered']}; " \
               "the closest matches follow"
    return f"no good article found ({figure}); the closest matches follow"


def print_passages(passages: list[dict], indent: str = "    ") -> None:
    for p in passages:
        heading = " > ".join(p["heading_path"]) or "(intro)"
        marked = [p["snippet"][s:e] for s, e in p["highlights"]] or [p["snippet"][:200]]
        print(f"{indent}{heading}  [{p['score']:.3f}]  {p['url']}")
        for sentence in marked:
            print(f"{indent}  > {' '.join(sentence.split())[:300]}")


def print_json(result: dict) -> None:
    print(json.dumps(result, indent=2, ensure_ascii=False))


def run_search(args: argparse.Namespace, settings: Settings) -> int:
    def local(searcher) -> dict:
        from search.searcher import Filters  # faiss and the rest: not imported when a service answers

        return searcher.search(args.query, args.k, Filters(args.product, args.language), args.mode)

    with silenced(args):
        result = ask(args, settings,
                     lambda service: service.search(args.query, args.k, args.product, args.language, args.mode),
                     local)
    if args.json:
        print_json(result)
        return 0
    if line := verdict(result):
        print(line)
    if not result["results"]:
        print("no results")
    for n, hit in enumerate(result["results"], 1):
        print(f"{n}. {hit['title']}  [{hit['score']:.3f}]  {hit['id']}")
        print_passages(hit["passages"][:1])
    return 0


def run_suggest(args: argparse.Namespace, settings: Settings) -> int:
    body = sys.stdin.read()
    with silenced(args):
        result = ask(args, settings, lambda service: service.suggest(args.subject, body, args.k),
                     lambda searcher: searcher.suggest(args.subject, body, k=args.k))
    if args.json:
        print_json(result)
        return 0
    if not args.quiet:
        print(f"query: {result['query']['text'][:200]!r} codes={result['query']['codes']} "
              f"language={result['query']['language']}")
    if line := verdict(result):
        print(line)
    print("answers:")
    for n, hit in enumerate(result["answers"], 1):
        print(f"{n}. {hit['title']}")
        print_passages([hit])
    print("articles:")
    for n, article in enumerate(result["articles"], 1):
        print(f"{n}. {article['title']}  [{article['score']:.3f}]  {article['url']}")
    return 0
