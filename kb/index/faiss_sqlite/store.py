"""FAISS + SQLite index versions on disk: write one atomically (temp folder, sealed manifest last, CURRENT switch),
open and check one, lease it while in use, prune old ones."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from kb import integrity
from kb.errors import IndexDamaged, IndexMismatch, IndexNotFound
from kb.index.faiss_sqlite import ann, postings
from kb.index.faiss_sqlite.fts import count_terms
from kb.index.faiss_sqlite.version import META, IndexVersion, spans_blob
from kb.index.lock import held
from kb.index.records import ArticleRecord, PassageRecord, title_vector_of
from kb.sentences import markable

FORMAT_VERSION = 2  # 2: term_df table
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
TMP_PREFIX = ".tmp-"
CHECKED_FILES = (VECTORS, META)  # sealed by size and sha256 in the manifest (and ann.ANN, postings.POSTINGS when built)
VERSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}")
FAISS_INDEX = "IndexFlatIP"  # exact inner product over unit vectors: cosine

SCHEMA = """
CREATE TABLE articles (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, title TEXT NOT NULL, summary TEXT NOT NULL,
    product TEXT NOT NULL, tags TEXT NOT NULL, language TEXT NOT NULL, audience TEXT NOT NULL,
    status TEXT NOT NULL, owner TEXT NOT NULL, reviewed TEXT NOT NULL, body TEXT NOT NULL,
    includes TEXT NOT NULL, extra TEXT NOT NULL, source_hash TEXT NOT NULL
);
CREATE TABLE passages (
    row INTEGER PRIMARY KEY,            -- the FAISS row of this passage's vector
    passage_id TEXT NOT NULL UNIQUE, article_id TEXT NOT NULL REFERENCES articles(id),
    heading_path TEXT NOT NULL, anchor TEXT NOT NULL, text TEXT NOT NULL, text_hash TEXT NOT NULL,
    sentences BLOB                      -- spans of the sentences that may be marked (version.spans_blob)
);
CREATE INDEX passages_article ON passages(article_id);
CREATE TABLE term_df (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;  -- passages per word
CREATE TABLE article_vectors (id TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID;  -- title embeddings
CREATE VIRTUAL TABLE passages_fts USING fts5(
    title, headings, body, content='', tokenize='porter unicode61 remove_diacritics 2'
);
"""

ARTICLE_COLUMNS = ("id", "path", "title", "summary", "product", "tags", "language", "audience",
                   "status", "owner", "reviewed", "body", "includes", "extra", "source_hash")
PASSAGE_COLUMNS = ("row", "passage_id", "article_id", "heading_path", "anchor", "text", "text_hash", "sentences")


def article_row(a: ArticleRecord) -> tuple:
    """An article record as a row of `articles` (ARTICLE_COLUMNS order)."""
    return (a.id, a.path, a.title, a.summary, a.product, json.dumps(list(a.tags), ensure_ascii=False), a.language,
            a.audience, a.status, a.owner, a.reviewed, a.body or "", json.dumps(list(a.includes)),
            json.dumps(a.extra, ensure_ascii=False, default=str), a.source_hash)


def passage_row(key: int, p: PassageRecord) -> tuple:
    """A passage record as a row of `passages` (PASSAGE_COLUMNS order); `key` is its FAISS row. Its markable
    sentences are found here when the record does not carry them (they depend on the text only)."""
    return (key, p.passage_id, p.article_id, json.dumps(list(p.heading_path), ensure_ascii=False), p.anchor, p.text,
            p.text_hash, spans_blob(markable(p.text) if p.sentences is None else p.sentences))


INSERT_TITLE_VECTOR = "INSERT INTO article_vectors VALUES (?, ?)"


def title_vector_rows(articles: Sequence[ArticleRecord], dim: int) -> list[tuple[str, bytes]]:
    """(id, float32 bytes) of the articles that carry a title embedding (rows of `article_vectors`)."""
    return [(a.id, vector) for a in articles if (vector := title_vector_of(a, dim)) is not None]


def fts_row(key: int, title: str, p: PassageRecord) -> tuple:
    """(rowid, title, headings, body) of the passage's FTS5 row."""
    return key, title, " ".join(p.heading_path), p.text


def new_build_id() -> str:
    """Sortable, unique id: UTC time plus random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def current_id(index_dir: Path) -> str | None:
    """The version CURRENT names; None when there is no CURRENT yet; IndexDamaged when it names no version."""
    try:
        raw = (index_dir / CURRENT).read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        value = None
    if not value or not VERSION_ID.fullmatch(value):
        # Written whole by os.replace, never empty: unreadable bytes are damage, not "no index yet".
        raise IndexDamaged(f"{index_dir / CURRENT} is damaged ({len(raw)} bytes that name no version: {raw[:40]!r}); "
                           + integrity.repair_hint())
    return value


def list_versions(index_dir: Path) -> list[str]:
    """Complete versions on disk (a manifest present), oldest first."""
    if not index_dir.is_dir():
        return []
    return sorted(p.name for p in index_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scratch_connection(path: Path) -> sqlite3.Connection:
    """A connection to a file in a temp folder: no journal, no syncs (a killed build's folder is discarded,
    and the finished file is fsynced once before it is published)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    return conn


def flat_header(empty: bytes, n: int, dim: int) -> bytes:
    """The header of an IndexFlat file holding `n` vectors of `dim`, made from faiss' own file of an empty one
    (`empty`): the vector count (int64 at byte 8) and the stored float count (int64, its last 8 bytes) filled in."""
    if len(empty) < 24 or empty[8:16] != bytes(8) or empty[-8:] != bytes(8):
        raise RuntimeError(f"unexpected layout of an empty faiss IndexFlat file ({len(empty)} bytes): this faiss "
                           "version writes flat indexes differently")
    return empty[:8] + np.int64(n).tobytes() + empty[16:-8] + np.int64(n * dim).tobytes()


class VersionWriter:
    """A version written batch by batch into its temp folder, so memory holds one batch: vectors appended to
    vectors.faiss (faiss' own empty IndexFlatIP file, whose counts `commit` fills in), rows and FTS5 rows inserted
    and committed per batch, word counts summed. `commit` publishes it; `abort` (or leaving the `with` block
    without committing) deletes the temp folder, as `remove_leftovers` does after a killed build."""

    def __init__(self, index_dir: Path, build_id: str, dim: int):
        self.index_dir, self.build_id, self.dim = Path(index_dir), build_id, int(dim)
        self.tmp = self.index_dir / f"{TMP_PREFIX}{build_id}"
        self.size = 0  # passages (vectors) written so far: the next key
        self.articles = 0
        self.committed = False
        self._term_df: dict[str, int] = {}
        self._vectors = self._conn = None
        self.tmp.mkdir(parents=True)
        try:
            faiss.write_index(faiss.IndexFlatIP(self.dim), str(self.tmp / VECTORS))
            self._vectors = open(self.tmp / VECTORS, "r+b")
            self._empty = self._vectors.read()
            flat_header(self._empty, 0, self.dim)  # a layout it cannot fill in fails here, before any work
            self._conn = scratch_connection(self.tmp / META)
            self._conn.executescript(SCHEMA)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> VersionWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            self.abort()

    def add(self, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord], vectors: np.ndarray) -> None:
        """Append a batch: passage i of it gets key `size + i` and owns vectors[i]."""
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(passages), self.dim)
        titles = {a.id: a.title for a in articles}
        earlier = sorted({p.article_id for p in passages} - titles.keys())
        for start in range(0, len(earlier), 500):  # articles of an earlier batch
            ids = earlier[start:start + 500]
            titles.update(self._conn.execute(f"SELECT id, title FROM articles WHERE id IN ({','.join('?' * len(ids))})",
                                             ids))
        fts_rows = [fts_row(self.size + i, titles[p.article_id], p) for i, p in enumerate(passages)]
        self._conn.executemany(f"INSERT INTO articles VALUES ({','.join('?' * len(ARTICLE_COLUMNS))})",
                               [article_row(a) for a in articles])
        self._conn.executemany(f"INSERT INTO passages VALUES ({','.join('?' * len(PASSAGE_COLUMNS))})",
                               [passage_row(self.size + i, p) for i, p in enumerate(passages)])
        self._conn.executemany("INSERT INTO passages_fts(rowid, title, headings, body) VALUES (?, ?, ?, ?)", fts_rows)
        self._conn.executemany(INSERT_TITLE_VECTOR, title_vector_rows(articles, self.dim))
        self._conn.commit()
        for term, n in count_terms(fts_rows).items():
            self._term_df[term] = self._term_df.get(term, 0) + n
        self._vectors.write(matrix.tobytes())
        self.size += len(passages)
        self.articles += len(articles)

    def commit(self, manifest: dict) -> Path:
        """Word counts and the flat index's counts written, files fsynced, then `publish`: the version's folder."""
        if int(manifest["dim"]) != self.dim:
            raise ValueError(f"the manifest's dim {manifest['dim']} is not the writer's {self.dim}")
        self._conn.executemany("INSERT INTO term_df VALUES (?, ?)", self._term_df.items())
        self._conn.commit()
        self._conn.close()
        self._conn = None
        self._vectors.seek(0)
        self._vectors.write(flat_header(self._empty, self.size, self.dim))
        self._vectors.close()
        self._vectors = None
        for name in (VECTORS, META):
            fsync_path(self.tmp / name)
        final = publish(self.index_dir, self.tmp, self.build_id, manifest,
                        {"articles": self.articles, "passages": self.size})
        self.committed = True
        return final

    def abort(self) -> None:
        for handle in (self._conn, self._vectors):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        self._conn = self._vectors = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_version(index_dir: Path, build_id: str, articles: Sequence[ArticleRecord],
                  passages: Sequence[PassageRecord], vectors: np.ndarray, manifest: dict) -> Path:
    """Write a complete version in one batch (a `VersionWriter`): temp folder, renamed into place, CURRENT switched.

    Passage i gets key (FAISS row) i and owns vectors[i]. Killed at any point, the previous version stays in
    service: CURRENT only ever names a folder whose manifest was written last.
    """
    if len(passages) != len(vectors):
        raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
    with VersionWriter(index_dir, build_id, int(manifest["dim"])) as writer:
        writer.add(articles, passages, vectors)
        return writer.commit(manifest)


def publish(index_dir: Path, tmp: Path, build_id: str, manifest: dict, counts: dict) -> Path:
    """Manifest last, fsync, check the version opens, rename the folder into place, switch CURRENT."""
    manifest = ann.attach(index_dir, tmp, build_id, manifest)  # an ANN index too when asked for and large enough
    manifest = postings.attach(tmp, int(counts["passages"]), manifest)  # BM25 postings arrays, the same way
    full_manifest = integrity.seal({
        **manifest, "faiss_index": FAISS_INDEX, "format_version": FORMAT_VERSION, "build_id": build_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "counts": counts,
        integrity.FILES: integrity.file_checksums(tmp, CHECKED_FILES + ann.files(manifest) + postings.files(manifest))})
    (tmp / MANIFEST).write_text(json.dumps(full_manifest, indent=2, sort_keys=True), encoding="utf-8")
    fsync_path(tmp / MANIFEST)
    fsync_path(tmp)
    verify_version(tmp, manifest["model"], build_id)
    final = index_dir / build_id
    os.rename(tmp, final)
    switch_current(index_dir, build_id)
    return final


def switch_current(index_dir: Path, build_id: str) -> None:
    """Point CURRENT at `build_id` atomically (write a temp file, fsync, os.replace)."""
    tmp = index_dir / f"{TMP_PREFIX}{CURRENT}-{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(build_id + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, index_dir / CURRENT)
    fsync_path(index_dir)


def remove_leftovers(index_dir: Path) -> list[str]:
    """Delete temp folders and files left by builds that were killed; returns their names."""
    removed = []
    if index_dir.is_dir():
        for path in index_dir.iterdir():
            if path.name.startswith(TMP_PREFIX):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path.name)
    return removed


def take_lease(version_dir: Path):
    """A shared lock on the version's manifest, held as long as the returned file is open: prune skips the
    version meanwhile (a service, or a request still finishing on a replaced version, is using it)."""
    handle = open(version_dir / MANIFEST, "rb")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def in_use(version_dir: Path) -> bool:
    """Whether any process (this one included) holds a lease on the version."""
    return held(version_dir / MANIFEST)


def prune_versions(index_dir: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond `keep`, never the one CURRENT names nor one that is in use."""
    current = current_id(index_dir)
    versions = [v for v in list_versions(index_dir) if v != current]
    doomed = versions[: max(0, len(versions) - max(keep - 1, 0))]
    removed = []
    for name in doomed:
        if in_use(index_dir / name):
            continue
        shutil.rmtree(index_dir / name)
        removed.append(name)
    return removed


def read_manifest(version_dir: Path) -> dict:
    return json.loads((version_dir / MANIFEST).read_text(encoding="utf-8"))


def check_manifest(manifest: dict, model_id: str | None, where: Path) -> None:
    """Refuse a version of another format or built with another model (`model_id` None: any model)."""
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatch(f"index {where} has format version {manifest.get('format_version')}, this build "
                            f"reads {FORMAT_VERSION}: rebuild it with `kb index --full`")
    if model_id is not None and manifest.get("model") != model_id:
        raise IndexMismatch(f"index {where} was built with model {manifest.get('model')!r}, the service uses "
                            f"{model_id!r}: rebuild it with `kb index --full`")


def load_manifest(version_dir: Path, model_id: str | None, folder_id: str) -> tuple[dict, bool]:
    """The manifest, checked against its own checksum, the folder, the format and the model; (manifest, sealed)."""
    try:
        manifest = read_manifest(version_dir)
    except FileNotFoundError:
        raise integrity.damaged(version_dir, "the folder or its manifest.json is missing") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise integrity.damaged(version_dir, f"manifest.json is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict):
        raise integrity.damaged(version_dir, "manifest.json is not an object")
    sealed = integrity.is_sealed(manifest, version_dir)
    if sealed and manifest.get("build_id") != folder_id:
        raise integrity.damaged(version_dir, f"its manifest belongs to version {manifest.get('build_id')!r}")
    check_manifest(manifest, model_id, version_dir)
    return manifest, sealed


def open_version(version_dir: Path, model_id: str | None, *, check_files: bool = True,
                 folder_id: str | None = None, mapped: bool = False) -> IndexVersion:
    """Open and check one version folder: sealed manifest, files against their checksums (`check_files`), FAISS
    and SQLite readable and agreeing with the counts, vectors of unit length. IndexMismatch for another model or
    format; IndexDamaged for anything else that fails. A version written before checksums is opened after
    SQLite's quick_check instead, and says so (`sealed` False).

    The vectors are read into the process's own memory, so that a file damaged under a running service is found by
    its checks, not met as a SIGBUS; `mapped` leaves them in the file's pages instead (no copy: a build checking the
    version it just wrote, which nothing else can touch)."""
    manifest, sealed = load_manifest(version_dir, model_id, folder_id or version_dir.name)
    if sealed and check_files:
        integrity.verify_files(version_dir, manifest[integrity.FILES])
    flags = faiss.IO_FLAG_MMAP_IFC if mapped else faiss.IO_FLAG_MMAP
    try:
        vectors = faiss.read_index(str(version_dir / VECTORS), flags | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[-1][:200]
        raise integrity.damaged(version_dir, f"vectors.faiss is unreadable ({reason})") from None
    try:
        expected = int(manifest["counts"]["passages"]), int(manifest["dim"])
    except (KeyError, TypeError, ValueError):
        raise integrity.damaged(version_dir, "manifest.json lacks the passage count or the dimension") from None
    if (vectors.ntotal, vectors.d) != expected:
        raise integrity.damaged(version_dir, f"{vectors.ntotal} vectors of dim {vectors.d} in vectors.faiss, the "
                                             f"manifest says {expected[0]} of dim {expected[1]}")
    integrity.check_unit_length(vectors, version_dir)
    approximate = ann.open_ann(version_dir, manifest, *expected)
    lexical = postings.open_postings(version_dir, manifest, expected[0])
    version = IndexVersion(path=version_dir, manifest=manifest, index=vectors, sealed=sealed, ann=approximate,
                           postings=lexical,
                           _lease=take_lease(version_dir))
    try:
        if not sealed:
            integrity.quick_check(version.db(), version_dir)
        (rows,) = version.db().execute("SELECT count(*) FROM passages").fetchone()
        if rows != expected[0]:
            raise integrity.damaged(version_dir, f"{rows} passages in meta.sqlite, the manifest says {expected[0]}")
    except sqlite3.DatabaseError as exc:
        version.close()
        raise integrity.damaged(version_dir, f"meta.sqlite is unreadable ({exc})") from None
    except IndexDamaged:
        version.close()
        raise
    return version


def verify_version(version_dir: Path, model_id: str, build_id: str) -> None:
    """Open a freshly written version as the service will, so that one failing its checks is never switched to
    (its checksums were just computed from the same bytes: they are not read again)."""
    open_version(version_dir, model_id, check_files=False, folder_id=build_id, mapped=True).close()


def open_current(index_dir: Path, model_id: str) -> IndexVersion:
    """Open the version named by CURRENT; clear errors when there is none, it does not fit or it is damaged."""
    build_id = current_id(index_dir)
    if build_id is None:
        raise IndexNotFound(f"no index in {index_dir}: run `kb index --index-dir {index_dir}` first")
    return open_version(index_dir / build_id, model_id)
