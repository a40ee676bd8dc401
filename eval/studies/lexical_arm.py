"""Study (issue 13): our SQLite FTS5 lexical arm alone against a plain Okapi BM25, and one change at a time to ours.

Study-only dependency: `bm25s` (0.3.16 used; `.venv/bin/pip install bm25s`), the BM25 engine issue 15 names for
large knowledge bases; `snowballstemmer` (a product dependency already) stems for its stemmed variants.

Usage: python eval/studies/lexical_arm.py [SET ...]   (default: every set below)
       python eval/studies/lexical_arm.py --fused SET ...   (the fused service with each term-pruning variant)
       python eval/studies/lexical_arm.py --latency SET ... (their time: the arm alone and an in-process suggest)
  stackfaq, titles            ../shared/datasets/stackfaq (and variant_title_to_answer), over the index `kb eval`
                              builds for them in var/eval (run `kb eval` on the set once first)
  faq                         stackfaq reshaped as a small FAQ (125 entries: title and answers), built in memory
  dev, check                  eval/tickets-dev (tuning) and eval/tickets-check over OFFICE_IDX
  d365                        eval/d365-check over D365_IDX
LEXICAL_ARM_VARIANTS=word,word runs only the variants whose names contain one of the words (and the service's arm).
Indexes: OFFICE_IDX (default /tmp/serve-bench/office-idx), D365_IDX (default /tmp/eval/d365-idx); DATASETS (../shared/datasets).

Every ranking is of the same passages (title, headings, body of the index's rows), scored alone (no dense arm), and
judged at article level (an article scores as its best passage, or the sum of its passages where named): MRR@10 and
R@3 (the best article in the top 3; on stackfaq any relevant answer), per set and per group, with a paired bootstrap
95% interval (2,000 resamples of queries) of each variant's MRR@10 difference from our arm as the service runs it,
and the mean time per query (ranking included; the variants' FTS5 tables are in-memory copies, the service's arm
reads the index file, so compare times between variants of the same kind).
Ticket sets are queried with the service's lexical text (the cleaned ticket, plus its glossary rendering when
Indonesian); stackfaq with the query as written, as `kb eval` does. Check sets are reported, never tuned on.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval" / "studies"))
from study import open_searcher, read_ticket_set  # noqa: E402  (puts the repo on sys.path)

import bm25s  # noqa: E402
import snowballstemmer  # noqa: E402

from search.evaluation import read_jsonl, read_qrels  # noqa: E402
from kb.index import ArticleRecord, PassageRecord, open_backend  # noqa: E402
from kb.index.faiss_sqlite.fts import quote  # noqa: E402  (the variants below are FTS5 tables of this study's own)
from search.lexical import STOP_WORDS, TOKEN, prune_terms, search_lexical  # noqa: E402
from search.ticket_evaluation import article_metrics, ticket_query  # noqa: E402

DATASETS = Path(os.environ.get("DATASETS", ROOT.parent / "shared" / "datasets"))
OFFICE_IDX = Path(os.environ.get("OFFICE_IDX", "/tmp/serve-bench/office-idx"))
D365_IDX = Path(os.environ.get("D365_IDX", "/tmp/eval/d365-idx"))
SERVICE = "FTS5 arm (service)"
SERVICE_TOKENIZER = "porter unicode61 remove_diacritics 2"
SIMPLE = re.compile(r"\w+", re.UNICODE)
Scores = dict[int, float]


# ---- corpora and query sets ----------------------------------------------------------------------------------
class Corpus:
    """An index version's passages as the FTS5 table holds them: (title, headings, body) per row, and its article."""

    def __init__(self, db: sqlite3.Connection, fields: list[tuple[str, str, str]], row_article: list[str], index):
        self.db, self.fields, self.row_article = db, fields, row_article
        self.index = index  # the same passages as an index version: the service's arm searches it
        self.articles = list(dict.fromkeys(self.row_article))
        index = {a: i for i, a in enumerate(self.articles)}
        self.row_article_index = np.array([index[a] for a in self.row_article])
        self.term_df = dict(self.db.execute("SELECT term, df FROM term_df"))
        self._memory: dict[tuple, sqlite3.Connection] = {}

    @classmethod
    def of_index(cls, index_dir: Path) -> Corpus:
        """The current version of a `kb index` / `kb eval` index, read directly (read-only, no service code)."""
        current = (index_dir / "CURRENT").read_text().strip()
        db = sqlite3.connect(f"file:{index_dir / current / 'meta.sqlite'}?mode=ro", uri=True)
        rows = db.execute("SELECT p.row, p.article_id, a.title, p.heading_path, p.text FROM passages p "
                          "JOIN articles a ON a.id = p.article_id ORDER BY p.row").fetchall()
        return cls(db, [(r[2], " ".join(json.loads(r[3])), r[4]) for r in rows], [r[1] for r in rows],
                   open_backend(index_dir).open(check=False))

    @classmethod
    def of_fields(cls, fields: list[tuple[str, str, str]], row_article: list[str]) -> Corpus:
        """An in-memory index of these passages with the service's FTS5 table and term_df (kb/store.py's schema)."""
        db = sqlite3.connect(":memory:")
        db.execute(f"CREATE VIRTUAL TABLE passages_fts USING fts5(title, headings, body, content='', "
                   f"tokenize='{SERVICE_TOKENIZER}')")
        db.execute("CREATE TABLE term_df (term TEXT PRIMARY KEY, df INTEGER NOT NULL)")
        db.executemany("INSERT INTO passages_fts(rowid, title, headings, body) VALUES (?, ?, ?, ?)",
                       [(i, *f) for i, f in enumerate(fields)])
        df: dict[str, int] = {}
        for f in fields:
            for word in set(SIMPLE.findall(" ".join(f).lower())):
                df[word] = df.get(word, 0) + 1
        db.executemany("INSERT INTO term_df VALUES (?, ?)", df.items())
        import tempfile  # the same passages as an index version (one passage per article, any unit vector)
        backend = open_backend(Path(tempfile.mkdtemp(prefix="lexical-arm-")))
        titles = {a: t for (t, _, _), a in zip(fields, row_article)}
        backend.write(backend.new_name(), [ArticleRecord(a, a, t) for a, t in titles.items()],
                      [PassageRecord(f"{a}#{i}", a, (h,) if h else (), "", b) for i, ((_, h, b), a)
                       in enumerate(zip(fields, row_article))],
                      np.eye(1, 8, dtype=np.float32).repeat(len(fields), axis=0), {"model": "none", "dim": 8})
        return cls(db, fields, row_article, backend.open())

    def texts(self) -> list[str]:
        return [f"{t} {h} {b}" for t, h, b in self.fields]

    def article_texts(self) -> list[str]:
        joined: dict[str, list[str]] = {}
        for (t, h, b), a in zip(self.fields, self.row_article):
            joined.setdefault(a, [t]).append(f"{h} {b}")
        return [" ".join(joined[a]) for a in self.articles]

    def fts(self, tokenizer: str, layout: str) -> sqlite3.Connection:
        """An in-memory FTS5 table `t` of these passages with another tokenizer or layout: "3 columns" (title,
        headings, body per passage, as the index), "1 column" (the three concatenated), "articles" (one row per
        article, rowid = its number in self.articles)."""
        key = (tokenizer, layout)
        if key not in self._memory:
            conn = sqlite3.connect(":memory:")
            if layout == "1 column":
                conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(body, tokenize='{tokenizer}')")
                conn.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(self.texts()))
            else:
                conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(title, headings, body, tokenize='{tokenizer}')")
                if layout == "articles":
                    grouped: dict[str, list] = {}
                    for (t, h, b), a in zip(self.fields, self.row_article):
                        grouped.setdefault(a, [t, [], []])
                        grouped[a][1].append(h), grouped[a][2].append(b)
                    rows = [(i, grouped[a][0], " ".join(grouped[a][1]), " ".join(grouped[a][2]))
                            for i, a in enumerate(self.articles)]
                else:
                    rows = [(i, t, h, b) for i, (t, h, b) in enumerate(self.fields)]
                conn.executemany("INSERT INTO t(rowid, title, headings, body) VALUES (?, ?, ?, ?)", rows)
            self._memory[key] = conn
        return self._memory[key]


class QuerySet:
    """(id, lexical text, relevant articles, groups) of a set's answerable queries."""

    def __init__(self, name: str, role: str, corpus: Corpus, items: list[tuple[str, str, dict, tuple]]):
        self.name, self.role, self.corpus, self.items = name, role, corpus, items


def beir_set(name: str, folder: Path) -> QuerySet:
    digest = hashlib.sha256((folder / "corpus.jsonl").read_bytes()).hexdigest()[:12]
    index_dir = ROOT / "var" / "eval" / f"{folder.name}-{digest}"  # where `kb eval` builds it (evaluation.py)
    if not (index_dir / "CURRENT").is_file():
        sys.exit(f"{index_dir} is missing: run `kb eval {folder}` once first")
    qrels = read_qrels(folder / "qrels.tsv")
    items = [(q["_id"] if "_id" in q else q["id"], q["text"], qrels[q.get("_id", q.get("id"))], ("all",))
             for q in read_jsonl(folder / "queries.jsonl") if q.get("_id", q.get("id")) in qrels]
    return QuerySet(name, "public", Corpus.of_index(index_dir), items)


def faq_set(folder: Path) -> QuerySet:
    """stackfaq reshaped as a small FAQ: one entry per thread (its question title, then all its answers), queried
    by the 1,250 paraphrases; the right entry is the query's thread. Built here, in memory."""
    threads: dict[str, list] = {}
    for doc in read_jsonl(folder / "corpus.jsonl"):
        threads.setdefault(doc["thread"], [doc["title"], []])[1].append(doc["text"])
    fields = [(title, "", " ".join(answers)) for title, answers in threads.values()]
    items = [(q["id"], q["text"], {q["id"].split("_")[0]: 1}, ("all",)) for q in read_jsonl(folder / "queries.jsonl")
             if q["id"].split("_")[0] in threads]
    return QuerySet("stackfaq as a 125-entry FAQ", "public", Corpus.of_fields(fields, list(threads)), items)


def ticket_set(name: str, role: str, folder: Path, index_dir: Path) -> QuerySet:
    searcher = open_searcher(index_dir)  # for the service's query building (cleaning, glossary); nothing embedded
    qrels, queries = read_ticket_set(folder)
    items = [(q["id"], ticket_query(q, searcher).lexical, qrels[q["id"]],
              ("all", f"{q.get('lang', 'en')} {q.get('kind', 'ticket')}")) for q in queries if q["id"] in qrels]
    return QuerySet(name, role, Corpus.of_index(index_dir), items)


SETS: dict[str, Callable[[], QuerySet]] = {
    "stackfaq": lambda: beir_set("stackfaq", DATASETS / "stackfaq"),
    "titles": lambda: beir_set("stackfaq titles", DATASETS / "stackfaq" / "variant_title_to_answer"),
    "faq": lambda: faq_set(DATASETS / "stackfaq"),
    "dev": lambda: ticket_set("tickets-dev", "tune", ROOT / "eval" / "tickets-dev", OFFICE_IDX),
    "check": lambda: ticket_set("tickets-check", "check", ROOT / "eval" / "tickets-check", OFFICE_IDX),
    "d365": lambda: ticket_set("d365-check", "check", ROOT / "eval" / "d365-check", D365_IDX),
}


# ---- our arm, one thing at a time ---------------------------------------------------------------------------
def terms_of(text: str, stop: frozenset[str]) -> list[str]:
    """extract_terms with another stop-word list."""
    terms: dict[str, None] = {}
    for token in TOKEN.findall(text.lower()):
        if token in stop or (len(token) < 2 and not token.isdigit()) or token.replace("_", "") == "":
            continue
        terms.setdefault(token, None)
        if len(terms) >= 64:
            break
    return list(terms)


def fts_arm(corpus: Corpus, text: str, *, tokenizer: str = SERVICE_TOKENIZER,
            layout: str = "3 columns", weights: tuple = (2.0, 1.5, 1.0), stop: frozenset[str] = STOP_WORDS,
            connective: str = "OR", limit: int = 100, prune: dict | None = None) -> Scores:
    """search_lexical with one setting changed, over an in-memory copy of the index's FTS5 table; `prune`: the
    arguments of prune_terms (None: the service's; {"off": True}: no pruning at all)."""
    terms = terms_of(text, stop)
    prune = dict(prune or {})
    if prune.pop("unknown_last", False):  # the cap keeps the rarest 32: known words before words no passage has
        known = [t for t in terms if corpus.term_df.get(t, 0) > 0]
        terms = prune_terms(known, corpus.term_df, len(corpus.row_article), **prune)
        terms += [t for t in terms_of(text, stop) if t not in corpus.term_df][:max(0, 32 - len(terms))]
    elif not prune.get("off"):
        terms = prune_terms(terms, corpus.term_df, len(corpus.row_article), **prune)
    if not terms:
        return {}
    db = corpus.fts(tokenizer, layout)
    weights = weights[:1] if layout == "1 column" else weights
    sql = (f"SELECT rowid, -bm25(t, {', '.join(map(str, weights))}) AS s FROM t WHERE t MATCH ? "
           "ORDER BY s DESC LIMIT ?")
    expression = f" {connective} ".join(quote(t) for t in terms)
    found = dict(db.execute(sql, (expression, limit)).fetchall())
    if not found and connective == "AND":  # nothing has every word: fall back to any word
        found = dict(db.execute(sql, (" OR ".join(quote(t) for t in terms), limit)).fetchall())
    return found


# ---- plain BM25 (bm25s) -------------------------------------------------------------------------------------
class PlainBM25:
    """bm25s over the passages (title, headings, body as one text) or over whole articles; `\\w+` lower-case tokens,
    optionally without stop words and stemmed."""

    def __init__(self, corpus: Corpus, documents: str = "passages", stop: frozenset[str] = frozenset(),
                 stemmer: str | None = None, k1: float = 1.5, b: float = 0.75, method: str = "lucene"):
        self.corpus, self.documents, self.stop = corpus, documents, stop
        self.stem = snowballstemmer.stemmer(stemmer).stemWords if stemmer else (lambda words: words)
        texts = corpus.texts() if documents == "passages" else corpus.article_texts()
        self.model = bm25s.BM25(k1=k1, b=b, method=method)
        self.model.index([self.tokens(t) or ["\x00"] for t in texts], show_progress=False)

    def tokens(self, text: str) -> list[str]:
        return self.stem([w for w in SIMPLE.findall(text.lower()) if w not in self.stop])

    def scores(self, text: str) -> np.ndarray:
        tokens = [t for t in self.tokens(text) if t in self.model.vocab_dict]
        size = len(self.corpus.row_article if self.documents == "passages" else self.corpus.articles)
        return self.model.get_scores(tokens) if tokens else np.zeros(size)


# ---- passage scores -> article ranking ----------------------------------------------------------------------
def rank_rows(corpus: Corpus, scores: Scores, how: str = "max") -> list[str]:
    """Articles by their best passage (max) or the sum of their passages' scores."""
    per: dict[str, float] = {}
    for row, s in scores.items():
        a = corpus.row_article[row]
        per[a] = max(per.get(a, float("-inf")), s) if how == "max" else per.get(a, 0.0) + s
    return sorted(per, key=lambda a: -per[a])[:10]


def rank_array(corpus: Corpus, scores: np.ndarray, how: str) -> list[str]:
    if how == "articles":  # one score per article already
        top = np.argsort(-scores)[:10]
        return [corpus.articles[i] for i in top if scores[i] > 0]
    if how == "max":
        per = np.zeros(len(corpus.articles))
        np.maximum.at(per, corpus.row_article_index, scores)
    else:
        per = np.bincount(corpus.row_article_index, weights=scores, minlength=len(corpus.articles))
    top = np.argsort(-per)[:10]
    return [corpus.articles[i] for i in top if per[i] > 0]


def variants(corpus: Corpus) -> dict[str, Callable[[str], list[str]]]:
    """Name -> query text -> top 10 articles. The first is the service's arm (search.lexical.search_lexical)."""
    total = len(corpus.row_article)
    plain = {"passages": PlainBM25(corpus)}
    plain_stem = PlainBM25(corpus, stemmer="porter")
    plain_ours = PlainBM25(corpus, stop=STOP_WORDS, stemmer="porter", k1=1.2, method="robertson")
    plain_art = PlainBM25(corpus, documents="articles")
    plain_en = PlainBM25(corpus, stop=frozenset(bm25s.stopwords.STOPWORDS_EN))
    no_porter = "unicode61 remove_diacritics 2"
    out: dict[str, Callable[[str], list[str]]] = {
        SERVICE: lambda q: rank_rows(corpus, search_lexical(corpus.index, q, 100, df=corpus.term_df, total=total)),
        "same, rebuilt in memory (sanity)": lambda q: rank_rows(corpus, fts_arm(corpus, q)),
        "plain BM25 (bm25s, k1 1.5, b 0.75), max of passages": lambda q: rank_array(corpus, plain["passages"].scores(q), "max"),
        "plain BM25, sum of passages": lambda q: rank_array(corpus, plain["passages"].scores(q), "sum"),
        "plain BM25, whole articles": lambda q: rank_array(corpus, plain_art.scores(q), "articles"),
        "plain BM25 + Lucene's 33 stop words": lambda q: rank_array(corpus, plain_en.scores(q), "max"),
        "plain BM25 + Porter stems": lambda q: rank_array(corpus, plain_stem.scores(q), "max"),
        "plain BM25 + our stop words, Porter, k1 1.2, Robertson idf": lambda q: rank_array(corpus, plain_ours.scores(q), "max"),
        "ours: no stop words": lambda q: rank_rows(corpus, fts_arm(corpus, q, stop=frozenset())),
        "ours: Lucene's 33 stop words": lambda q: rank_rows(corpus, fts_arm(corpus, q, stop=frozenset(bm25s.stopwords.STOPWORDS_EN))),
        "ours: AND of terms (OR if none)": lambda q: rank_rows(corpus, fts_arm(corpus, q, connective="AND")),
        "ours: no Porter stemming": lambda q: rank_rows(corpus, fts_arm(corpus, q, tokenizer=no_porter)),
        "ours: column weights 1/1/1": lambda q: rank_rows(corpus, fts_arm(corpus, q, weights=(1.0, 1.0, 1.0))),
        "ours: one column (title+headings+body)": lambda q: rank_rows(corpus, fts_arm(corpus, q, layout="1 column")),
        "ours: 1,000 candidates": lambda q: rank_rows(corpus, fts_arm(corpus, q, limit=1000)),
        "ours: no term pruning at all": lambda q: rank_rows(corpus, fts_arm(corpus, q, prune={"off": True})),
        "ours: no pruning by share (32 rarest terms kept)": lambda q: rank_rows(corpus, fts_arm(
            corpus, q, prune={"max_share": 1.0})),
        "ours: no 32-term cap (pruning by share kept)": lambda q: rank_rows(corpus, fts_arm(
            corpus, q, prune={"max_terms": 64})),
        "ours: 32-term cap, words no passage has last": lambda q: rank_rows(corpus, fts_arm(
            corpus, q, prune={"unknown_last": True})),
        "ours: 48-term cap": lambda q: rank_rows(corpus, fts_arm(corpus, q, prune={"max_terms": 48})),
        "ours: pruning at 25% of passages": lambda q: rank_rows(corpus, fts_arm(corpus, q, prune={"max_share": 0.25})),
        "ours: pruning at 50% of passages": lambda q: rank_rows(corpus, fts_arm(corpus, q, prune={"max_share": 0.5})),
        "ours: sum of passages (1,000 candidates)": lambda q: rank_rows(corpus, fts_arm(corpus, q, limit=1000), "sum"),
        "ours: whole articles as FTS5 rows": lambda q: [corpus.articles[r] for r in
                                                        list(fts_arm(corpus, q, layout="articles"))[:10]],
    }
    only = [w.strip() for w in os.environ.get("LEXICAL_ARM_VARIANTS", "").split(",") if w.strip()]
    return {k: f for k, f in out.items() if k == SERVICE or not only or any(w in k for w in only)}


# ---- running and reporting ----------------------------------------------------------------------------------
def boot(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run(qs: QuerySet) -> dict:
    started = time.perf_counter()
    table = variants(qs.corpus)
    per: dict[str, dict[str, list[tuple[float, float]]]] = {}
    seconds: dict[str, float] = {}
    for _, text, relevant, groups in qs.items:
        for name, fn in table.items():
            begun = time.perf_counter()
            ranking = fn(text)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - begun
            m = article_metrics(ranking, relevant)
            for g in groups:
                per.setdefault(g, {}).setdefault(name, []).append((m["MRR@10"], m["R@3"]))
    print(f"\n## {qs.name} ({qs.role}): {len(qs.items)} queries, {len(qs.corpus.row_article)} passages, "
          f"{len(qs.corpus.articles)} articles ({time.perf_counter() - started:.0f} s)")
    print("| group | variant | n | MRR@10 | R@3 | MRR@10 - service [95% CI] | ms/query |\n|---|---|---|---|---|---|---|")
    report = {}
    for g, rows in per.items():
        base = np.array([m for m, _ in rows[SERVICE]])
        for name, values in rows.items():
            mrr, r3 = np.array([m for m, _ in values]), np.array([r for _, r in values])
            lo, hi = boot(mrr - base)
            print(f"| {g} | {name} | {len(values)} | {mrr.mean():.3f} | {r3.mean():.3f} | "
                  f"{(mrr - base).mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {1000 * seconds[name] / len(qs.items):.1f} |")
            report[f"{g} | {name}"] = {"n": len(values), "MRR@10": round(mrr.mean(), 4), "R@3": round(r3.mean(), 4),
                                       "diff": round((mrr - base).mean(), 4), "ci": [round(lo, 4), round(hi, 4)]}
    return report


# ---- the fused service with a pruning variant ------------------------------------------------------------------
def keep_known_first(terms: list[str], df: dict[str, int], total: int, **options) -> list[str]:
    """prune_terms, with words no passage has after every known word (they fill what the cap leaves)."""
    known = ORIGINAL_PRUNE([t for t in terms if df.get(t, 0) > 0], df, total, **options)
    return known + [t for t in terms if df and t not in df][:max(0, 32 - len(known))]


PRUNING: dict[str, Callable] = {
    "service": None,
    "no term pruning at all": lambda terms, df, total, **_: terms,
    "no 32-term cap (pruning by share kept)": lambda terms, df, total, **o: ORIGINAL_PRUNE(terms, df, total, max_terms=64),
    "32-term cap, words no passage has last": keep_known_first,
}


def run_fused(keys: list[str]) -> None:
    """The service's fused ranking (Searcher.collect + combiner_for, as `kb eval` ranks) with search.lexical's
    prune_terms swapped for each variant; stackfaq as `kb eval` queries it (query text as written)."""
    import search.lexical as lexical
    from search.searcher import Query

    for key in keys:
        folder, index_dir, role = FUSED_SETS[key]
        searcher = open_searcher(index_dir)
        qrels, queries = read_ticket_set(folder)
        items = [q for q in queries if q.get("id", q.get("_id")) in qrels]
        per: dict[str, dict[str, list]] = {}
        for name, prune in PRUNING.items():
            lexical.prune_terms = prune or ORIGINAL_PRUNE
            for item in items:
                qid = item.get("id", item.get("_id"))
                if role == "public":
                    query, groups = Query(item["text"], item["text"]), ("all",)
                else:
                    query = ticket_query(item, searcher)
                    groups = ("all", f"{item.get('lang', 'en')} {item.get('kind', 'ticket')}")
                scores = searcher.collect(query).combined(searcher.combiner_for(query))
                m = article_metrics([a for a, _, _ in searcher.group_articles(scores, 10)], qrels[qid])
                for g in groups:
                    per.setdefault(g, {}).setdefault(name, []).append((m["MRR@10"], m["R@3"]))
        lexical.prune_terms = ORIGINAL_PRUNE
        print(f"\n## fused service: {folder.name} ({role}), {len(items)} queries")
        print("| group | pruning | n | MRR@10 | R@3 | MRR@10 - service [95% CI] |\n|---|---|---|---|---|---|")
        for g, rows in per.items():
            base = np.array([m for m, _ in rows["service"]])
            for name, values in rows.items():
                mrr, r3 = np.array([m for m, _ in values]), np.array([r for _, r in values])
                lo, hi = boot(mrr - base)
                print(f"| {g} | {name} | {len(values)} | {mrr.mean():.3f} | {r3.mean():.3f} | "
                      f"{(mrr - base).mean():+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        sys.stdout.flush()


def run_latency(keys: list[str], rounds: int = 5) -> None:
    """Time of the lexical arm (search_lexical on the index file) and of an in-process Searcher.suggest, per
    pruning variant, over the sets' tickets and queries; variants interleaved, their order turned each round,
    so that both see the same machine load. p50 / p90 in ms."""
    import search.lexical as lexical

    for key in keys:
        folder, index_dir, _ = FUSED_SETS[key]
        searcher = open_searcher(index_dir)
        _, queries = read_ticket_set(folder)
        texts = [(q, ticket_query(q, searcher).lexical) for q in queries]
        searcher.suggest("warm up", "the encoder and the caches")
        names = list(PRUNING)
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(rounds):
            for q, text in texts:
                for name in (names if r % 2 == 0 else names[::-1]):
                    lexical.prune_terms = PRUNING[name] or ORIGINAL_PRUNE
                    begun = time.perf_counter()
                    search_lexical(searcher.version, text, searcher.settings.candidates, df=searcher.term_df,
                                   total=len(searcher.row_article))
                    middle = time.perf_counter()
                    searcher.suggest(q.get("subject", ""), q.get("text", "") + f" {r}", language=q.get("lang"))
                    done = time.perf_counter()
                    times.setdefault((name, "lexical arm"), []).append(1000 * (middle - begun))
                    times.setdefault((name, "suggest"), []).append(1000 * (done - middle))
        lexical.prune_terms = ORIGINAL_PRUNE
        print(f"\n## latency: {folder.name} over {index_dir}, {len(texts)} queries x {rounds} rounds")
        print("| pruning | lexical arm p50 / p90 ms | suggest p50 / p90 ms |\n|---|---|---|")
        for name in names:
            arm, sug = np.array(times[(name, "lexical arm")]), np.array(times[(name, "suggest")])
            print(f"| {name} | {np.percentile(arm, 50):.1f} / {np.percentile(arm, 90):.1f} | "
                  f"{np.percentile(sug, 50):.1f} / {np.percentile(sug, 90):.1f} |")
        sys.stdout.flush()


ORIGINAL_PRUNE = prune_terms
FUSED_SETS = {
    "stackfaq": (DATASETS / "stackfaq", None, "public"),
    "titles": (DATASETS / "stackfaq" / "variant_title_to_answer", None, "public"),
    "dev": (ROOT / "eval" / "tickets-dev", OFFICE_IDX, "tune"),
    "check": (ROOT / "eval" / "tickets-check", OFFICE_IDX, "check"),
    "d365": (ROOT / "eval" / "d365-check", D365_IDX, "check"),
}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fused"]:
        for key in sys.argv[2:]:
            if FUSED_SETS[key][1] is None:  # stackfaq: the index kb eval built
                folder = FUSED_SETS[key][0]
                digest = hashlib.sha256((folder / "corpus.jsonl").read_bytes()).hexdigest()[:12]
                FUSED_SETS[key] = (folder, ROOT / "var" / "eval" / f"{folder.name}-{digest}", "public")
        run_fused(sys.argv[2:])
        sys.exit(0)
    if sys.argv[1:2] == ["--latency"]:
        run_latency(sys.argv[2:])
        sys.exit(0)
    chosen = sys.argv[1:] or list(SETS)
    results = {}
    for key in chosen:
        qs = SETS[key]()
        results[qs.name] = run(qs)
        sys.stdout.flush()
    out = os.environ.get("LEXICAL_ARM_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=1))
