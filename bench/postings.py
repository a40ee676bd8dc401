"""BM25 from FTS5 against BM25 from postings arrays (kb/index/faiss_sqlite/postings.py), side by side in one process.

The version in --index-dir is opened as the service opens it; its postings arrays are read from its own FTS5 index
here (timed: what a build adds), written to a temp folder (size on disk) and opened (timed), then every call is made
once with the version reading FTS5 (`postings` None) and once with the arrays, the order turned every round, so that
both see the same machine load. Kinds: `lexical arm` (the BM25 query of a suggest alone, as LexicalSignal runs it,
with the service's settings: the postings budget acts above KB_LEXICAL_BUDGET_ABOVE), `suggest` and `search` (as the
API calls them, encoding included). Also checks that both give the same answers: the lexical arm's scores (keys may
differ only among passages tied at the cut) and every suggest's and search's article ids.
Tickets: bench/suggest_latency.py's 20 plus eval/tickets-dev's and eval/tickets-check's.
--deltas: instead, one-article delta builds through the backend on a copy of the version in --index-dir (one that
carries postings), each the article rewritten with its vectors moved a little: twice patching the arrays, once
without arrays (KB_POSTINGS_MIN_PASSAGES unset), once crossing the setting (the arrays read whole), wall seconds each.
Usage:
  .venv/bin/python bench/postings.py --index-dir /tmp/serve-bench/office-idx [--rounds 3] [--deltas]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.suggest_latency import TICKETS  # noqa: E402
from kb.embedder import make_embedder  # noqa: E402
from kb.index import open_backend  # noqa: E402
from kb.index.faiss_sqlite import postings  # noqa: E402
from kb.settings import load_settings  # noqa: E402
from search.evaluation import read_jsonl  # noqa: E402
from search.lexical import TermBudget, search_lexical  # noqa: E402
from search.searcher import Searcher, make_query  # noqa: E402
from search.tickets import build_query  # noqa: E402

SETS = (REPO_ROOT / "eval" / "tickets-dev", REPO_ROOT / "eval" / "tickets-check")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def same_scores(a: dict[int, float], b: dict[int, float]) -> bool:
    """Equal scores in order; keys equal except among passages tied with the last one."""
    if len(a) != len(b):
        return False
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    if not np.allclose(x, y, rtol=1e-9, atol=0):
        return False
    cut = y[-1] if len(y) else 0.0
    return {k for k, s in a.items() if s > cut * (1 + 1e-9)} == {k for k, s in b.items() if s > cut * (1 + 1e-9)}


def deltas(source: Path, ann_min_passages: int) -> dict:
    """One-article delta builds on a copy of `source`'s version: arrays patched (twice), none, arrays read whole."""
    root = Path(tempfile.mkdtemp(prefix="postings-delta-"))
    try:
        name = (source / "CURRENT").read_text().strip()
        shutil.copytree(source / name, root / name)
        shutil.copy(source / "CURRENT", root / "CURRENT")
        out = {}
        for step, min_passages in (("patched", 0), ("patched again", 0), ("no arrays", None), ("read whole", 0)):
            backend = open_backend(root, ann_min_passages=ann_min_passages, postings_min_passages=min_passages)
            with backend.open(check=False) as base:
                owners = base.passage_articles()
                article_id = owners[len(owners) // 2 + len(out)]
                keys = [k for k, a in enumerate(owners) if a == article_id]
                (article,) = base.articles([article_id], body=True)
                found = base.passages(keys)
                vectors = base.vectors(keys) + np.float32(0.01)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                manifest = {k: base.manifest[k] for k in ("model", "dim", "normalised") if k in base.manifest}
                had = base.postings is not None
                started = time.perf_counter()
                backend.write(backend.new_name(), [article], [found[k] for k in keys], vectors, manifest, base=base,
                              remove={article_id})
                wall = time.perf_counter() - started
            record = backend.manifest(backend.current()).get(postings.RECORD)
            out[step] = {"wall_s": round(wall, 2), "passages": len(keys), "base_had_arrays": had,
                         "arrays": None if record is None else record["postings"]}
            print(f"delta {step}: {out[step]}", flush=True)
            for old in [v for v in backend.list() if v != backend.current()]:
                shutil.rmtree(root / old)
        return out
    finally:
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deltas", action="store_true", help="time one-article delta builds instead")
    args = parser.parse_args()
    if args.deltas:
        load = os.getloadavg()
        figures = deltas(args.index_dir, load_settings({}).ann_min_passages)
        print(json.dumps({"index": str(args.index_dir), "deltas": figures,
                          "load": [round(load[0], 2), round(os.getloadavg()[0], 2)]}))
        return
    load = os.getloadavg()
    settings = load_settings({}, index_dir=args.index_dir)
    encoder = make_embedder(settings)
    encoder.load()
    version = open_backend(args.index_dir).open(model_id=encoder.model_id)
    searcher = Searcher(version, encoder, settings)
    total = version.size

    began = time.perf_counter()
    arrays = postings.read_postings(version.path / "meta.sqlite", total)
    read_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / postings.POSTINGS, "wb") as handle:
            np.savez(handle, **arrays)
        disk = (Path(tmp) / postings.POSTINGS).stat().st_size
        began = time.perf_counter()
        opened = postings.open_postings(Path(tmp), {postings.RECORD: {}}, total)
        open_s = time.perf_counter() - began
    memory = sum(a.nbytes for a in (opened.starts, opened.keys, opened.tf, opened.norm))
    own = version.postings  # a version built with postings already carries them: compare with them too
    if own is not None:
        assert len(own.keys) == len(opened.keys) and np.array_equal(own.tf, opened.tf)

    tickets = [{"subject": t["subject"], "body": t["body"]} for t in TICKETS]
    for folder in SETS:
        tickets += [{"subject": q.get("subject", ""), "body": q["text"], "lang": q.get("lang")}
                    for q in read_jsonl(folder / "queries.jsonl") if q.get("kind", "ticket") == "ticket"]
    lexical = []
    for t in tickets:
        ticket = build_query(t["subject"], t["body"], language=t.get("lang"), max_words=settings.query_max_words)
        lexical.append(make_query(ticket, t["subject"], searcher.glossary, searcher.embed).lexical)
    budget = TermBudget(settings.lexical_budget, settings.lexical_budget_above)
    variants = {"FTS5": None, "arrays": opened}
    answers: dict[tuple[str, str, int], object] = {}

    def call(kind: str, i: int, name: str) -> object:
        version.postings = variants[name]
        t = tickets[i]
        if kind == "lexical arm":
            return search_lexical(version, lexical[i], settings.candidates, df=searcher.term_df, total=total,
                                  budget=budget)
        if kind == "suggest":
            found = searcher.suggest(t["subject"], t["body"], k=5, language=t.get("lang"))
            return [a["id"] for a in found["articles"]]
        return [r["id"] for r in searcher.search(t["subject"] or t["body"][:80], k=10)["results"]]

    kinds = ("lexical arm", "suggest", "search")
    names = list(variants)
    for kind in kinds:  # warm-up: lazy loads, page cache, the tokenizer's words
        for i in range(len(tickets)):
            for name in names:
                answers[(kind, name, i)] = call(kind, i, name)
    times: dict[tuple[str, str], list[float]] = {(k, n): [] for k in kinds for n in names}
    for r in range(args.rounds):
        for i in range(len(tickets)):
            for kind in kinds:
                for name in (names if (r + i) % 2 == 0 else names[::-1]):
                    started = time.perf_counter()
                    call(kind, i, name)
                    times[(kind, name)].append((time.perf_counter() - started) * 1000)
    version.postings = own
    load_after = os.getloadavg()
    differing = {kind: sum(not (same_scores(answers[(kind, "arrays", i)], answers[(kind, "FTS5", i)])
                                if kind == "lexical arm" else answers[(kind, "arrays", i)] == answers[(kind, "FTS5", i)])
                           for i in range(len(tickets))) for kind in kinds}
    print(f"{args.index_dir}: {total} passages, {len(arrays['starts']) - 1} terms, {len(arrays['keys'])} postings; "
          f"{len(tickets)} tickets x {args.rounds} rounds; load average {load[0]:.2f} -> {load_after[0]:.2f}")
    print(f"arrays: read from FTS5 in {read_s:.1f} s, {disk / 2**20:.1f} MB on disk, opened in {open_s:.2f} s, "
          f"{memory / 2**20:.1f} MB in memory")
    print("| kind | variant | p50 ms | p99 ms | p50 / FTS5 | median per-call ratio | answers differing |")
    print("|---|---|---|---|---|---|---|")
    report: dict = {"index": str(args.index_dir), "passages": total, "postings": int(len(arrays["keys"])),
                    "tickets": len(tickets), "rounds": args.rounds, "read_s": round(read_s, 2),
                    "disk_mb": round(disk / 2**20, 1), "open_s": round(open_s, 3),
                    "memory_mb": round(memory / 2**20, 1), "load": [round(load[0], 2), round(load_after[0], 2)],
                    "differing": differing, "figures": {}}
    for kind in kinds:
        base = times[(kind, "FTS5")]
        for name in names:
            values = times[(kind, name)]
            ratio = statistics.median(v / b for v, b in zip(values, base))
            print(f"| {kind} | {name} | {percentile(values, 50):.1f} | {percentile(values, 99):.1f} | "
                  f"{percentile(values, 50) / percentile(base, 50):.2f} | {ratio:.2f} | "
                  f"{differing[kind] if name == 'arrays' else '-'} of {len(tickets)} |")
            report["figures"][f"{kind} | {name}"] = {"p50": round(percentile(values, 50), 2),
                                                     "p99": round(percentile(values, 99), 2),
                                                     "paired_ratio": round(ratio, 3)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
