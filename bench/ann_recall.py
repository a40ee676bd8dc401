"""Recall@10, latency, build and delta cost of the approximate dense index (kb/index/faiss_sqlite/ann.py) against the
exact flat search, on real vectors.

Sets: `distinct` stacks the vectors of every --index-dir given (office + d365: real, distinct passages); `sentences`
adds their sentences embedded one by one, up to --sentences-max vectors (distinct real texts at 205k); `Nx`
stacks N copies of the first one's (the growth benchmark's replicated knowledge bases have the same vectors: there an
ANN hit counts as correct when its exact score is >= the exact 10th score - 1e-6, which is the definition used for
every set). Queries: the tickets of eval/tickets-dev and eval/tickets-check (subject + text, and subject alone) and
the stackfaq queries, encoded by the project's encoder (torch; --queries-cache keeps them in a .npy file).

For each set: the module's own `train` (lists, nprobe) and `Approximate.search` (candidates rescored exactly), the
flat index beside it; recall@10 with k=10 and the top 10 of k=100 (what the searcher asks), per query source;
recall with a selection admitting ~90% and ~60% of the articles' passages (the lists, probed 1/share times more);
single-query latency of both (k=100, one thread, calls interleaved), build seconds, ANN file bytes; and on the
largest set the cost of a one-article delta (ten rows changed, a tail row moved, ten added) through `ann.build`'s
patch path, as publishing runs it. --hnsw adds FAISS HNSW32 (the alternative measured, not used) to compare.
  .venv/bin/python bench/ann_recall.py --index-dir /tmp/ann/office --index-dir /tmp/ann/d365 --sets distinct,4x,16x
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kb import integrity  # noqa: E402
from kb.index.faiss_sqlite import ann  # noqa: E402

STACKFAQ = Path("/work/shared/datasets/stackfaq/queries.jsonl")
LATENCY_QUERIES = 200


def query_texts() -> tuple[list[str], list[str]]:
    """(texts, source of each): tickets (subject + text, then subject alone) and stackfaq queries."""
    texts, sources = [], []
    for name in ("tickets-dev", "tickets-check"):
        for line in (REPO / "eval" / name / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            q = json.loads(line)
            texts += [f"{q.get('subject', '')}\n{q['text']}", q.get("subject") or q["text"][:80]]
            sources += ["tickets", "tickets"]
    if STACKFAQ.is_file():
        for line in STACKFAQ.read_text(encoding="utf-8").splitlines():
            texts.append(json.loads(line)["text"])
            sources.append("stackfaq")
    return texts, sources


def encode(texts: list[str], cache: Path | None) -> np.ndarray:
    if cache is not None and cache.is_file():
        vectors = np.load(cache)
        if len(vectors) == len(texts):
            return vectors
    from kb.embedder import Embedder

    vectors = Embedder("all-MiniLM-L6-v2", query_engine="torch").encode_queries(texts).astype(np.float32)
    if cache is not None:
        np.save(cache, vectors)
    return vectors


def sentence_vectors(index_dirs: list[Path], limit: int, cache: Path | None) -> np.ndarray:
    """Vectors of distinct real texts beyond the passages' count: every sentence of at least 5 words of the indexed
    passages (kb.sentences.markable, boilerplate left out), each embedded on its own by the passage encoder (torch),
    the first `limit` distinct ones in key order; kept in `cache` (.npy)."""
    if cache is not None and cache.is_file():
        return np.load(cache)[:limit]
    from kb.embedder import Embedder
    from kb.index import open_backend
    from kb.sentences import markable

    texts: dict[str, None] = {}
    for index_dir in index_dirs:
        version = open_backend(index_dir).open(check=False)
        for start in range(0, version.size, 2000):
            for record in version.passages(range(start, min(start + 2000, version.size))).values():
                for a, b in markable(record.text):
                    sentence = " ".join(record.text[a:b].split())
                    if len(sentence.split()) >= 5:
                        texts.setdefault(sentence, None)
            if len(texts) >= limit:
                break
    chosen = list(texts)[:limit]
    print(f"encoding {len(chosen):,} sentences", file=sys.stderr, flush=True)
    vectors = Embedder("all-MiniLM-L6-v2", query_engine="torch").encode_passages(chosen).astype(np.float32)
    if cache is not None:
        np.save(cache, vectors)
    return vectors


def current_vectors(index_dir: Path) -> np.ndarray:
    version = (index_dir / "CURRENT").read_text().strip()
    return np.array(ann.flat_matrix(index_dir / version / "vectors.faiss"))


def recall(found: list[list[int]], matrix: np.ndarray, queries: np.ndarray, tenth: np.ndarray,
           mask: np.ndarray) -> float:
    """Share of the first 10 found per query whose exact score reaches the exact 10th score (- 1e-6)."""
    hits = total = 0
    for q in np.flatnonzero(mask):
        rows = found[q][:10]
        hits += int(((matrix[rows] @ queries[q]) >= tenth[q] - 1e-6).sum()) if rows else 0
        total += 10
    return hits / total


def exact_tenth(flat: faiss.Index, queries: np.ndarray, selector=None) -> np.ndarray:
    params = faiss.SearchParameters(sel=selector) if selector is not None else None
    scores, _ = flat.search(queries, 10, params=params)
    return scores[:, 9]


def timed(fn, queries: np.ndarray, cpu: list[float] | None = None) -> list[float]:
    """Wall ms of each call; `cpu` gets the thread's CPU ms of each (less sensitive to a busy machine)."""
    out = []
    for q in queries:
        started, used = time.perf_counter(), time.thread_time()
        fn(q)
        out.append((time.perf_counter() - started) * 1000)
        if cpu is not None:
            cpu.append((time.thread_time() - used) * 1000)
    return out


def selection(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Keys of whole groups of 10 rows (articles stand-in) admitted with probability `share`, ascending."""
    groups = rng.random((n + 9) // 10) < share
    return np.flatnonzero(np.repeat(groups, 10)[:n]).astype(np.int64)


def measure(name: str, matrix: np.ndarray, queries: np.ndarray, sources: np.ndarray, hnsw: bool,
            shares: list[float]) -> tuple[dict, faiss.Index]:
    n, dim = matrix.shape
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # builds use every core
    flat = faiss.IndexFlatIP(dim)
    flat.add(matrix)
    started = time.perf_counter()
    index = ann.train(matrix)
    build_s = time.perf_counter() - started
    nlist = faiss.extract_index_ivf(index).nlist
    approx = ann.Approximate(index, ann.probes(nlist), nlist)
    scratch = Path(tempfile.mkdtemp(prefix="ann-bench-"))
    try:
        faiss.write_index(index, str(scratch / ann.ANN))
        ann_bytes = (scratch / ann.ANN).stat().st_size
    finally:
        shutil.rmtree(scratch)
    tenth = exact_tenth(flat, queries)
    row = {"set": name, "passages": n, "nlist": nlist, "nprobe": approx.nprobe, "build_s": round(build_s, 1),
           "ann_mb": round(ann_bytes / 1e6, 1), "flat_mb": round(n * dim * 4 / 1e6, 1)}
    k10 = [list(approx.search(q, 10, matrix)) for q in queries]
    k100 = [list(approx.search(q, 100, matrix)) for q in queries]
    for source in ("all", "tickets", "stackfaq"):
        mask = np.ones(len(queries), bool) if source == "all" else sources == source
        if mask.any():
            row[f"recall10_k10_{source}"] = round(recall(k10, matrix, queries, tenth, mask), 4)
            row[f"recall10_k100_{source}"] = round(recall(k100, matrix, queries, tenth, mask), 4)
    rng = np.random.default_rng(15)
    for share in (0.9, 0.6):
        keys = selection(n, share, rng)
        selector = faiss.IDSelectorBatch(keys)
        admitted = len(keys) / n
        sel_tenth = exact_tenth(flat, queries, selector)
        found = [list(approx.search(q, 10, matrix, selector, admitted)) for q in queries]
        members = set(keys.tolist())
        assert all(r in members for f in found for r in f), "a selection admitted a key it should not"
        row[f"recall10_filter{int(share * 100)}"] = round(recall(found, matrix, queries, sel_tenth,
                                                               np.ones(len(queries), bool)), 4)
    faiss.omp_set_num_threads(1)  # as the service searches
    sample = queries[:LATENCY_QUERIES]
    flat_ms, ann_ms, flat_cpu, ann_cpu = [], [], [], []
    for q in sample:  # interleaved: both see the same load
        flat_ms += timed(lambda v: flat.search(v.reshape(1, -1), 100), [q], flat_cpu)
        ann_ms += timed(lambda v: approx.search(v, 100, matrix), [q], ann_cpu)
    row.update({"flat_p50_ms": round(statistics.median(flat_ms), 2), "ann_p50_ms": round(statistics.median(ann_ms), 2),
                "flat_over_ann": round(statistics.median(flat_ms) / statistics.median(ann_ms), 1),
                "flat_cpu_p50_ms": round(statistics.median(flat_cpu), 2),
                "ann_cpu_p50_ms": round(statistics.median(ann_cpu), 2)})
    everything = np.ones(len(queries), bool)
    for share in shares:  # other shares of the lists probed, for the choice of PROBE_SHARE
        other = ann.Approximate(index, max(1, round(nlist * share)), nlist)
        found = [list(other.search(q, 10, matrix)) for q in queries]
        row[f"probe{share:g}"] = {"nprobe": other.nprobe, "recall10": round(recall(found, matrix, queries, tenth,
                                                                                    everything), 4),
                                  **{source: round(recall(found, matrix, queries, tenth, sources == source), 4)
                                     for source in ("tickets", "stackfaq") if (sources == source).any()},
                                  "p50_ms": round(statistics.median(timed(lambda v: other.search(v, 100, matrix),
                                                                          sample, cpu := [])), 2),
                                  "cpu_p50_ms": round(statistics.median(cpu), 2)}
    if hnsw:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        started = time.perf_counter()
        graph = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        graph.add(matrix)
        row["hnsw32_build_s"] = round(time.perf_counter() - started, 1)
        faiss.omp_set_num_threads(1)
        for ef in (128, 256):
            graph.hnsw.efSearch = ef
            _, rows = graph.search(queries, 100)
            row[f"hnsw32_ef{ef}_recall10"] = round(recall([list(r) for r in rows], matrix, queries, tenth,
                                                          np.ones(len(queries), bool)), 4)
            row[f"hnsw32_ef{ef}_p50_ms"] = round(statistics.median(
                timed(lambda v: graph.search(v.reshape(1, -1), 100), sample)), 2)
        del graph
    return row, index


def delta_cost(matrix: np.ndarray, index: faiss.Index, build_id: str = "base") -> dict:
    """A one-article edit as publishing meets it: the version in service with its ANN file and sealed record, a new
    folder whose flat file differs in 10 rows, has the last row moved into a hole and 10 rows more; `ann.build`
    (checksum of the base file, diff, read, patch), then writing and checksumming the new file."""
    n, dim = matrix.shape
    root = Path(tempfile.mkdtemp(prefix="ann-delta-"))
    try:
        base = root / build_id
        base.mkdir()
        flat = faiss.IndexFlatIP(dim)
        flat.add(matrix)
        faiss.write_index(flat, str(base / ann.VECTORS))
        faiss.write_index(index, str(base / ann.ANN))
        nlist = faiss.extract_index_ivf(index).nlist
        record = {"kind": ann.KIND, "nlist": nlist, "nprobe": ann.probes(nlist),
                  "trained_passages": n, "trained_in": build_id, "file": ann.ANN}
        (base / "manifest.json").write_text(json.dumps({"model": "m", "dim": dim, ann.RECORD: record,
                                                        integrity.FILES: integrity.file_checksums(base, (ann.ANN,))}))
        (root / ann.CURRENT).write_text(build_id + "\n")
        rng = np.random.default_rng(7)
        edited = matrix.copy()
        changed = rng.choice(n - 1, 10, replace=False)
        fresh = rng.normal(size=(20, dim)).astype(np.float32)
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
        edited[changed] = fresh[:10]
        edited[changed[0]] = matrix[-1]  # the tail row moved into a hole
        edited = np.vstack([edited[:-1], fresh[10:]])
        new = root / ".tmp-new"
        new.mkdir()
        flat = faiss.IndexFlatIP(dim)
        flat.add(edited)
        faiss.write_index(flat, str(new / ann.VECTORS))
        del flat
        started = time.perf_counter()
        built = ann.build(root, new, "new", {"model": "m", "dim": dim}, 0)
        patch_s = time.perf_counter() - started
        faiss.write_index(built.index, str(new / ann.ANN))
        integrity.file_checksum(new / ann.ANN)
        total_s = time.perf_counter() - started
        assert built.record.get("patched_from") == build_id and built.index.ntotal == len(edited)
        return {"delta_rows_added": built.record["rows_added"], "delta_ann_build_s": round(patch_s, 2),
                "delta_ann_total_s": round(total_s, 2)}
    finally:
        shutil.rmtree(root)


def real_deltas(source: Path) -> dict:
    """One-article delta builds through the backend on a copy of the index at `source` (read only): without an ANN
    index, the first one with it (the lists trained: the version in service has none), then one patching it."""
    from kb.index import open_backend

    root = Path(tempfile.mkdtemp(prefix="ann-real-delta-"))
    try:
        name = (source / "CURRENT").read_text().strip()
        shutil.copytree(source / name, root / name)
        shutil.copy(source / "CURRENT", root / "CURRENT")
        out = {}
        for step, min_passages in (("exact", None), ("ann_trained", 0), ("ann_patched", 0)):
            backend = open_backend(root, ann_min_passages=min_passages)
            with backend.open(check=False) as base:
                owners = base.passage_articles()
                article_id = owners[len(owners) // 2 + len(out)]
                keys = [k for k, a in enumerate(owners) if a == article_id]
                (article,) = base.articles([article_id], body=True)
                found = base.passages(keys)
                passages = [found[k] for k in keys]
                vectors = base.vectors(keys) + np.float32(0.01)  # the article edited: its vectors move a little
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                manifest = {k: base.manifest[k] for k in ("model", "dim", "normalised") if k in base.manifest}
                started = time.perf_counter()
                backend.write(backend.new_name(), [article], passages, vectors, manifest, base=base,
                              remove={article_id})
                wall = time.perf_counter() - started
            new = backend.manifest(backend.current())
            out[step] = {"wall_s": round(wall, 2), "passages": len(passages),
                         "ann": {k: v for k, v in (new.get(ann.RECORD) or {}).items()
                                 if k in ("nlist", "patched_from", "rows_added")}}
            print(f"real delta {step}: {out[step]}", flush=True)
            old = [v for v in backend.list() if v != backend.current()]
            for v in old:
                shutil.rmtree(root / v)
        return out
    finally:
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", type=Path, action="append", required=True,
                        help="an index folder (read only); the first is the one replicated")
    parser.add_argument("--sets", default="distinct,16x", help="distinct, sentences and/or Nx (copies of the first "
                        "index); sentences: the distinct passages plus their sentences embedded one by one, up to "
                        "--sentences-max vectors in all (distinct real texts at the growth benchmark's size); "
                        "sentences@N: up to N")
    parser.add_argument("--sentences-max", type=int, default=204_400)
    parser.add_argument("--sentences-cache", type=Path, help=".npy file keeping the sentence vectors")
    parser.add_argument("--queries-cache", type=Path, help=".npy file keeping the encoded queries")
    parser.add_argument("--hnsw", action="store_true", help="also build and measure FAISS HNSW32")
    parser.add_argument("--probe-shares", default="", help="comma-separated shares of the lists to probe as well "
                        "(e.g. 0.125,0.5): recall and latency of each")
    parser.add_argument("--delta-index", type=Path, help="an index folder (read only, copied) to time one-article "
                        "delta builds on through the backend: exact, ANN trained, ANN patched")
    parser.add_argument("--no-delta", action="store_true", help="skip the one-article delta on the largest set")
    args = parser.parse_args()
    load = os.getloadavg()
    if load[0] > 0.5:
        print(f"warning: 1-minute load average {load[0]:.2f} at the start: latencies are noisy", file=sys.stderr)
    texts, sources = query_texts()
    queries = encode(texts, args.queries_cache)
    sources = np.array(sources)
    first = current_vectors(args.index_dir[0])
    rows, last = [], None
    for name in filter(None, args.sets.split(",")):
        if name == "distinct" or name.startswith("sentences"):
            matrix = np.vstack([first] + [current_vectors(d) for d in args.index_dir[1:]])
            if name.startswith("sentences"):  # "sentences@51100": up to that many vectors (--sentences-max)
                most = int(name.partition("@")[2] or args.sentences_max)
                matrix = np.vstack([matrix, sentence_vectors(args.index_dir, most - len(matrix),
                                                             args.sentences_cache)])
        else:
            matrix = np.vstack([first] * int(name.rstrip("x")))
        row, index = measure(name, np.ascontiguousarray(matrix), queries, sources, args.hnsw,
                             [float(x) for x in args.probe_shares.split(",") if x])
        rows.append(row)
        print(json.dumps(row), flush=True)
        if last is None or len(matrix) > len(last[0]):
            last = (matrix, index)
        else:
            del index
    figures = {"queries": len(queries), "sets": rows, "loadavg_start": [round(x, 2) for x in load],
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if not args.no_delta and last is not None:
        figures["delta"] = {"passages": len(last[0]), **delta_cost(*last)}
        print(f"one-article delta at {len(last[0]):,} passages: {figures['delta']}")
    if args.delta_index is not None:
        figures["real_delta"] = real_deltas(args.delta_index)
    figures["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n{'set':>9} {'passages':>9} {'lists':>6} {'probe':>6} {'build s':>8} {'R@10 k10':>9} {'R@10 k100':>10} "
          f"{'filt 90%':>9} {'filt 60%':>9} {'flat ms':>8} {'ann ms':>7} {'flat cpu':>9} {'ann cpu':>8}")
    for r in rows:
        print(f"{r['set']:>9} {r['passages']:>9,} {r['nlist']:>6} {r['nprobe']:>6} {r['build_s']:>8} "
              f"{r['recall10_k10_all']:>9} {r['recall10_k100_all']:>10} {r['recall10_filter90']:>9} "
              f"{r['recall10_filter60']:>9} {r['flat_p50_ms']:>8} {r['ann_p50_ms']:>7} {r['flat_cpu_p50_ms']:>9} "
              f"{r['ann_cpu_p50_ms']:>8}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
