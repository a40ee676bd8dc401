"""Study (issue 13): a cross-encoder reranker trained on the CPU from MiniLM's weights with pairs the knowledge base
itself holds, measured as a rerank of the service's best articles on the tuning and check sets. No query of any
evaluation set is used for training.

Pairs: an article's title and last heading -> its passage (the passage's body only, so a title cannot match itself);
an article's description -> its first passage. Negatives: the two best passages of other articles in the service's
own fused ranking of the anchor (what a reranker has to tell apart). Model: MiniLM's BERT with a new one-logit head
(transformers' BertForSequenceClassification), listwise softmax loss over (positive, negative, negative), AdamW,
one epoch, bf16 autocast where the CPU has AMX.

Rerank: the service's 10 best articles; each article's best passage scored against the query's dense text; final
score = fused score + weight x the cross-encoder logits min-max normalised over those 10. The weight is chosen on the
tuning set only; the check sets are reported at every weight.

Usage: python eval/studies/cross_encoder.py train INDEX_DIR OUT [--anchors N] [--max-seq L]
       python eval/studies/cross_encoder.py evaluate INDEX_DIR OUT --tune SET --check SET [SET ...]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
from study import open_searcher, read_ticket_set

from search.searcher import Query
from search.ticket_evaluation import article_metrics, ticket_query

WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 100.0)
TOP = 10

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=("train", "evaluate"))
parser.add_argument("index_dir")
parser.add_argument("out")
parser.add_argument("--anchors", type=int, default=8000)
parser.add_argument("--batch", type=int, default=16, help="groups of (anchor, positive, 2 negatives) per step")
parser.add_argument("--max-seq", type=int, default=192)
parser.add_argument("--lr", type=float, default=3e-5)
parser.add_argument("--steps", type=int, default=0, help="stop after N steps (0: one epoch)")
parser.add_argument("--log-every", type=int, default=25)
parser.add_argument("--precision", choices=("auto", "fp32"), default="auto")
parser.add_argument("--tune")
parser.add_argument("--check", nargs="*", default=[])
args = parser.parse_args()
S = open_searcher(args.index_dir)


def autocast():
    import contextlib

    import torch

    has_amx = args.precision == "auto" and torch.cpu._is_amx_tile_supported()
    return torch.autocast("cpu", dtype=torch.bfloat16) if has_amx else contextlib.nullcontext()


def training_groups() -> list[tuple[str, str, str, str]]:
    passages = S.version.passages(range(S.version.size))
    articles = {a.id: a for a in S.version.articles()}
    anchors, first = [], set()
    for key in range(S.version.size):
        p = passages[key]
        article = articles[p.article_id]
        path = [h for h in p.heading_path if h and h != article.title]
        anchors.append((" > ".join([article.title, *path[-1:]]), key))
        if p.article_id not in first:
            first.add(p.article_id)
            if article.summary:
                anchors.append((article.summary, key))
    random.Random(13).shuffle(anchors)
    groups = []
    for anchor, key in anchors[:args.anchors]:
        query = Query(dense=anchor, lexical=anchor)
        scores = S.collect(query).combined(S.combiner_for(query))
        owner = passages[key].article_id
        negatives = [row for _, _, rows in S.group_articles(scores, 4) for row in rows[:1]
                     if S.row_article[row] != owner][:2]
        if len(negatives) == 2:
            found = S.version.passages(negatives)
            groups.append((anchor, passages[key].text, found[negatives[0]].text, found[negatives[1]].text))
    return groups


def load(path: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)


def train() -> None:
    import torch

    torch.manual_seed(13)
    started = time.perf_counter()
    groups = training_groups()
    print(f"{len(groups)} training groups in {time.perf_counter() - started:.1f} s", flush=True)
    tokenizer, model = load(str(S.encoder._model_dir()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    steps = (len(groups) + args.batch - 1) // args.batch
    if args.steps:
        steps = min(steps, args.steps)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min((k + 1) / warm, max(0.0, (steps - k) / max(1, steps - warm))))
    model.train()
    started, losses = time.perf_counter(), []
    for step in range(steps):
        batch = groups[step * args.batch:(step + 1) * args.batch]
        queries = [g[0] for g in batch for _ in range(3)]
        texts = [t for g in batch for t in g[1:]]
        features = tokenizer(queries, texts, truncation="longest_first", max_length=args.max_seq, padding=True,
                             return_tensors="pt")
        with autocast():
            logits = model(**features).logits.view(-1, 3).float()
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % args.log_every == 0:
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-args.log_every:]):.3f} "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    model.eval()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"trained {steps} steps in {time.perf_counter() - started:.1f} s -> {args.out}")


def evaluate() -> None:
    import torch

    tokenizer, model = load(args.out)
    model.eval()

    def score(query: str, texts: list[str]) -> np.ndarray:
        features = tokenizer([query] * len(texts), texts, truncation="longest_first", max_length=256,
                             padding=True, return_tensors="pt")
        with torch.inference_mode(), autocast():
            return model(**features).logits.view(-1).float().numpy()

    spent = []
    for folder in [args.tune, *args.check]:
        qrels, queries = read_ticket_set(folder)
        items = [q for q in queries if q["id"] in qrels]
        sums: dict[tuple[float, str], list[float]] = {}
        for item in items:
            query = ticket_query(item, S)
            scores = S.collect(query).combined(S.combiner_for(query))
            top = S.group_articles(scores, TOP)
            rows = [rows[0] for _, _, rows in top]
            found = S.version.passages(rows)
            started = time.perf_counter()
            logits = score(query.dense, [found[r].text for r in rows])
            spent.append(time.perf_counter() - started)
            spread = float(logits.max() - logits.min()) or 1.0
            normalised = (logits - logits.min()) / spread
            for weight in WEIGHTS:
                order = sorted(range(len(top)), key=lambda i: -(top[i][1] + weight * normalised[i]))
                m = article_metrics([top[i][0] for i in order], qrels[item["id"]])
                for group in ("all", f"{item.get('lang', 'en')} {item.get('kind', 'ticket')}"):
                    s = sums.setdefault((weight, group), [0.0, 0.0, 0])
                    s[0] += m["MRR@10"]
                    s[1] += m["R@3"]
                    s[2] += 1
        role = "tune" if folder == args.tune else "check"
        print(f"\n{folder} ({role})\n| weight | " + " | ".join(sorted({g for _, g in sums})) + " |")
        for weight in WEIGHTS:
            cells = [f"{a / n:.3f} ({b / n:.3f})" for (w, g), (a, b, n) in sorted(sums.items()) if w == weight]
            print(f"| {weight:g} | " + " | ".join(cells) + " |")
    print(f"\ncross-encoder scoring of {TOP} passages: p50 {1000 * np.median(spent):.1f} ms per query "
          f"(torch, {torch.get_num_threads()} threads)")


if args.mode == "train":
    train()
else:
    evaluate()
