"""Retrieval evaluation on a BEIR-style folder: lexical, dense and fused, with R@1, R@10, MRR@10, nDCG@10."""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

from indexer.build import with_title_vectors
from indexer.cache import EmbeddingCache, hash_text
from kb.articles import Passage
from kb.index import ArticleRecord, PassageRecord, backend_for
from kb.embedder import TextEncoder
from kb.errors import BadRequest, IndexMismatch
from kb.settings import Settings
from search.fusion import FusionWeights, fuse_scores, rank, reciprocal_rank_fusion
from search.searcher import Query, Searcher


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSON-lines file; a bad line is an error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not ("id" in row or "_id" in row):
                raise BadRequest(f"{path}:{number}: expected an object with an id")
            rows.append(row)
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) < 3 or parts[0] in ("query-id", "query_id", "qid"):
            continue
        try:
            relevance = int(parts[2])
        except ValueError:
            raise BadRequest(f"{path}:{number}: relevance {parts[2]!r} is not an integer") from None
        if relevance > 0:
            qrels.setdefault(parts[0], {})[parts[1]] = relevance
    return qrels


def metrics(ranking: list[str], relevant: dict[str, int]) -> dict[str, float]:
    """R@1, R@10 (share of relevant docs found), MRR@10 and nDCG@10 of one ranked list of doc ids."""
    top = ranking[:10]
    found = [doc for doc in top if doc in relevant]
    rr = next((1.0 / (i + 1) for i, doc in enumerate(top) if doc in relevant), 0.0)
    dcg = sum((2 ** relevant[doc] - 1) / math.log2(i + 2) for i, doc in enumerate(top) if doc in relevant)
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum((2 ** rel - 1) / math.log2(i + 2) for i, rel in enumerate(ideal))
    return {"R@1": len([d for d in ranking[:1] if d in relevant]) / len(relevant),
            "R@10": len(found) / len(relevant), "MRR@10": rr, "nDCG@10": dcg / idcg if idcg else 0.0}


SERVICE = "service (all signals)"  # the ranking the service gives: every signal, the service's weights


def build_corpus_index(dataset: Path, encoder: TextEncoder, settings: Settings) -> Path:
    """One passage per corpus document, indexed once into var/eval/<name>-<hash> and reused: the hash is of the corpus,
    the model and the precision its passages are embedded in, so that another KB_MODEL or KB_ENCODE_PRECISION gets an
    index of its own (the first version's folder held the corpus hash only: another model met an index it could not
    open), and marks versions whose titles are embedded (folders from before have none). A version this code cannot
    read (an older format) is written again, from the folder's embedding cache."""
    corpus = read_jsonl(dataset / "corpus.jsonl")
    digest = hashlib.sha256((dataset / "corpus.jsonl").read_bytes()).hexdigest()[:12]
    embedded_by = f"{digest} {encoder.model_id} {getattr(encoder, 'precision', 'fp32')} titles".encode()
    index_dir = settings.index_dir.parent / "eval" / f"{dataset.name}-{hashlib.sha256(embedded_by).hexdigest()[:12]}"
    backend = backend_for(settings, index_dir)
    if backend.current():
        try:
            backend.open(model_id=encoder.model_id).close()
            return index_dir
        except IndexMismatch:
            pass
    passages = [Passage(d["_id"] if "_id" in d else d["id"], d.get("_id", d.get("id")), d.get("title", ""), (), "",
                        d.get("text", "")) for d in corpus]
    cache = EmbeddingCache(index_dir, encoder.model_id, encoder.dim)
    try:
        def encode(texts: list[str]):
            return encoder.encode_passages(texts, settings.batch_size)

        vectors, _ = cache.embed([p.embed_text() for p in passages], encode)
        articles = with_title_vectors([ArticleRecord(p.article_id, p.article_id, p.title, body=p.text)
                                       for p in passages], cache, encode)
    finally:
        cache.close()
    records = [PassageRecord(p.passage_id, p.article_id, (), "", p.text, hash_text(p.embed_text())) for p in passages]
    manifest = {"model": encoder.model_id, "dim": encoder.dim, "normalised": True,
                "content_hash": digest, "settings": {"eval": str(dataset)}}
    backend.write(backend.new_name(), articles, records, vectors, manifest)
    return index_dir


def rank_docs(searcher: Searcher, scores: dict[int, float]) -> list[str]:
    """Doc (article) ids ranked by their best passage."""
    return [article_id for article_id, _, _ in searcher.group_articles(scores, 100)]


def evaluate_beir(dataset: Path, encoder: TextEncoder, settings: Settings, weights: list[float],
                  limit: int | None = None) -> dict:
    """Mean metrics per variant over the queries of `dataset` that have relevance judgements."""
    index_dir = build_corpus_index(dataset, encoder, settings)
    searcher = Searcher(backend_for(settings, index_dir).open(model_id=encoder.model_id), encoder, settings)
    qrels = read_qrels(dataset / "qrels.tsv")
    queries = [q for q in read_jsonl(dataset / "queries.jsonl") if q.get("_id", q.get("id")) in qrels][:limit]
    vectors = encoder.encode_queries([q["text"] for q in queries])
    variants: dict[str, Callable] = {
        "lexical": lambda d, l, c: l,
        "dense": lambda d, l, c: {r: d[r] for r in rank(d)[: settings.candidates]},
        "rrf 1:1": lambda d, l, c: reciprocal_rank_fusion([rank(d)[: settings.candidates], rank(l)], [1.0, 1.0]),
        **{f"fused w={w:g}": (lambda w: lambda d, l, c: fuse_scores(d, l, c, FusionWeights(lexical=w)))(w)
           for w in weights},
    }
    totals = {name: {"R@1": 0.0, "R@10": 0.0, "MRR@10": 0.0, "nDCG@10": 0.0} for name in [*variants, SERVICE]}
    started = time.perf_counter()
    for query, vector in zip(queries, vectors):
        relevant = qrels[query.get("_id", query.get("id"))]
        asked = Query(query["text"], query["text"])
        found = searcher.collect(asked, vector=vector)
        dense, lexical, codes = found.get("dense"), found.get("lexical"), found.get("codes")
        rankings = {name: combine(dense, lexical, codes) for name, combine in variants.items()}
        rankings[SERVICE] = found.combined(searcher.combiner_for(asked))
        for name, scores in rankings.items():
            for metric, value in metrics(rank_docs(searcher, scores), relevant).items():
                totals[name][metric] += value
    n = max(len(queries), 1)
    return {"dataset": str(dataset), "queries": len(queries), "docs": searcher.version.size,
            "seconds": round(time.perf_counter() - started, 1),
            "variants": {name: {m: round(v / n, 3) for m, v in t.items()} for name, t in totals.items()}}


def format_table(results: dict, dataset: Path) -> str:
    lines = [f"{dataset}: {results['queries']} queries, {results['docs']} docs",
             "| variant | R@1 | R@10 | MRR@10 | nDCG@10 |", "|---|---|---|---|---|"]
    for name, m in results["variants"].items():
        lines.append(f"| {name} | {m['R@1']:.3f} | {m['R@10']:.3f} | {m['MRR@10']:.3f} | {m['nDCG@10']:.3f} |")
    return "\n".join(lines)
