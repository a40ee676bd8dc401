"""Study (issue 13): adapt MiniLM to one knowledge base on the CPU with pairs the knowledge base itself holds, and
measure it on the tuning and check sets. No query of any evaluation set is used for training.

Pairs: an article's title and heading path ("Outlook keeps asking for password > Cause") -> its passage; an article's
description -> its first passage. Hard negative: the best BM25 passage of another article for the same anchor.
Loss: MultipleNegativesRankingLoss (in-batch negatives plus the hard one), one epoch, in a plain torch loop.

Usage: python eval/studies/domain_adaptation.py INDEX_DIR OUT_MODEL_DIR [--max-pairs N] [--epochs E]
       then: python eval/studies/domain_adaptation.py INDEX_DIR OUT_MODEL_DIR --evaluate SET [SET ...]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from study import open_searcher, read_ticket_set

from kb.index import TermQuery, open_backend
from search.lexical import extract_terms
from search.ticket_evaluation import article_metrics, ticket_query

parser = argparse.ArgumentParser()
parser.add_argument("index_dir")
parser.add_argument("out")
parser.add_argument("--max-pairs", type=int, default=12000)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--max-seq", type=int, default=128)
parser.add_argument("--evaluate", nargs="*")
args = parser.parse_args()
S = open_searcher(args.index_dir)


def keyed_passages() -> list:
    """Every passage of the index version, in key order."""
    found = S.version.passages(range(S.version.size))
    return [found[k] for k in range(S.version.size)]


def training_pairs() -> list[tuple[str, str, str]]:
    articles = {a.id: a for a in S.version.articles()}
    first: dict[str, int] = {}
    out = []
    for row, p in enumerate(keyed_passages()):
        article_id, text, title, summary = p.article_id, p.text, articles[p.article_id].title, \
            articles[p.article_id].summary
        path = [h for h in p.heading_path if h and h != title]
        anchor = " > ".join([title, *path[-1:]])
        out.append((anchor, text, article_id))
        if article_id not in first:
            first[article_id] = row
            if summary:
                out.append((summary, text, article_id))
    random.Random(13).shuffle(out)
    out = out[:args.max_pairs]
    triples = []
    for anchor, text, article_id in out:
        terms = extract_terms(anchor)
        negative = None
        if terms:
            for row in S.version.lexical_search(TermQuery(tuple(terms), (1.0, 1.0, 1.0)), 5):
                if S.row_article[row] != article_id:
                    negative = S.version.passages([row])[row].text
                    break
        if negative:
            triples.append((anchor, text, negative))
    return triples


def train() -> None:
    """A plain torch loop (no `datasets`/`accelerate`): MultipleNegativesRankingLoss, scale 20, AdamW 2e-5."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(13)
    started = time.perf_counter()
    triples = training_pairs()
    print(f"{len(triples)} training triples in {time.perf_counter() - started:.1f} s")
    model = SentenceTransformer(str(S.encoder._model_dir()), device="cpu")
    model.max_seq_length = args.max_seq
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    steps = args.epochs * ((len(triples) + args.batch - 1) // args.batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / max(1, steps // 10)))

    def embed(texts):
        features = model.tokenize(texts)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    model.train()
    started, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        random.Random(epoch).shuffle(triples)
        for lo in range(0, len(triples), args.batch):
            batch = triples[lo:lo + args.batch]
            a = embed([t[0] for t in batch])
            candidates = embed([t[1] for t in batch] + [t[2] for t in batch])
            loss = torch.nn.functional.cross_entropy(20.0 * a @ candidates.T, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - started:.0f} s", flush=True)
    model.eval()
    model.max_seq_length = 256
    model.save(args.out)
    print(f"trained {steps} steps in {time.perf_counter() - started:.1f} s -> {args.out}")


def evaluate(sets: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.out, device="cpu")
    passages = keyed_passages()
    started = time.perf_counter()
    matrix = model.encode([p.text for p in passages], batch_size=64, normalize_embeddings=True,
                          convert_to_numpy=True).astype(np.float32)
    print(f"re-embedded {len(passages)} passages in {time.perf_counter() - started:.1f} s")
    # The same articles and passages (so the same keys) with the adapted vectors: a version of their own.
    backend = open_backend(Path(tempfile.mkdtemp(prefix="adapted-index-")))
    backend.write(backend.new_name(), S.version.articles(body=True), passages, matrix,
                  {"model": f"{S.encoder.model_id} adapted", "dim": matrix.shape[1]})
    base = {"version": S.version, "encode": S.encoder.encode_queries}
    tuned = {"version": backend.open(),
             "encode": lambda qs: model.encode(list(qs), normalize_embeddings=True, convert_to_numpy=True)}

    def use(arm):
        S.version = arm["version"]
        S.encoder.encode_queries = arm["encode"]

    for folder in sets:
        qrels, queries = read_ticket_set(folder)
        items = [q for q in queries if q["id"] in qrels]
        for name, arm in (("MiniLM as shipped", base), ("adapted to this KB", tuned)):
            use(arm)
            sums: dict[str, list[float]] = {}
            for item in items:
                query = ticket_query(item, S)
                ranking = [a for a, _, _ in S.group_articles(S.collect(query).combined(S.combiner_for(query)), 10)]
                m = article_metrics(ranking, qrels[item["id"]])
                for g in ("all", f"{item.get('lang', 'en')} {item.get('kind', 'ticket')}"):
                    s = sums.setdefault(g, [0.0, 0.0, 0])
                    s[0] += m["MRR@10"]
                    s[1] += m["R@3"]
                    s[2] += 1
            print(folder, name, {g: f"MRR {a / n:.3f} R@3 {b / n:.3f} n={n}" for g, (a, b, n) in sorted(sums.items())})
        use(base)


if args.evaluate:
    evaluate(args.evaluate)
else:
    train()
