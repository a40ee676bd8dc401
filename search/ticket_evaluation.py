"""Ticket-set evaluation over a Markdown knowledge base: article-level hit rates, MRR and nDCG per language."""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from search.evaluation import SERVICE, read_jsonl, read_qrels
from search.searcher import Query, Searcher, make_query
from search.signals import Candidates, only
from search.tickets import build_query

Scores = dict[int, float]
METRICS = ("R@1", "R@3", "R@10", "MRR@10", "nDCG@10")


def article_metrics(ranking: list[str], relevant: dict[str, int]) -> dict[str, float]:
    """R@k here is the share of queries whose best article (relevance 2) is in the top k."""
    import math

    best = {a for a, r in relevant.items() if r >= 2} or set(relevant)
    top = ranking[:10]
    first = next((i for i, a in enumerate(top) if a in best), None)
    dcg = sum((2 ** relevant.get(a, 0) - 1) / math.log2(i + 2) for i, a in enumerate(top))
    ideal = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(sorted(relevant.values(), reverse=True)[:10]))
    return {"R@1": float(first is not None and first < 1), "R@3": float(first is not None and first < 3),
            "R@10": float(first is not None), "MRR@10": 1.0 / (first + 1) if first is not None else 0.0,
            "nDCG@10": dcg / ideal if ideal else 0.0}


def ticket_query(item: dict, searcher: Searcher, translate: bool = True) -> Query:
    """The query the service would build for this ticket (optionally without Indonesian translation)."""
    ticket = build_query(item.get("subject", ""), item.get("text", ""), language=item.get("lang"),
                         max_words=searcher.settings.query_max_words)
    return make_query(ticket, item["text"], searcher.glossary if translate else None, searcher.embed)


def raw_query(item: dict) -> Query:
    text = f"{item.get('subject', '')}\n{item.get('text', '')}".strip()
    return Query(dense=text, lexical=text)




def ablations(searcher: Searcher, query: Query, found: Candidates) -> dict[str, Scores]:
    """The service's ranking, and the same with each signal dropped or alone (each signal's contribution)."""
    combiner = searcher.combiner_for(query)
    out = {SERVICE: found.combined(combiner)}
    for name in combiner.weights:  # every query, so that each row averages over the same queries
        if name != "language" or searcher.mixed_languages:
            out[f"without {name}"] = found.without(name).combined(combiner)
    out["dense alone"] = only(found, "dense", searcher.settings.candidates)
    out["lexical alone"] = only(found, "lexical", searcher.settings.candidates)
    return out


def evaluate_tickets(folder: Path, searcher: Searcher, weights: list[float]) -> dict:
    """Mean metrics per variant and group (all, en, id, tickets, queries) plus suggest latency: the service's
    ranking, each signal's ablation, the lexical weights given, without the glossary, and the raw ticket text."""
    qrels = read_qrels(folder / "qrels.tsv")
    items = [q for q in read_jsonl(folder / "queries.jsonl") if q["id"] in qrels]
    sums: dict[tuple[str, str], dict[str, float]] = {}
    counts: dict[str, int] = {}
    for item in items:
        lang, kind = item.get("lang", "en"), item.get("kind", "ticket")
        groups = ("all", lang, f"{lang} {kind}")
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        query = ticket_query(item, searcher)
        found = searcher.collect(query)
        results = ablations(searcher, query, found)
        for w in weights:
            combiner = searcher.combiner_for(query)
            results[f"fused w={w:g}"] = found.combined(dataclasses.replace(
                combiner, weights={**combiner.weights, "lexical": w}))
        raw = searcher.collect(raw_query(item))
        results["dense, raw ticket text"] = only(raw, "dense", searcher.settings.candidates)
        if searcher.glossary is not None and item.get("lang") == "id":
            plain = ticket_query(item, searcher, translate=False)
            results["service, untranslated"] = searcher.collect(plain).combined(searcher.combiner_for(plain))
        for name, scores in results.items():
            ranking = [a for a, _, _ in searcher.group_articles(scores, 10)]
            for metric, value in article_metrics(ranking, qrels[item["id"]]).items():
                for g in (groups[1:] if "untranslated" in name else groups):
                    sums.setdefault((name, g), {m: 0.0 for m in METRICS})[metric] += value
    latencies = []
    for item in items:
        started = time.perf_counter()
        searcher.suggest(item.get("subject", ""), item.get("text", ""), language=item.get("lang"), k=10)
        latencies.append((time.perf_counter() - started) * 1000)
    table = {f"{name} | {g}": {m: round(v / counts[g], 3) for m, v in s.items()} for (name, g), s in sums.items()}
    return {"dataset": str(folder), "queries": len(items), "groups": counts, "variants": table,
            "suggest_ms": {"p50": round(statistics.median(latencies), 1),
                           "p90": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1),
                           "mean": round(statistics.fmean(latencies), 1)}}


def format_ticket_table(results: dict) -> str:
    lines = [f"{results['dataset']}: {results['queries']} queries {results['groups']}; in-process suggest "
             f"latency {results['suggest_ms']}",
             "| variant | group | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for key, m in sorted(results["variants"].items(), key=lambda kv: (kv[0].split(" | ")[1], kv[0])):
        name, group = key.split(" | ")
        lines.append(f"| {name} | {group} | " + " | ".join(f"{m[x]:.3f}" for x in METRICS) + " |")
    return "\n".join(lines)


SHORT_QUERY_WORDS = 10  # up to this many words: an agent's search rather than a ticket (reported apart)


def evaluate_confidence(folder: Path, searcher: Searcher) -> dict:
    """How well `confident` separates answerable queries (in qrels) from unanswerable ones, overall, for
    tickets and short queries apart, and per language; with the service's calibration and with one
    refitted on this set."""
    from search.confidence import auc, features, fit_calibration

    qrels = read_qrels(folder / "qrels.tsv")
    rows = []
    for item in read_jsonl(folder / "queries.jsonl"):
        query = ticket_query(item, searcher)
        dense, _, codes = searcher.candidates(query)
        top, gap = features(dense)
        kind = "short" if len(query.dense.split()) <= SHORT_QUERY_WORDS else "ticket"
        service = searcher.assess(dense, query, codes)["confidence"]  # calibration plus the exact-code rule
        rows.append((kind, item.get("lang", "en"), top, gap, item["id"] in qrels, service))
    fitted = fit_calibration([(top, gap, label) for _, _, top, gap, label, _ in rows])
    bins = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0001)
    report = {"fitted": fitted.__dict__,
              "current": {lang: c.__dict__ for lang, c in searcher.calibrations.items()}}
    for name in ("current", "fitted"):
        for group in ("all", "ticket", "short"):
            for lang in ("all", "en", "id"):
                chosen = [r for r in rows if group in ("all", r[0]) and lang in ("all", r[1])]
                probs = [(service if name == "current" else fitted.probability(top, gap), label)
                         for _, _, top, gap, label, service in chosen]
                confident = [(p >= searcher.settings.confidence_threshold, label) for p, label in probs]
                report[f"{name} | {group} | {lang}"] = {
                    "AUC": round(auc([p for p, l in probs if l], [p for p, l in probs if not l]), 3),
                    "accuracy": round(sum(c == l for c, l in confident) / max(1, len(confident)), 3),
                    "answerable flagged confident": round(sum(c for c, l in confident if l) / max(1, sum(l for _, l in confident)), 3),
                    "unanswerable flagged confident": round(sum(c for c, l in confident if not l) / max(1, sum(not l for _, l in confident)), 3),
                    "n": len(chosen)}
    for lang in ("all", "en", "id"):  # reliability of the service's probability: predicted vs observed, per bin
        chosen = [(service, label) for _, l, _, _, label, service in rows if lang in ("all", l)]
        report[f"reliability | {lang}"] = [
            {"predicted": f"{lo:.1f}-{min(hi, 1.0):.1f}", "n": len(b),
             "mean predicted": round(sum(p for p, _ in b) / len(b), 3) if b else None,
             "answerable share": round(sum(lbl for _, lbl in b) / len(b), 3) if b else None}
            for lo, hi in zip(bins, bins[1:]) for b in [[(p, lbl) for p, lbl in chosen if lo <= p < hi]]]
    return report
