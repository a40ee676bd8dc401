"""What a Milvus version's integrity check costs (issue 15, kb/index/milvus/contents.py): opening a version with and
without reading its passages and articles back against its manifest's digest, at N synthetic passages.

Usage: .venv/bin/python eval/studies/milvus_verify_cost.py --passages 200000 --dir /tmp/mvbench/idx200k [--runs 3]
Writes (once; a later run with the same --dir and --passages reuses it) a version of N passages of 40 random words,
16 passages an article, random unit vectors of 384 dims, into a milvus-lite file in --dir; then times, per run:
open without checks, open with them, the reader's verify, and the two read-backs on their own.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from kb.index import ArticleRecord, PassageRecord, open_backend
from kb.index.milvus import contents
from kb.index.milvus.collections import DATA_SUFFIX, PREFIX

DIM, PER_ARTICLE, BATCH = 384, 16, 4000
WORDS = "outlook teams password mailbox sync error printer driver update account license calendar".split()


def write(backend, n: int) -> str:
    rng = np.random.default_rng(1)
    name = backend.new_name()
    started = time.perf_counter()
    with backend.writer(name, DIM) as writer:
        for start in range(0, n, BATCH):
            size = min(BATCH, n - start)
            articles = [ArticleRecord(f"a/{k}", f"a/{k}.md", f"Article {k} {WORDS[k % len(WORDS)]}", product="P",
                                      body="b", source_hash=f"{k:064x}")
                        for k in range(start // PER_ARTICLE, (start + size) // PER_ARTICLE)]
            passages = [PassageRecord(f"a/{(start + i) // PER_ARTICLE}#p{i}", f"a/{(start + i) // PER_ARTICLE}", ("H",),
                                      f"p{i}", " ".join(rng.choice(WORDS, 40)), f"{start + i:064x}")
                        for i in range(size)]
            vectors = rng.normal(size=(size, DIM)).astype(np.float32)
            writer.add(articles, passages, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        writer.commit({"model": "bench", "dim": DIM})
    print(f"wrote {name}: {n} passages in {time.perf_counter() - started:.1f} s", flush=True)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/milvus-verify-cost"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    backend = open_backend(args.dir, "milvus")
    found = [n for n in backend.list() if backend.manifest(n)["counts"]["passages"] == args.passages
             and contents.DIGEST in backend.manifest(n)]
    name = found[-1] if found else write(backend, args.passages)
    collection = PREFIX + name
    for run in range(args.runs):
        timed = {}
        started = time.perf_counter()
        backend.open(name, check=False).close()
        timed["open without checks"] = time.perf_counter() - started
        started = time.perf_counter()
        reader = backend.open(name, check=True)
        timed["open with checks"] = time.perf_counter() - started
        started = time.perf_counter()
        reader.verify()
        timed["verify"] = time.perf_counter() - started
        reader.close()
        started = time.perf_counter()
        rows = contents.read_passages(backend.client, collection).rows
        timed[f"passages read back ({rows})"] = time.perf_counter() - started
        started = time.perf_counter()
        articles = len(contents.read_articles(backend.client, collection + DATA_SUFFIX))
        timed[f"articles read back ({articles})"] = time.perf_counter() - started
        print(f"run {run}: " + ", ".join(f"{k} {v:.2f} s" for k, v in timed.items())
              + f"; load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
