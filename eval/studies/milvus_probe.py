"""Probe (issue 15): does milvus-lite do what an index backend needs? Capabilities, quality and speed beside FAISS + FTS5.

Usage: .venv/bin/python eval/studies/milvus_probe.py [--index /tmp/serve-bench/office-idx] [--work /tmp/milvus-probe]
Needs `pip install pymilvus milvus-lite` (not dependencies). Reads the passages and vectors of a built index
(the office index), puts them into milvus-lite collections under --work, and prints one table of capability /
works? / detail, then the quality (tickets-dev, stackfaq) and speed figures side by side with the service's own
FAISS and FTS5 arms in the same run. Starts one `milvus-lite server` process on loopback for the alias and
two-process checks and stops it (by its pid) at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
TICKETS = ROOT / "eval" / "tickets-dev"
STACKFAQ = Path("/work/shared/datasets/stackfaq")
DIM = 384
LIMIT = 100  # candidates per arm, as the service's KB_CANDIDATES
ROWS: list[tuple[str, str, str]] = []  # (capability, works?, detail)


def note(capability: str, works: str, detail: str) -> None:
    detail = " ".join(detail.split())  # one table row, whatever an exception's message holds
    ROWS.append((capability, works, detail))
    print(f"  [{works}] {capability}: {detail}", flush=True)


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ---- text analysis for the pre-analysed BM25 field (the FTS5 tokenizer's rules, done by the client) ----------
def make_analyser():
    import snowballstemmer

    from search.lexical import TOKEN

    stemmer, cache = snowballstemmer.stemmer("porter"), {}

    def stem(word: str) -> str:
        if word not in cache:
            cache[word] = stemmer.stemWord(word)
        return cache[word]

    def analyse(text: str) -> str:
        """unicode61 remove_diacritics + porter, as FTS5 indexes the text: lower-case stems joined by spaces."""
        plain = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
        return " ".join(stem(t) for t in TOKEN.findall(plain))

    return analyse


# ---- data --------------------------------------------------------------------------------------------------------
def load_passages(searcher) -> list[dict]:
    """Every passage of the index with its article's fields, its key and vector."""
    version = searcher.version
    found = version.passages(range(version.size))
    out = []
    for row in range(version.size):
        p = found[row]
        a = searcher.articles[p.article_id]
        lexical = f"{a['title']} {' '.join(p.heading_path)} {p.text}"  # FTS5's title, headings, body
        out.append({"pid": p.passage_id, "row": row, "article_id": p.article_id, "product": a["product"] or "",
                    "language": a["language"] or "", "audience": a["audience"] or "", "text": lexical[:60000],
                    "vec": version.vectors([row])[0]})
    return out


def schema(client, with_build: bool = False):
    from pymilvus import DataType, Function, FunctionType

    s = client.create_schema(auto_id=False)
    s.add_field("pid", DataType.VARCHAR, is_primary=True, max_length=512)
    s.add_field("row", DataType.INT64)
    s.add_field("article_id", DataType.VARCHAR, max_length=512)
    s.add_field("product", DataType.VARCHAR, max_length=128)
    s.add_field("language", DataType.VARCHAR, max_length=16)
    s.add_field("audience", DataType.VARCHAR, max_length=32)
    if with_build:
        s.add_field("build", DataType.VARCHAR, max_length=32)
    s.add_field("text", DataType.VARCHAR, max_length=65535, enable_analyzer=True, enable_match=True)
    s.add_field("lex", DataType.VARCHAR, max_length=65535, enable_analyzer=True)  # client-side stems
    s.add_field("text_bm25", DataType.SPARSE_FLOAT_VECTOR)
    s.add_field("lex_bm25", DataType.SPARSE_FLOAT_VECTOR)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    s.add_function(Function(name="text_fn", function_type=FunctionType.BM25, input_field_names=["text"],
                            output_field_names=["text_bm25"]))
    s.add_function(Function(name="lex_fn", function_type=FunctionType.BM25, input_field_names=["lex"],
                            output_field_names=["lex_bm25"]))
    return s


def index_params(client):
    p = client.prepare_index_params()
    p.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
    p.add_index(field_name="text_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    p.add_index(field_name="lex_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return p


def records(passages: list[dict], analyse, build: str | None = None) -> list[dict]:
    out = []
    for p in passages:
        r = {k: p[k] for k in ("pid", "row", "article_id", "product", "language", "audience", "text")}
        r["lex"], r["vec"] = analyse(p["text"]), p["vec"].tolist()
        if build:
            r["build"] = build
        out.append(r)
    return out


def create_and_fill(client, name: str, recs: list[dict], batch: int = 500, with_build: bool = False) -> dict:
    if client.has_collection(name):
        client.drop_collection(name)
    started = time.perf_counter()
    client.create_collection(name, schema=schema(client, with_build), index_params=index_params(client))
    created = time.perf_counter()
    for i in range(0, len(recs), batch):
        client.insert(name, recs[i:i + batch])
    inserted = time.perf_counter()
    client.flush(name)
    flushed = time.perf_counter()
    client.load_collection(name)
    loaded = time.perf_counter()
    return {"create_s": round(created - started, 2), "insert_s": round(inserted - created, 2),
            "flush_s": round(flushed - inserted, 2), "load_s": round(loaded - flushed, 2),
            "rate": round(len(recs) / (inserted - created))}


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


# ---- searches --------------------------------------------------------------------------------------------------
def milvus_dense(client, name, vec, limit=LIMIT, expr="") -> list[dict]:
    return client.search(name, data=[vec.tolist()], anns_field="vec", limit=limit, filter=expr,
                         search_params={"metric_type": "IP"}, output_fields=["row"])[0]


def milvus_bm25(client, name, text, field="lex_bm25", limit=LIMIT, expr="") -> list[dict]:
    if not text.strip():
        return []
    return client.search(name, data=[text], anns_field=field, limit=limit, filter=expr,
                         search_params={"metric_type": "BM25"}, output_fields=["row"])[0]


def milvus_hybrid(client, name, vec, text, ranker, limit=LIMIT, expr="") -> list[dict]:
    from pymilvus import AnnSearchRequest

    reqs = [AnnSearchRequest([vec.tolist()], "vec", {"metric_type": "IP"}, limit, expr=expr or None)]
    if text.strip():
        reqs.append(AnnSearchRequest([text], "lex_bm25", {"metric_type": "BM25"}, limit, expr=expr or None))
    return client.hybrid_search(name, reqs, ranker, limit=limit, output_fields=["row"])[0]


def hit_rows(hits: list[dict]) -> dict[int, float]:
    """Row -> score, higher is better. milvus-lite 3.2 returns BM25 hits best first with distance = -score (a
    Milvus server returns the score): a BM25 list of only negative distances is negated, which keeps its order."""
    scores = {int(h["entity"]["row"]): float(h["distance"]) for h in hits}
    if scores and all(v <= 0 for v in scores.values()) and any(v < 0 for v in scores.values()):
        return {r: -v for r, v in scores.items()}
    return scores


def lexical_terms(searcher, text: str) -> list[str]:
    from search.lexical import extract_terms, prune_terms

    return prune_terms(extract_terms(text), searcher.term_df, len(searcher.row_article))


# ---- checks ----------------------------------------------------------------------------------------------------
def check_analyzers(client) -> None:
    """Which analyzers lite accepts, and whether they do what the same parameters do on a Milvus server."""
    from pymilvus import DataType, Function, FunctionType

    def attempt(params):
        name = "analyzer_probe"
        if client.has_collection(name):
            client.drop_collection(name)
        s = client.create_schema(auto_id=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("text", DataType.VARCHAR, max_length=1000, enable_analyzer=True, analyzer_params=params)
        s.add_field("sp", DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(Function(name="f", function_type=FunctionType.BM25, input_field_names=["text"],
                                output_field_names=["sp"]))
        p = client.prepare_index_params()
        p.add_index(field_name="sp", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(name, schema=s, index_params=p)
        docs = ["The servers were running slowly", "Café menu synchronisation", "Pengiriman email gagal terkirim",
                "the of and to a in", "mailbox quota exceeded on Exchange"]
        client.insert(name, [{"id": i, "text": t} for i, t in enumerate(docs)])
        client.flush(name)
        client.load_collection(name)

        def ids(q):
            return [h["id"] for h in client.search(name, data=[q], anns_field="sp", limit=5,
                                                   search_params={"metric_type": "BM25"})[0]]
        def matching(expr):
            try:
                return [r["id"] for r in client.query(name, filter=expr, output_fields=["id"])]
            except Exception as exc:  # noqa: BLE001
                return f"refused: {str(exc)[:80]}"

        return {"run (stem of running)": ids("run"), "cafe (no accent)": ids("cafe"), "the": ids("the"),
                "kirim (root of terkirim)": ids("kirim"), "terkirim": ids("terkirim"),
                "phrase": matching("phrase_match(text, 'quota exceeded')"),
                "text_match": matching("text_match(text, 'quota exceeded')")}

    try:
        attempt({"type": "english"})
        note("BM25 analyzer {'type': 'english'}", "yes", "accepted")
    except Exception as exc:  # noqa: BLE001 - the probe reports whatever lite says
        note("BM25 analyzer {'type': 'english'}", "NO", f"refused: {str(exc)[:110]}")
    custom = {"tokenizer": "standard", "filter": ["lowercase", {"type": "stemmer", "language": "english"},
                                                  {"type": "stop", "stop_words": "_english_"}]}
    try:
        found = attempt(custom)
        stems = bool(found["run (stem of running)"])
        stops = not found["the"]
        note("custom analyzer: stemmer + stop '_english_'", "accepted, ignored" if not (stems or stops) else "yes",
             f"'run' finds running: {stems}; 'the' still matches: {not stops} (a Milvus server stems and drops it)")
    except Exception as exc:  # noqa: BLE001
        note("custom analyzer: stemmer + stop '_english_'", "NO", str(exc)[:120])
    for params, label in (({"tokenizer": "standard", "filter": [{"type": "stop", "stop_words": ["the", "of"]}]},
                           "stop words as a list"), (None, "standard (default)")):
        try:
            found = attempt(params) if params else attempt({"tokenizer": "standard"})
            note(f"analyzer: {label}", "yes",
                 f"'the'->{found['the']} 'cafe'->{found['cafe (no accent)']} 'terkirim'->{found['terkirim']} "
                 f"'kirim'->{found['kirim (root of terkirim)']} (doc 1 is Café, doc 2 Indonesian)")
            if not params:
                note("exact phrase (FTS5 \"...\" / NEAR, used for error codes)",
                     "yes" if found["phrase"] == [4] else "NO",
                     f"phrase_match(text, 'quota exceeded') -> {found['phrase']}; text_match (any token) -> "
                     f"{found['text_match']} (doc 4 has the phrase)")
        except Exception as exc:  # noqa: BLE001
            note(f"analyzer: {label}", "NO", str(exc)[:120])
    client.drop_collection("analyzer_probe")


def check_dense_filters(client, name, searcher, qvecs, passages) -> None:
    """Filtered dense search against the FAISS engine's exact search with the same filter: identical top-10?"""
    from kb.index import Selection

    products = sorted({p["product"] for p in passages})
    some_articles = sorted({p["article_id"] for p in passages})[::40]
    in_en_id = frozenset(p["article_id"] for p in passages if p["language"] in ("en", "id"))
    cases = [("no filter", "", None),
             ("product == 'Outlook'", "product == 'Outlook'", Selection(product="Outlook")),
             ("language in ['en','id']", "language in ['en', 'id']", Selection(article_ids=in_en_id)),
             (f"article_id in [{len(some_articles)} ids]", "article_id in " + json.dumps(some_articles),
              Selection(article_ids=frozenset(some_articles))),
             ("product == 'Teams' and audience != 'internal'", "product == 'Teams' and audience != 'internal'",
              Selection(product="Teams", exclude_audience="internal"))]
    for label, expr, selection in cases:
        same, same_set, worst = 0, 0, 0.0
        for vec in qvecs:
            found = searcher.version.dense_search(vec, 10, selection)
            exact, scores = list(found), list(found.values())
            hits = milvus_dense(client, name, vec, 10, expr)
            got = [int(h["entity"]["row"]) for h in hits]
            same += got == exact
            same_set += set(got) == set(exact)
            diffs = [abs(float(h["distance"]) - float(s)) for h, s in zip(hits, scores)]
            worst = max([worst] + diffs)
        note(f"dense FLAT IP + filter: {label}", "yes" if same_set == len(qvecs) else "DIFFERS",
             f"top-10 identical in order {same}/{len(qvecs)}, same set {same_set}/{len(qvecs)}, "
             f"max |score diff| {worst:.2e} (selection: {selection})")
    products_note = ", ".join(products)
    note("filter values", "info", f"products in the office KB: {products_note}")


def check_scores(client, name, searcher, analyse, queries, qvecs) -> None:
    """BM25's score direction, and whether hybrid_search's rankers read it the right way; a filter in hybrid."""
    from pymilvus import RRFRanker, WeightedRanker

    signs, bm25_same, dense_same, filtered_ok, n = set(), 0, 0, 0, 0
    for query, vec in zip(queries[:40], qvecs[:40]):
        stemmed = " ".join(dict.fromkeys(analyse(" ".join(lexical_terms(searcher, query.lexical))).split()))
        bm25 = milvus_bm25(client, name, stemmed, limit=10)
        if not bm25:
            continue
        n += 1
        signs.add("negative" if all(h["distance"] < 0 for h in bm25) else "positive" if all(
            h["distance"] > 0 for h in bm25) else "mixed")
        plain = [int(h["entity"]["row"]) for h in bm25]
        dense = [int(h["entity"]["row"]) for h in milvus_dense(client, name, vec, 10)]
        only_bm25 = [int(h["entity"]["row"]) for h in milvus_hybrid(client, name, vec, stemmed,
                                                                      WeightedRanker(0.0, 1.0), limit=10)]
        only_dense = [int(h["entity"]["row"]) for h in milvus_hybrid(client, name, vec, stemmed,
                                                                       WeightedRanker(1.0, 0.0), limit=10)]
        bm25_same += only_bm25 == plain
        dense_same += only_dense == dense
        hits = milvus_hybrid(client, name, vec, stemmed, RRFRanker(60), limit=20, expr="product == 'Outlook'")
        rows = [int(h["entity"]["row"]) for h in hits]
        filtered_ok += all(searcher.articles[searcher.row_article[r]]["product"] == "Outlook" for r in rows)
    note("BM25 search: score direction", "lite differs" if signs == {"negative"} else "yes",
         f"hits come best first with distance {'/'.join(sorted(signs))} ({n} queries): lite returns -BM25, a Milvus "
         "server returns BM25 (higher is better; lite's own ranker code lists BM25 as positively related)")
    note("hybrid_search WeightedRanker reads BM25 the right way", "yes" if bm25_same == n else "NO",
         f"WeightedRanker(0, 1) top-10 == plain BM25 top-10 in {bm25_same}/{n} queries; WeightedRanker(1, 0) == "
         f"plain dense top-10 in {dense_same}/{n}")
    note("hybrid_search (dense + BM25, RRFRanker) with a filter in each request", "yes" if filtered_ok == n else "NO",
         f"every hit passes product == 'Outlook' in {filtered_ok}/{n} queries")


def ticket_items(searcher):
    from search.evaluation import read_jsonl, read_qrels
    from search.ticket_evaluation import ticket_query

    qrels = read_qrels(TICKETS / "qrels.tsv")
    items = [q for q in read_jsonl(TICKETS / "queries.jsonl") if q["id"] in qrels]
    return qrels, items, [ticket_query(i, searcher) for i in items]


def evaluate_tickets(client, name, searcher, analyse, qrels, items, queries, qvecs) -> dict:
    """Article-level metrics per group: FTS5 (the service's lexical arm) vs milvus BM25 on raw / stemmed text;
    RRF of FAISS + FTS5 vs milvus hybrid RRF in one call; the service's full ranking for reference."""
    from pymilvus import RRFRanker, WeightedRanker

    from search.fusion import rank, reciprocal_rank_fusion
    from search.lexical import search_lexical
    from search.ticket_evaluation import METRICS, article_metrics

    sums: dict[tuple[str, str], dict[str, float]] = {}
    counts: dict[str, int] = {}
    db = searcher.version
    for item, query, vec in zip(items, queries, qvecs):
        groups = ("all", item.get("lang", "en"))
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        terms = lexical_terms(searcher, query.lexical)
        stemmed = " ".join(dict.fromkeys(analyse(" ".join(terms)).split()))
        fts = search_lexical(db, query.lexical, LIMIT, df=searcher.term_df, total=len(searcher.row_article))
        dense = searcher.version.dense_search(vec, LIMIT)
        found = searcher.collect(query)
        variants = {
            "FTS5 (service lexical arm)": fts,
            "milvus BM25, raw text (standard analyzer)": hit_rows(milvus_bm25(client, name, " ".join(terms),
                                                                              "text_bm25")),
            "milvus BM25, client-stemmed text": hit_rows(milvus_bm25(client, name, stemmed)),
            "FAISS dense": dense,
            "milvus dense": hit_rows(milvus_dense(client, name, vec)),
            "RRF of FAISS + FTS5 (k=60)": reciprocal_rank_fusion([rank(dense), rank(fts)], [1.0, 1.0]),
            "milvus hybrid_search RRFRanker(60), stemmed": hit_rows(
                milvus_hybrid(client, name, vec, stemmed, RRFRanker(60))),
            "milvus hybrid_search WeightedRanker(1, 0.3)": hit_rows(
                milvus_hybrid(client, name, vec, stemmed, WeightedRanker(1.0, 0.3))),
            "service ranking (all signals, for reference)": found.combined(searcher.combiner_for(query)),
        }
        for vname, scores in variants.items():
            ranking = [a for a, _, _ in searcher.group_articles(scores, 10)]
            for metric, value in article_metrics(ranking, qrels[item["id"]]).items():
                for g in groups:
                    sums.setdefault((vname, g), {m: 0.0 for m in METRICS})[metric] += value
    return {f"{v} | {g}": {m: round(x / counts[g], 3) for m, x in s.items()} for (v, g), s in sums.items()}, counts


def evaluate_stackfaq(client, encoder, settings, analyse) -> dict:
    """Doc-level R@10 / MRR@10 / nDCG@10 on stackfaq: FTS5 lexical arm vs milvus BM25 (raw / stemmed)."""
    from kb.index import open_backend
    from search.evaluation import build_corpus_index, metrics, rank_docs, read_jsonl, read_qrels
    from search.lexical import search_lexical
    from search.searcher import Searcher

    index_dir = build_corpus_index(STACKFAQ, encoder, settings)  # reused from var/eval when present
    s = Searcher(open_backend(index_dir).open(model_id=encoder.model_id), encoder, settings)
    passages = load_passages(s)
    name = "stackfaq"
    build = create_and_fill(client, name, records(passages, analyse))
    qrels = read_qrels(STACKFAQ / "qrels.tsv")
    queries = [q for q in read_jsonl(STACKFAQ / "queries.jsonl") if q.get("_id", q.get("id")) in qrels]
    totals: dict[str, dict[str, float]] = {}
    db = s.version
    for q in queries:
        relevant = qrels[q.get("_id", q.get("id"))]
        terms = lexical_terms(s, q["text"])
        stemmed = " ".join(dict.fromkeys(analyse(" ".join(terms)).split()))
        variants = {"FTS5 (service lexical arm)": search_lexical(db, q["text"], LIMIT, df=s.term_df,
                                                                  total=len(s.row_article)),
                    "milvus BM25, raw text": hit_rows(milvus_bm25(client, name, " ".join(terms), "text_bm25")),
                    "milvus BM25, client-stemmed text": hit_rows(milvus_bm25(client, name, stemmed))}
        for vname, scores in variants.items():
            for metric, value in metrics(rank_docs(s, scores), relevant).items():
                totals.setdefault(vname, {})[metric] = totals.get(vname, {}).get(metric, 0.0) + value
    n = max(1, len(queries))
    return {"queries": len(queries), "docs": len(passages), "build": build,
            "variants": {v: {m: round(x / n, 3) for m, x in t.items()} for v, t in totals.items()}}


def check_incremental(client, name, searcher, analyse, passages, db_path: Path) -> None:
    """Upsert, delete and insert single passages; counts; term statistics; BM25 score of a re-upserted passage."""
    def count(expr=""):
        return client.query(name, filter=expr, output_fields=["count(*)"])[0]["count(*)"]

    total = count()
    stats = client.get_collection_stats(name)
    note("count(*) / get_collection_stats", "yes" if total == len(passages) else "DIFFERS",
         f"count(*) {total}, stats row_count {stats.get('row_count')}, passages {len(passages)}")
    # a passage whose own rare words find it first
    target = next(p for p in passages[500:] if len(analyse(p["text"]).split()) > 40)
    terms = lexical_terms(searcher, target["text"])[:8]
    stemmed = " ".join(dict.fromkeys(analyse(" ".join(terms)).split()))
    def standing():
        """(rank in the top 20 or None, its own BM25 score through a pid filter) of the target passage."""
        top = [h["pid"] for h in milvus_bm25(client, name, stemmed, limit=20)]
        own = hit_rows(milvus_bm25(client, name, stemmed, limit=1, expr=f'pid == "{target["pid"]}"'))
        return (top.index(target["pid"]) if target["pid"] in top else None), round(next(iter(own.values()), 0.0), 2)

    before = standing()
    rec = records([target], analyse)[0]
    t0 = time.perf_counter()
    client.upsert(name, [rec])
    upsert_ms = ms(time.perf_counter() - t0)
    after = standing()
    client.flush(name)
    flushed = standing()
    t0 = time.perf_counter()
    job = client.compact(name)
    state = client.get_compaction_state(job)
    while "complete" not in str(state).lower() and time.perf_counter() - t0 < 120:
        time.sleep(1)
        state = client.get_compaction_state(job)
    compact_s = round(time.perf_counter() - t0, 1)
    compacted = standing()
    note("upsert of one passage, same text: its BM25 rank and score", "yes" if after == before else "CHANGES",
         f"(rank in top 20, score): before {before}, after upsert {after}, after flush {flushed}, after compact "
         f"{compacted} ({state}, {compact_s} s); {len(list(db_path.rglob('*.parquet')))} parquet "
         f"files; upsert {upsert_ms} ms; count(*) {count()}")
    dense_after = [h["pid"] for h in milvus_dense(client, name, target["vec"], 3)]
    note("upsert: dense search sees the new version", "yes" if dense_after and dense_after[0] == target["pid"]
         else "NO", f"top-1 for its own vector: {dense_after[:1]}")
    # a new passage with a made-up word, found by BM25 and dense without a flush
    new = dict(rec, pid="probe/new-passage", row=10 ** 6, text="zqxwidget calibration for the probe " + rec["text"])
    new["lex"] = analyse(new["text"])
    t0 = time.perf_counter()
    client.insert(name, [new])
    insert_ms = ms(time.perf_counter() - t0)
    hits = [h["pid"] for h in milvus_bm25(client, name, analyse("zqxwidget"), limit=3)]
    note("insert one passage: searchable at once (no flush)", "yes" if hits == [new["pid"]] else "NO",
         f"BM25 'zqxwidget' -> {hits}; insert {insert_ms} ms; count(*) {count()}")
    t0 = time.perf_counter()
    client.delete(name, ids=[new["pid"], target["pid"]])
    delete_ms = ms(time.perf_counter() - t0)
    gone_bm25 = [h["pid"] for h in milvus_bm25(client, name, analyse("zqxwidget"), limit=3)]
    gone_dense = [h["pid"] for h in milvus_dense(client, name, target["vec"], 3)]
    got = client.get(name, ids=[target["pid"]])
    note("delete by id: gone from BM25, dense, get and count", "yes" if not gone_bm25 and target["pid"] not in
         gone_dense and not got and count() == total - 1 else "NO",
         f"BM25 {gone_bm25}, dense top-3 has it: {target['pid'] in gone_dense}, get {len(got)}, "
         f"count(*) {count()} (was {total}); delete {delete_ms} ms")
    client.delete(name, filter=f"article_id == '{target['article_id']}'")
    left = count(f"article_id == '{target['article_id']}'")
    note("delete by filter (an article's passages)", "yes" if left == 0 else "NO", f"{left} left")
    client.upsert(name, records([p for p in passages if p["article_id"] == target["article_id"]], analyse))
    client.flush(name)
    # term statistics: no document-frequency API; text_match count(*) per term stands in
    words = ["outlook", "mailbox", "sharepoint", "0x80070005", "calendar"]
    pairs, times = [], []
    for w in words:
        t0 = time.perf_counter()
        df = count(f"text_match(text, '{w}')")
        times.append(time.perf_counter() - t0)
        pairs.append(f"{w} {df}/{searcher.term_df.get(w, 0)}")
    note("term statistics (df)", "workaround",
         f"no df API; count(*) with text_match per term, milvus/term_df: {', '.join(pairs)}; "
         f"{ms(p50(times))} ms per term (p50)")


def check_latency(client, name, searcher, analyse, queries, qvecs, rounds: int = 2) -> dict:
    """p50 per operation, interleaved per query in one run: FAISS vs milvus dense, FTS5 vs milvus BM25, hybrid."""
    from pymilvus import RRFRanker

    from search.lexical import search_lexical

    from kb.index import Selection

    db = searcher.version
    allowed = Selection(product="Exchange")
    times: dict[str, list[float]] = {}

    def timed(label, fn):
        t0 = time.perf_counter()
        fn()
        times.setdefault(label, []).append(time.perf_counter() - t0)

    for _ in range(rounds):
        for query, vec in zip(queries, qvecs):
            terms = lexical_terms(searcher, query.lexical)
            stemmed = " ".join(dict.fromkeys(analyse(" ".join(terms)).split()))
            timed("FAISS dense (flat, 100)", lambda: searcher.version.dense_search(vec, LIMIT))
            timed("milvus dense (FLAT, 100)", lambda: milvus_dense(client, name, vec))
            timed("FAISS dense, product filter", lambda: searcher.version.dense_search(vec, LIMIT, allowed))
            timed("milvus dense, product filter", lambda: milvus_dense(client, name, vec, expr="product == 'Exchange'"))
            timed("FTS5 BM25 (100)", lambda: search_lexical(db, query.lexical, LIMIT, df=searcher.term_df,
                                                              total=len(searcher.row_article)))
            timed("milvus BM25 (100)", lambda: milvus_bm25(client, name, stemmed))
            timed("milvus hybrid RRF (100 + 100)", lambda: milvus_hybrid(client, name, vec, stemmed, RRFRanker(60)))
    return {k: round(p50(v) * 1000, 2) for k, v in times.items()}


# ---- multi-process, server mode and aliases ---------------------------------------------------------------------
def reader(uri: str, alias: str, seconds: float, out: str) -> None:
    """Child process: search `alias` over `uri` for `seconds`; write counts of answers per build and failures."""
    import numpy as np
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    rng = np.random.default_rng(os.getpid())
    seen, failures, errors, lat = {}, 0, [], []
    end = time.time() + seconds
    while time.time() < end:
        vec = rng.standard_normal(DIM).astype("float32")
        vec /= np.linalg.norm(vec)
        t0 = time.perf_counter()
        try:
            hits = client.search(alias, data=[vec.tolist()], anns_field="vec", limit=10,
                                 search_params={"metric_type": "IP"}, output_fields=["build"])[0]
            lat.append(time.perf_counter() - t0)
            builds = {h["entity"]["build"] for h in hits}
            key = "+".join(sorted(builds)) or "empty"
            seen[key] = seen.get(key, 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures += 1
            if len(errors) < 3:
                errors.append(str(exc)[:160])
        time.sleep(0.005)
    Path(out).write_text(json.dumps({"answers": seen, "failed": failures, "errors": errors,
                                     "p50_ms": round(p50(lat) * 1000, 2)}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_two_processes(db_path: Path) -> None:
    """Can a second process open the milvus-lite file the first holds?"""
    code = ("from pymilvus import MilvusClient\n"
            f"c = MilvusClient({str(db_path)!r})\n"
            "print('OPENED', c.list_collections())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    opened = "OPENED" in done.stdout
    reason = (done.stdout + done.stderr).strip().splitlines()
    locked = [line for line in reason if "lock" in line.lower()]
    note("two processes open one milvus-lite .db", "yes" if opened else "NO",
         f"second process: {'opened' if opened else 'failed'}; "
         f"{(locked or reason or ['(no output)'])[-1][:160]}")


def check_server_and_alias(work: Path, passages: list[dict], analyse, n: int = 3000) -> None:
    """A `milvus-lite server` process; two reader processes search an alias while this one builds a second
    collection, switches the alias, drops the first and upserts into the second."""
    from pymilvus import MilvusClient

    data_dir, port = work / "server-data", free_port()
    shutil.rmtree(data_dir, ignore_errors=True)
    server = subprocess.Popen([str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir",
                               str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"))
    try:
        uri, client, t0 = f"http://127.0.0.1:{port}", None, time.perf_counter()
        while client is None and time.perf_counter() - t0 < 60:
            try:
                client = MilvusClient(uri=uri, timeout=2)
                client.list_collections()
            except Exception:  # noqa: BLE001 - not up yet
                client = None
                time.sleep(0.3)
        if client is None:
            note("server mode (milvus-lite server)", "NO", "did not answer within 60 s")
            return
        note("server mode (milvus-lite server)", "yes", f"answered after {time.perf_counter() - t0:.1f} s on {uri}")
        subset = passages[:n]
        v1 = create_and_fill(client, "office_v1", records(subset, analyse, "v1"), with_build=True)
        client.create_alias("office_v1", "office")
        readers, outs = [], []
        for i in range(2):
            out = work / f"reader-{i}.json"
            outs.append(out)
            readers.append(subprocess.Popen([sys.executable, str(HERE), "--reader", uri, "office", "40", str(out)]))
        time.sleep(5)
        v2 = create_and_fill(client, "office_v2", records(subset, analyse, "v2"), with_build=True)
        t_alter = time.perf_counter()
        client.alter_alias("office_v2", "office")
        alter_ms = ms(time.perf_counter() - t_alter)
        time.sleep(3)
        t_drop = time.perf_counter()
        client.drop_collection("office_v1")
        drop_ms = ms(time.perf_counter() - t_drop)
        described = client.describe_alias("office")
        # one writer while the readers read: single upserts into the live collection
        upserts, upsert_fail = 0, 0
        end = time.time() + 8
        while time.time() < end:
            try:
                batch = records(subset[upserts % n: upserts % n + 20], analyse, "v2")
                client.upsert("office_v2", batch)
                upserts += len(batch)
            except Exception:  # noqa: BLE001
                upsert_fail += 1
        for r in readers:
            r.wait(timeout=120)
        results = [json.loads(o.read_text()) for o in outs]
        failed = sum(r["failed"] for r in results)
        mixed = sum(v for r in results for k, v in r["answers"].items() if "+" in k)
        note("alias switch under two searching processes", "yes" if failed == 0 and mixed == 0 else "NO",
             f"readers: {[r['answers'] for r in results]}, failed {failed}, mixed answers {mixed}, "
             f"errors {[e for r in results for e in r['errors']][:2]}; alter_alias {alter_ms} ms, "
             f"drop old {drop_ms} ms; alias now -> {described.get('collection_name')}; "
             f"reader search p50 {[r['p50_ms'] for r in results]} ms")
        note("one writer + two readers (server mode)", "yes" if upsert_fail == 0 and failed == 0 else "NO",
             f"{upserts} passages upserted in 8 s ({upsert_fail} failed) while the readers searched; "
             f"builds of {n} passages: v1 {v1}, v2 {v2}")
        client.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


# ---- main ------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="/tmp/serve-bench/office-idx")
    parser.add_argument("--work", default="/tmp/milvus-probe")
    parser.add_argument("--reader", nargs=4, metavar=("URI", "ALIAS", "SECONDS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-stackfaq", action="store_true")
    args = parser.parse_args()
    if args.reader:
        reader(args.reader[0], args.reader[1], float(args.reader[2]), args.reader[3])
        return
    sys.path.insert(0, str(ROOT))
    from importlib.metadata import version

    from pymilvus import MilvusClient

    from study import open_searcher

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"pymilvus {version('pymilvus')}, milvus-lite {version('milvus-lite')}, faiss {version('faiss-cpu')}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    searcher = open_searcher(args.index)
    analyse = make_analyser()
    passages = load_passages(searcher)
    qrels, items, queries = ticket_items(searcher)
    qvecs = searcher.encoder.encode_queries([q.dense for q in queries])

    db_path = work / "kb.db"
    shutil.rmtree(db_path, ignore_errors=True)
    t0 = time.perf_counter()
    client = MilvusClient(str(db_path))
    note("open milvus-lite .db (embedded server thread)", "yes", f"{ms(time.perf_counter() - t0)} ms")

    print("analyzers", flush=True)
    check_analyzers(client)

    print(f"building 'office' from {len(passages)} passages", flush=True)
    recs = records(passages, analyse)
    build = create_and_fill(client, "office", recs)
    segments = len(list((db_path).rglob("*.parquet")))
    note("build office collection", "yes", f"{len(recs)} passages: {build} (passages/s of insert incl. BM25 "
         f"analysis); {segments} parquet files; disk {dir_mb(db_path)} MB vs index version "
         f"{dir_mb(searcher.version.path) if hasattr(searcher.version, 'path') else '?'} MB")

    print("dense + filters vs FAISS", flush=True)
    check_dense_filters(client, "office", searcher, qvecs[:40], passages)

    print("score direction, hybrid rankers", flush=True)
    check_scores(client, "office", searcher, analyse, queries, qvecs)

    print("quality: tickets-dev", flush=True)
    table, counts = evaluate_tickets(client, "office", searcher, analyse, qrels, items, queries, qvecs)
    print(f"\ntickets-dev ({counts}), article-level, office KB:")
    print("| variant | group | R@1 | R@3 | R@10 | MRR@10 | nDCG@10 |\n|---|---|---|---|---|---|---|")
    for key, m in sorted(table.items(), key=lambda kv: (kv[0].split(" | ")[1], list(table).index(kv[0]))):
        v, g = key.split(" | ")
        print(f"| {v} | {g} | " + " | ".join(f"{m[x]:.3f}" for x in ("R@1", "R@3", "R@10", "MRR@10", "nDCG@10"))
              + " |")

    print(f"\nspeed (p50 ms, interleaved, {len(queries)} queries x 2)", flush=True)
    lat = check_latency(client, "office", searcher, analyse, queries, qvecs)
    for k, v in lat.items():
        print(f"  {k}: {v} ms")
    print(f"  ratios: dense {lat['milvus dense (FLAT, 100)'] / lat['FAISS dense (flat, 100)']:.1f}x, "
          f"filtered dense {lat['milvus dense, product filter'] / lat['FAISS dense, product filter']:.1f}x, "
          f"BM25 {lat['milvus BM25 (100)'] / lat['FTS5 BM25 (100)']:.1f}x", flush=True)

    print("incremental updates", flush=True)
    check_incremental(client, "office", searcher, analyse, passages, db_path)

    print("re-open (load time)", flush=True)
    check_two_processes(db_path)
    from milvus_lite.server_manager import server_manager_instance
    client.close()
    server_manager_instance.release_server(str(db_path))
    t0 = time.perf_counter()
    client = MilvusClient(str(db_path))
    opened = time.perf_counter()
    client.load_collection("office")
    loaded = time.perf_counter()
    milvus_bm25(client, "office", "outlook password prompt")
    milvus_dense(client, "office", qvecs[0])
    first = time.perf_counter()
    note("re-open the .db with the office collection", "yes",
         f"open {ms(opened - t0)} ms, load_collection {ms(loaded - opened)} ms, first BM25 + dense search "
         f"{ms(first - loaded)} ms; disk now {dir_mb(db_path)} MB")

    if not args.skip_stackfaq:
        print("quality: stackfaq", flush=True)
        faq = evaluate_stackfaq(client, searcher.encoder, searcher.settings, analyse)
        print(f"\nstackfaq: {faq['queries']} queries, {faq['docs']} docs (build {faq['build']})")
        print("| variant | R@10 | MRR@10 | nDCG@10 |\n|---|---|---|---|")
        for v, m in faq["variants"].items():
            print(f"| {v} | {m['R@10']:.3f} | {m['MRR@10']:.3f} | {m['nDCG@10']:.3f} |")
    client.close()
    server_manager_instance.release_server(str(db_path))

    print("server mode, aliases, readers and a writer", flush=True)
    check_server_and_alias(work, passages, analyse)

    print(f"\nload average {os.getloadavg()[0]:.1f}\n| capability | works? | detail |\n|---|---|---|")
    for cap, works, detail in ROWS:
        print(f"| {cap} | {works} | {detail} |")


if __name__ == "__main__":
    main()
