"""BM25 postings of a large FAISS + SQLite version as arrays: FTS5's own terms and counts, scored as FTS5's bm25() does.

FTS5 reads a query's posting lists row by row in SQLite and computes bm25() for every matching row, so a query's
time follows the postings it reads (docs/benchmarks.md, Growth: 102 of a suggest's 128 ms at 204k passages). Here the
same postings (term -> passage keys, with the term's count in title, headings and body, and each passage's length)
are read once from the version's FTS5 index (fts5vocab) into arrays beside it, and a query scores them with numpy:
the same formula and constants as FTS5 (sqlite3 ext/fts5/fts5_aux.c, fts5Bm25Function: k1 1.2, b 0.75, IDF
log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, frequency weighted per column, length = all columns' tokens), so it
returns what `-bm25(passages_fts, w...)` returns (tests/test_postings.py holds them equal). Query words are split and
stemmed by FTS5's own tokenizer (an in-memory table of the same definition), never by a second stemmer.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kb import integrity

POSTINGS = "postings.npz"
META = "meta.sqlite"  # store.META
TOKENIZE = "porter unicode61 remove_diacritics 2"  # store.SCHEMA's passages_fts tokenizer
COLUMNS = ("title", "headings", "body")  # passages_fts columns, the order of a TermQuery's weights
REQUEST = "postings_request"  # manifest key on the way in, never sealed: {"min_passages": n} from the backend
RECORD = "postings"  # sealed manifest key of a version that carries postings arrays
K1, B = 1.2, 0.75  # fts5_aux.c
MIN_IDF = 1e-6  # fts5_aux.c: an IDF at or below 0 counts this much
TF_MAX = np.iinfo(np.uint16).max
STEMS_KEPT = 200_000  # query words whose FTS5 tokens are remembered


def read_postings(db_path: Path, size: int) -> dict[str, np.ndarray]:
    """The FTS5 index of `db_path` as arrays: terms (UTF-8, newline-joined), term -> start in the postings, passage
    key and per-column counts of every posting (term order, then key), and each passage's token count.

    fts5vocab's instance table lists every token (term, passage, column, offset) in that order, so SQLite groups it by
    term without sorting; each term's tokens come as one string of passage * 4 + column codes, parsed by numpy, and
    runs of equal codes are the counts (one Python step per term, not per posting: 0.7 s instead of 4.9 s at 12.8k)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return postings_of(conn, size)
    finally:
        conn.close()


def tokenized(rows: list[tuple[int, str, str, str]], size: int) -> dict[str, np.ndarray]:
    """The postings of (key, title, headings, body) rows by FTS5's own tokenizer (an in-memory passages_fts), as
    `read_postings` gives them for a version of `size` passages holding only these."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE VIRTUAL TABLE passages_fts USING fts5(title, headings, body, content='', "
                     f"tokenize='{TOKENIZE}')")
        conn.executemany("INSERT INTO passages_fts(rowid, title, headings, body) VALUES (?, ?, ?, ?)", rows)
        return postings_of(conn, size)
    finally:
        conn.close()


CHUNK_TOKENS = 1 << 20  # tokens turned into postings at a time, so that the build's memory holds the result, not all


def postings_of(conn: sqlite3.Connection, size: int) -> dict[str, np.ndarray]:
    """`read_postings` of the passages_fts table of an open connection, a chunk of terms at a time."""
    terms: list[str] = []
    pending: list[np.ndarray] = []
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per chunk: keys, counts, postings per term
    held = 0
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.postings_vocab USING fts5vocab(main, passages_fts, instance)")
        column = " + ".join(f"{n} * (col = '{name}')" for n, name in enumerate(COLUMNS) if n)
        for term, codes in conn.execute(f"SELECT term, group_concat(doc * 4 + {column}, ' ') "
                                        "FROM temp.postings_vocab GROUP BY term"):
            terms.append(term)
            pending.append(np.fromstring(codes, dtype=np.int32, sep=" "))  # keys < 2**29
            held += len(pending[-1])
            if held >= CHUNK_TOKENS:
                found.append(runs(pending, size))
                pending, held = [], 0
    finally:
        conn.execute("DROP TABLE temp.postings_vocab")
    if pending or not found:
        found.append(runs(pending, size))
    per_term = np.concatenate([n for _, _, n in found])
    starts = np.concatenate(([0], np.cumsum(per_term)))
    keys = np.empty(int(starts[-1]), dtype=np.int32)
    tf = np.empty((int(starts[-1]), len(COLUMNS)), dtype=np.uint16)
    lengths = np.zeros(size, dtype=np.int64)
    at = 0
    while found:  # each chunk copied into place and let go: the memory of the result plus one chunk
        chunk_keys, chunk_tf, _ = found.pop(0)
        keys[at:at + len(chunk_keys)], tf[at:at + len(chunk_keys)] = chunk_keys, chunk_tf
        lengths += np.bincount(chunk_keys, weights=chunk_tf.sum(axis=1, dtype=np.int64), minlength=size).astype(np.int64)
        at += len(chunk_keys)
    return arrays_of(terms, starts, keys, tf, lengths)


def runs(parts: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postings of consecutive terms from their tokens (one array of passage * 4 + column codes per term, in FTS5's
    order): the passage keys, counts per column and postings per term; runs of equal codes are the counts."""
    lengths_per_term = np.array([len(p) for p in parts], dtype=np.int64)
    codes = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    term_of = np.repeat(np.arange(len(parts), dtype=np.int32), lengths_per_term)
    same_term = term_of[1:] == term_of[:-1]
    if not np.all((codes[1:] >= codes[:-1]) | ~same_term):  # not in FTS5's order: sort it (never seen)
        order = np.lexsort((codes, term_of))
        codes, term_of = codes[order], term_of[order]
        same_term = term_of[1:] == term_of[:-1]
    run = np.flatnonzero(np.concatenate(([True], (codes[1:] != codes[:-1]) | ~same_term)))  # first token of a run
    counts = np.diff(np.append(run, len(codes)))
    run_code, run_term = codes[run], term_of[run]
    run_key, run_col = run_code // 4, run_code % 4
    if len(run_key) and (run_key.min() < 0 or run_key.max() >= size or run_col.max() >= len(COLUMNS)):
        raise ValueError(f"the FTS5 index holds passage keys outside 0..{size - 1} or unknown columns")
    first = np.concatenate(([True], (run_key[1:] != run_key[:-1]) | (run_term[1:] != run_term[:-1])))
    posting = np.cumsum(first) - 1
    tf = np.zeros((int(first.sum()), len(COLUMNS)), dtype=np.uint16)
    tf[posting, run_col] = np.minimum(counts, TF_MAX)
    return run_key[first].astype(np.int32), tf, np.bincount(run_term[first], minlength=len(parts))


def arrays_of(terms: list[str], starts: np.ndarray, keys: np.ndarray, tf: np.ndarray,
              lengths: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays POSTINGS holds (`tf` already clipped to TF_MAX: counts of one word in one column of one passage)."""
    return {"terms": np.frombuffer("\n".join(terms).encode("utf-8"), dtype=np.uint8),
            "starts": np.asarray(starts, dtype=np.int64), "keys": np.asarray(keys, dtype=np.int32),
            "tf": np.asarray(tf, dtype=np.uint16), "lengths": np.asarray(lengths, dtype=np.int64)}


def patched(base: Postings, removed: list[int], moves: list[tuple[int, int]],
            added: list[tuple[int, str, str, str]], size: int) -> dict[str, np.ndarray]:
    """The arrays of a delta version made from `base`'s: postings of `removed` keys dropped, of moved keys renumbered
    (`moves`: from, to), of the `added` rows (key, title, headings, body) tokenized by FTS5, merged in term then key
    order: what `read_postings` reads from the patched FTS5 index (tests/test_postings.py holds them equal), at the
    cost of sorting the change's postings and merging them into the rest, not of reading them all from SQLite again."""
    new_key = np.arange(base.size, dtype=np.int64)
    new_key[np.asarray(removed, dtype=np.int64)] = -1
    if moves:
        sources, targets = np.asarray(moves, dtype=np.int64).T
        new_key[sources] = targets
    fresh = tokenized(added, size)
    fresh_terms = fresh["terms"].tobytes().decode("utf-8").split("\n") if len(fresh["terms"]) else []
    vocabulary = sorted(set(base.terms) | set(fresh_terms))  # code point order = FTS5's byte order of UTF-8 terms
    number = {term: n for n, term in enumerate(vocabulary)}
    base_term = np.repeat(np.array([number[t] for t in base.terms], dtype=np.int64), np.diff(base.starts))
    fresh_term = np.repeat(np.array([number[t] for t in fresh_terms], dtype=np.int64), np.diff(fresh["starts"]))
    base_keys = new_key[base.keys]
    moved = base_keys != base.keys  # renumbered or removed
    still = ~moved  # in (term, key) order already, and so after renumbering the terms (the union keeps their order)
    moved &= base_keys >= 0
    few_term = np.concatenate((base_term[moved], fresh_term))  # the change's postings: sorted alone, then merged in
    few_keys = np.concatenate((base_keys[moved], fresh["keys"].astype(np.int64)))
    few_tf = np.concatenate((base.tf[moved], fresh["tf"]))
    order = np.lexsort((few_keys, few_term))
    few_term, few_keys, few_tf = few_term[order], few_keys[order], few_tf[order]
    term, keys = base_term[still], base_keys[still]
    at = np.searchsorted(term * (size + 1) + keys, few_term * (size + 1) + few_keys)
    term, keys = np.insert(term, at, few_term), np.insert(keys, at, few_keys)
    tf = np.insert(base.tf[still], at, few_tf, axis=0)
    first = np.concatenate(([True], term[1:] != term[:-1])) if len(term) else np.zeros(0, dtype=bool)
    used, term = term[first], np.cumsum(first) - 1  # sorted already: no np.unique; a term whose passages all went is gone
    starts = np.searchsorted(term, np.arange(len(used) + 1))
    lengths = np.zeros(size, dtype=np.int64)
    survivors = np.flatnonzero(new_key >= 0)
    lengths[new_key[survivors]] = base.lengths[survivors]
    lengths += fresh["lengths"]
    return arrays_of([vocabulary[i] for i in used], starts, keys, tf, lengths)


def write(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """POSTINGS in `folder`, fsynced."""
    with open(Path(folder) / POSTINGS, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())


def wanted(manifest: dict, size: int) -> bool:
    """Whether the manifest on its way in asks for postings that a version of `size` passages gets."""
    request = manifest.get(REQUEST)
    return (isinstance(request, dict) and request.get("min_passages") is not None
            and size >= int(request["min_passages"]) and size > 0)


def attach(folder: Path, size: int, manifest: dict) -> dict:
    """The hook of publishing: the manifest without its REQUEST; with a RECORD when POSTINGS was written into
    `folder` (the backend asked for it and the version has at least its `min_passages`): the file a patched version
    wrote (`patched`), else read from the version's FTS5 index."""
    ask = wanted(manifest, size)
    request = manifest.get(REQUEST)
    manifest = {k: v for k, v in manifest.items() if k not in (REQUEST, RECORD)}
    path = Path(folder) / POSTINGS
    if not ask:
        path.unlink(missing_ok=True)
        return manifest
    if not path.is_file():  # a patched version wrote its own (`patched`); a whole one reads them from its FTS5 index
        write(folder, read_postings(Path(folder) / META, size))
    with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
        starts = data["starts"]
    return {**manifest, RECORD: {"file": POSTINGS, "min_passages": int(request["min_passages"]),
                                 "terms": len(starts) - 1, "postings": int(starts[-1]) if len(starts) else 0}}


def files(manifest: dict) -> tuple[str, ...]:
    """The files the manifest's RECORD adds to those sealed by checksum."""
    return (POSTINGS,) if isinstance(manifest.get(RECORD), dict) else ()


class Tokenizer:
    """FTS5's own split and stems of query words: an in-memory FTS5 table of passages_fts' tokenizer, one row per
    word, read back through fts5vocab. Remembers the words it has seen; one at a time (a lock)."""

    def __init__(self):
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._conn.execute(f"CREATE VIRTUAL TABLE words USING fts5(word, tokenize='{TOKENIZE}')")
        self._conn.execute("CREATE VIRTUAL TABLE words_vocab USING fts5vocab(words, instance)")
        self._known: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def tokens(self, words: tuple[str, ...] | list[str]) -> list[tuple[str, ...]]:
        """Each word's FTS5 tokens, in order (one for a plain word; none or several for a quoted FTS5 phrase)."""
        out = {}
        for word in words:  # one lookup each: another thread may clear the memo between two
            known = self._known.get(word)
            if known is not None:
                out[word] = known
        new = [w for w in dict.fromkeys(words) if w not in out]
        if new:
            with self._lock:
                got = dict(zip(new, self._split(new)))
                if len(self._known) + len(got) > STEMS_KEPT:
                    self._known.clear()
                self._known.update(got)
            out.update(got)
        return [out[w] for w in words]

    def split(self, texts: list[str]) -> list[tuple[str, ...]]:
        """Each text's FTS5 tokens, in order, not remembered (texts of passages, which a build sees once)."""
        with self._lock:
            return self._split(texts)

    def close(self) -> None:
        self._conn.close()

    def _split(self, texts: list[str]) -> list[tuple[str, ...]]:
        self._conn.executemany("INSERT INTO words(rowid, word) VALUES (?, ?)", enumerate(texts))
        found: dict[int, list[tuple[int, str]]] = {}
        for doc, offset, term in self._conn.execute("SELECT doc, offset, term FROM words_vocab"):
            found.setdefault(doc, []).append((offset, term))
        self._conn.execute("DELETE FROM words")
        return [tuple(term for _, term in sorted(found.get(n, []))) for n in range(len(texts))]


_tokenizer: list[Tokenizer] = []


def tokenizer() -> Tokenizer:
    """The process's tokenizer (made on first use)."""
    if not _tokenizer:
        _tokenizer.append(Tokenizer())
    return _tokenizer[0]


@dataclass
class Postings:
    """A version's postings arrays, opened: BM25 of single-word terms as FTS5 computes it."""

    terms: list[str]  # FTS5 terms in the file's order
    ids: dict[str, int]  # FTS5 term -> row of `starts`
    starts: np.ndarray
    keys: np.ndarray
    tf: np.ndarray
    lengths: np.ndarray  # per passage: its tokens in all columns
    norm: np.ndarray  # per passage: K1 * (1 - B + B * length / average length)
    size: int
    # (scores, hit) arrays of `size`, all zero, lent to one search at a time and put back zeroed: no array of the
    # index's size is allocated and cleared per search (the service maps every block >= 128 KB anew, so a fresh one
    # cost page faults: 6.5 ms of a 204k-passage search, kb/allocator.py). As many as searches ran at once.
    _scratch: list = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def terms_of(self, words: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
        """The query's words split as FTS5 reads them: the FTS5 term of each single-token word, and the words FTS5
        reads as phrases ("a_b": tokens a, b next to each other), which only FTS5 can score (it holds positions); None
        when a word has no token at all."""
        tokens = tokenizer().tokens(words)
        if any(not t for t in tokens):
            return None
        return [t[0] for t in tokens if len(t) == 1], [w for w, t in zip(words, tokens) if len(t) > 1]

    def search(self, terms: list[str], weights: tuple[float, float, float], limit: int,
               admitted: np.ndarray | None = None, phrases: dict[int, float] | None = None) -> dict[int, float]:
        """Key -> BM25 of the best `limit` passages holding any of `terms` (`admitted`: a boolean mask of the keys a
        selection admits), best first, ties by key; each term counted as often as it is given, as FTS5 does.
        `phrases`: the BM25 of the query's phrases (FTS5's, per passage holding one), added: BM25 is a sum over the
        query's terms and phrases, each scored alone."""
        with self._lock:
            scratch = self._scratch.pop() if self._scratch else None
        scores, hit = scratch or (np.zeros(self.size, dtype=np.float64), np.zeros(self.size, dtype=bool))
        found, touched = self._score(scores, hit, terms, weights, limit, admitted, phrases)  # raising: arrays dropped
        result = {int(key): float(scores[key]) for key in found}
        scores[touched] = 0.0
        hit[touched] = False
        with self._lock:
            self._scratch.append((scores, hit))
        return result

    def _score(self, scores: np.ndarray, hit: np.ndarray, terms: list[str], weights: tuple[float, float, float],
               limit: int, admitted: np.ndarray | None, phrases: dict[int, float] | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """`search` into zeroed `scores` and `hit`: (the keys found, best first; every key it scored)."""
        if phrases:
            keys = np.fromiter(phrases, dtype=np.int64, count=len(phrases))
            scores[keys] = np.fromiter(phrases.values(), dtype=np.float64, count=len(phrases))
            hit[keys] = True
        w = np.asarray(weights, dtype=np.float64)
        for term in terms:
            row = self.ids.get(term)
            if row is None:
                continue
            start, end = int(self.starts[row]), int(self.starts[row + 1])
            keys = self.keys[start:end]
            idf = np.log((self.size - (end - start) + 0.5) / ((end - start) + 0.5))
            idf = idf if idf > 0 else MIN_IDF
            freq = self.tf[start:end] @ w
            scores[keys] += idf * (freq * (K1 + 1.0)) / (freq + self.norm[keys])
            hit[keys] = True
        touched = found = np.flatnonzero(hit)
        if admitted is not None:
            found = found[admitted[found]]
        if len(found) > limit:
            found = found[np.argpartition(-scores[found], limit - 1)[:limit]]
        return found[np.lexsort((found, -scores[found]))], touched


def open_postings(version_dir: Path, manifest: dict, size: int) -> Postings | None:
    """The version's postings when its manifest records them; IndexDamaged when unreadable or not of this version."""
    if not isinstance(manifest.get(RECORD), dict):
        return None
    try:
        with open(version_dir / POSTINGS, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("terms", "starts", "keys", "tf", "lengths")}
        terms = arrays["terms"].tobytes().decode("utf-8").split("\n") if len(arrays["terms"]) else []
    except (OSError, ValueError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise integrity.damaged(version_dir, f"{POSTINGS} is unreadable ({str(exc)[:200]})") from None
    starts, keys, tf, lengths = arrays["starts"], arrays["keys"], arrays["tf"], arrays["lengths"]
    if (len(starts) != len(terms) + 1 or len(lengths) != size or tf.shape != (len(keys), 3)
            or (len(starts) and (starts[0] != 0 or starts[-1] != len(keys) or np.any(np.diff(starts) <= 0)))
            or (len(keys) and (keys.min() < 0 or keys.max() >= size))):
        raise integrity.damaged(version_dir, f"{POSTINGS} does not fit the version ({len(terms)} terms, "
                                             f"{len(keys)} postings, {len(lengths)} passages; {size} expected)")
    average = lengths.sum() / size if size else 1.0
    norm = K1 * (1.0 - B + B * lengths / (average or 1.0))
    return Postings(terms, dict(zip(terms, range(len(terms)))), starts, keys, tf, lengths, norm, size)
