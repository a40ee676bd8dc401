"""The Milvus index backend: a version is a collection (kb_<name>, plus kb_<name>__data), CURRENT is an alias."""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import re
import secrets
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from kb import integrity
from kb.errors import IndexDamaged, IndexMismatch, IndexNotFound
from kb.index.backend import write_whole
from kb.index.lock import build_lock, held
from kb.index.milvus import analysis, contents, lexicon
from kb.index.milvus.collections import (ALIAS, DATA_SUFFIX, LEXICAL_SUFFIX, PREFIX, REGISTRY, TEXT_MAX, blob_rows,
                                         blob_schema, client_for, lexical_schema, literal, passage_schema, read_blobs)
from kb.index.milvus.connection import TIMEOUT
from kb.index.milvus.reader import MilvusReader
from kb.index.records import ArticleRecord, PassageRecord, title_vector_of

FORMAT_VERSION = 3  # 2: BM25 as FTS5 scores it, sparse vectors in kb_<name>__lexical (lexicon.py); 3: FTS5's
# tokens in the phrase field, and phrases ("a_b") scored as FTS5 scores them
SUFFIXES = ("", DATA_SUFFIX, LEXICAL_SUFFIX)  # a version's collections: kb_<name> + each
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,150}")  # a Milvus collection name once PREFIX is put before it
BATCH = 500  # rows per insert
LITE_FILE = "milvus.db"


def lite_uri(index_dir: Path) -> str:
    """The milvus-lite file of an index folder (KB_MILVUS_URI unset, or an evaluation's own index)."""
    return str(Path(index_dir) / LITE_FILE)


class MilvusBackend:
    """The versions on one Milvus (kb.index.IndexBackend): milvus-lite when `uri` is a file path, a Milvus server
    or cluster for http(s)://host:port. A build writes two new collections, records the version's manifest in the
    registry collection and then moves the alias: never an update to a collection in service (its BM25 weights are
    computed over the whole version: lexicon.py). Build lock and
    leases are files in `index_dir` (one builder; readers on this machine)."""

    kind = "milvus"

    def __init__(self, index_dir: Path, uri: str | None = None, timeout: float | None = None):
        self.index_dir = Path(index_dir)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self.uri = uri or lite_uri(self.index_dir)
        self.client = client_for(self.uri, TIMEOUT if timeout is None else timeout)
        if not self.client.has_collection(REGISTRY):
            schema, params = blob_schema(self.client)
            self.client.create_collection(REGISTRY, schema=schema, index_params=params)
        self.client.load_collection(REGISTRY)

    def __repr__(self) -> str:
        return f"MilvusBackend({self.uri!r})"

    # ---- versions -------------------------------------------------------------------------------
    def _registry(self) -> dict[str, dict]:
        return {name: json.loads(text) for name, text in read_blobs(self.client, REGISTRY, 'kind == "manifest"').items()}

    def current(self) -> str | None:
        if ALIAS not in self.client.list_aliases().get("aliases", []):
            return None
        collection = self.client.describe_alias(ALIAS)["collection_name"]
        name = collection[len(PREFIX):]
        if not collection.startswith(PREFIX) or name not in self._registry():
            raise IndexDamaged(f"the alias {ALIAS} on {self.uri} names {collection!r}, which is no complete index "
                               "version: rebuild with `kb index --full`")
        return name

    def list(self) -> list[str]:
        return sorted(self._registry())

    def manifest(self, name: str) -> dict:
        found = read_blobs(self.client, REGISTRY, f'kind == "manifest" and owner == {literal(name)}')
        if name not in found:
            raise OSError(f"no index version {name!r} on {self.uri}")
        return json.loads(found[name])

    def open(self, name: str | None = None, model_id: str | None = None, check: bool = True) -> MilvusReader:
        name = name or self.current()
        if name is None:
            raise IndexNotFound(f"no index on {self.uri}: run `kb index` first")
        try:
            manifest = self.manifest(name)
        except OSError as exc:
            raise IndexNotFound(str(exc)) from None
        return self._open(name, manifest, model_id, check)

    def _open(self, name: str, manifest: dict, model_id: str | None, check: bool,
              digest: bool = True) -> MilvusReader:
        """Open version `name` with its checks: its sealed manifest (contents.sealed); with `check`, the passage
        count and (`digest`), for a version that carries its digest, what the collections hold read back against
        it (contents.verify). A version written before the digest is checked by its passage count only."""
        sealed = contents.sealed(manifest, name)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatch(f"index version {name} has format version {manifest.get('format_version')}, this "
                                f"build reads {FORMAT_VERSION}: rebuild it with `kb index --full`")
        if model_id is not None and manifest.get("model") != model_id:
            raise IndexMismatch(f"index version {name} was built with model {manifest.get('model')!r}, the service "
                                f"uses {model_id!r}: rebuild it with `kb index --full`")
        collection = PREFIX + name
        for each in (collection + suffix for suffix in SUFFIXES):
            if not self.client.has_collection(each):
                raise IndexDamaged(f"index version {name} lacks its collection {each} on {self.uri}: rebuild it "
                                   "with `kb index --full`")
            self.client.load_collection(each)
        articles = None
        if check:
            stats = self.client.query(collection, filter="", output_fields=["count(*)"])
            if int(stats[0]["count(*)"]) != int(manifest["counts"]["passages"]):
                raise integrity.damaged(name, f"its collection {collection} holds {stats[0]['count(*)']} passages, "
                                              f"its manifest says {manifest['counts']['passages']}")
            rows = self.client.query(collection + LEXICAL_SUFFIX, filter="", output_fields=["count(*)"])
            if int(rows[0]["count(*)"]) != int(manifest[lexicon.KIND]["rows"]):
                raise integrity.damaged(name, f"its collection {collection + LEXICAL_SUFFIX} holds "
                                              f"{rows[0]['count(*)']} rows, its manifest says "
                                              f"{manifest[lexicon.KIND]['rows']}")
            if sealed and digest:
                articles = contents.verify(self.client, name, collection, collection + DATA_SUFFIX, manifest)
        return MilvusReader(self.client, name, collection, manifest, self._take_lease(name), sealed=sealed,
                            articles=articles)

    def switch(self, name: str) -> None:
        if name not in self._registry():
            raise IndexNotFound(f"no index version {name!r} on {self.uri}")
        if ALIAS in self.client.list_aliases().get("aliases", []):
            self.client.alter_alias(PREFIX + name, ALIAS)
        else:
            self.client.create_alias(PREFIX + name, ALIAS)

    def new_name(self) -> str:
        return "v" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "_" + secrets.token_hex(3)

    # ---- writing --------------------------------------------------------------------------------
    def writer(self, name: str, dim: int, *, base: MilvusReader | None = None,
               remove: set[str] = frozenset()) -> MilvusWriter:
        if not NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a Milvus index version name (a letter, then letters, digits, _)")
        if base is not None and not isinstance(base, MilvusReader):
            raise TypeError(f"a Milvus version is patched from another of its kind, not {type(base).__name__}")
        return MilvusWriter(self, name, int(dim), base, set(remove))

    def write(self, name: str, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord],
              vectors: np.ndarray, manifest: dict, *, base: MilvusReader | None = None,
              remove: set[str] = frozenset()) -> None:
        write_whole(self, name, articles, passages, vectors, manifest, base=base, remove=remove)

    def _register(self, name: str, manifest: dict) -> None:
        """Record a complete version (its manifest) in the registry: from now on it is listed and can be opened."""
        existing = self.client.query(REGISTRY, filter="seq >= 0", output_fields=["seq"], limit=16_384)
        first = max((int(r["seq"]) for r in existing), default=-1) + 1
        self.client.insert(REGISTRY, blob_rows("manifest", name, json.dumps(manifest, default=str), first))
        self.client.flush(REGISTRY)

    def prune(self, keep: int) -> list[str]:
        current = self.current()
        versions = [v for v in self.list() if v != current]
        doomed = versions[: max(0, len(versions) - max(keep - 1, 0))]
        removed = []
        for name in doomed:
            if self._in_use(name):
                continue
            self.client.delete(REGISTRY, filter=f'kind == "manifest" and owner == {literal(name)}')
            self.client.flush(REGISTRY)
            self._drop(name)
            removed.append(name)
        return removed

    def _drop(self, name: str) -> None:
        for each in (PREFIX + name + suffix for suffix in SUFFIXES):
            if self.client.has_collection(each):
                self.client.drop_collection(each)
        (self.index_dir / ".leases" / name).unlink(missing_ok=True)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return build_lock(self.index_dir, f"for {self.uri}")

    def remove_leftovers(self) -> list[str]:
        """Drop the collections of versions a killed build left unregistered (any of a version's collections)."""
        complete = set(self._registry())
        names = set()
        for collection in self.client.list_collections():
            if collection.startswith(PREFIX) and collection != REGISTRY:
                name = collection[len(PREFIX):]
                names.add(next((name[:-len(s)] for s in SUFFIXES if s and name.endswith(s)), name))
        for name in names - complete:
            self._drop(name)
        return sorted(names - complete)

    # ---- leases ---------------------------------------------------------------------------------
    def _take_lease(self, name: str):
        folder = self.index_dir / ".leases"
        folder.mkdir(exist_ok=True)
        handle = open(folder / name, "a+b")
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle

    def _in_use(self, name: str) -> bool:
        return held(self.index_dir / ".leases" / name)


class MilvusWriter:
    """One version being written (kb.index.IndexWriter): without a base, each batch's passages, articles and bodies
    are inserted as they come and word counts summed, so memory holds one batch (plus title and filter fields of
    each article, and a passage's article id and length); its weighted term counts go to a temporary file and are
    written as BM25 weights at commit (lexicon.py); on a base, the batches are kept and `commit` writes the whole
    next version (a Milvus version is never patched in place). Registered, and so visible, only by `commit`."""

    def __init__(self, backend: MilvusBackend, name: str, dim: int, base: MilvusReader | None, remove: set[str]):
        self.backend, self.client, self.name, self.dim = backend, backend.client, name, dim
        self.base, self.remove = base, remove
        self.collection = PREFIX + name
        self.size = self.articles = self.seq = 0  # passages (next key), articles, blob rows written so far
        self.committed = False
        self._term_df: dict[str, int] = {}
        self._owners: dict[str, ArticleRecord] = {}  # id -> the article without its body, for passage rows
        self._digest = contents.PassageDigest()  # of the passages written, in key order
        self._spill: lexicon.Spill | None = None  # the passages' weighted term counts, written as BM25 at commit
        self._owner_of: list[str] = []  # article id of each key, for the lexical rows' filter fields
        self._lexicon_record: dict = {}  # rows and terms of the lexical collection, once written
        self._pending: tuple[list, list, list] | None = ([], [], []) if base is not None else None
        if base is None:
            self._create()

    def __enter__(self) -> MilvusWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            with contextlib.suppress(Exception):  # never hide why the build failed; remove_leftovers drops the rest
                self.abort()

    def _create(self) -> None:
        try:
            schema, params = passage_schema(self.client, self.dim)
            self.client.create_collection(self.collection, schema=schema, index_params=params)
            schema, params = blob_schema(self.client)
            self.client.create_collection(self.collection + DATA_SUFFIX, schema=schema, index_params=params)
            schema, params = lexical_schema(self.client)
            self.client.create_collection(self.collection + LEXICAL_SUFFIX, schema=schema, index_params=params)
            self._spill = lexicon.Spill(self.backend.index_dir)
        except BaseException:
            self.abort()
            raise

    def add(self, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord], vectors: np.ndarray) -> None:
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(passages), self.dim)
        if self._pending is not None:
            for kept, new in zip(self._pending, (articles, passages, [vectors])):
                kept.extend(new)
            return
        self._insert(articles, passages, vectors)

    def _insert(self, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord],
                vectors: np.ndarray) -> None:
        self._owners.update((a.id, replace(a, body=None, extra={}, title_vector=None)) for a in articles)
        columns = [(self._owners[p.article_id].title, " ".join(p.heading_path), p.text) for p in passages]
        rows = [passage_row(self.size + i, p, self._owners[p.article_id], vector, phrases)
                for i, (p, vector, phrases) in enumerate(zip(passages, vectors, analysis.phrase_fields(columns)))]
        for row in rows:
            self._digest.add(row["key"], row["passage_id"], row["text_hash"])
        for start in range(0, len(rows), BATCH):
            self.client.insert(self.collection, rows[start:start + BATCH])
        self._spill.add(columns)
        self._owner_of.extend(p.article_id for p in passages)
        texts = [f"{self._owners[p.article_id].title} {' '.join(p.heading_path)} {p.text}" for p in passages]
        for term, n in analysis.count_terms(texts).items():
            self._term_df[term] = self._term_df.get(term, 0) + n
        blobs: list[dict] = []
        for a in articles:
            record = {k: v for k, v in asdict(a).items() if k not in ("body", "title_vector")}
            if (vector := title_vector_of(a, self.dim)) is not None:  # float32 bytes, as base64 in the JSON record
                record["title_vector"] = base64.b64encode(vector).decode("ascii")
            blobs += blob_rows("article", a.id, json.dumps(record, ensure_ascii=False, default=str),
                               self.seq + len(blobs))
            blobs += blob_rows("body", a.id, a.body or "", self.seq + len(blobs))
        self._insert_blobs(blobs)
        self.size += len(passages)
        self.articles += len(articles)

    def _insert_blobs(self, blobs: list[dict]) -> None:
        for start in range(0, len(blobs), BATCH):
            self.client.insert(self.collection + DATA_SUFFIX, blobs[start:start + BATCH])
        self.seq += len(blobs)

    def commit(self, manifest: dict) -> None:
        if int(manifest["dim"]) != self.dim:
            raise ValueError(f"the manifest's dim {manifest['dim']} is not the writer's {self.dim}")
        if self._pending is not None:
            articles, passages, vectors = patched(self.base, self.remove, *self._pending[:2],
                                                  np.vstack(self._pending[2]) if self._pending[2]
                                                  else np.zeros((0, self.dim), np.float32))
            self._pending = None
            self._create()
            self._insert(articles, passages, vectors)
        self._insert_blobs(blob_rows("terms", "", json.dumps(self._term_df, ensure_ascii=False), self.seq))
        self._write_lexicon()
        for suffix in SUFFIXES:
            self.client.flush(self.collection + suffix)
        _, articles_digest = contents.articles_digest((a.id, a.source_hash) for a in self._owners.values())
        full = integrity.seal({
            **manifest, "backend": self.backend.kind, "format_version": FORMAT_VERSION, "build_id": self.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counts": {"articles": self.articles, "passages": self.size}, lexicon.KIND: self._lexicon_record,
            contents.DIGEST: {"passages": self._digest.hexdigest(), "articles": articles_digest}})
        # never switch to a version that does not open; its digest was just computed from what was written and is
        # read back by every open that puts it into service (as FAISS' store.verify_version skips the sha256)
        self.backend._open(self.name, full, manifest.get("model"), check=True, digest=False).close()
        self.backend._register(self.name, full)
        self.backend.switch(self.name)
        self.committed = True

    def _write_lexicon(self) -> None:
        """The passages' BM25 term weights into kb_<name>__lexical (every passage is in: the average length is known),
        and the lexicon a query needs into the data collection."""
        rows, written = [], 0
        for key, vector in self._spill.vectors():
            written += 1
            rows.append({"key": key, **filter_fields(self._owners[self._owner_of[key]]), "terms": vector})
            if len(rows) == BATCH:
                self.client.insert(self.collection + LEXICAL_SUFFIX, rows)
                rows = []
        if rows:
            self.client.insert(self.collection + LEXICAL_SUFFIX, rows)
        self._insert_blobs(blob_rows(lexicon.KIND, "", self._spill.lexicon(), self.seq))
        self._lexicon_record = {"rows": written, "terms": len(self._spill.ids)}  # sealed in the manifest
        self._spill.close()

    def abort(self) -> None:
        """Drop what was written; a version already registered (commit failed while switching) is left listed."""
        self._pending = None
        if self._spill is not None:
            self._spill.close()
        if self.name not in self.backend._registry():
            self.backend._drop(self.name)


def passage_row(key: int, p: PassageRecord, article: ArticleRecord, vector: np.ndarray, phrases: str) -> dict:
    """A passage as a row of its version's collection (`phrases`: its phrase field, analysis.phrase_fields)."""
    record = json.dumps({"heading_path": list(p.heading_path), "anchor": p.anchor, "text": p.text,
                         "text_hash": p.text_hash}, ensure_ascii=False)
    row = {"key": key, "passage_id": p.passage_id, "text_hash": p.text_hash, **filter_fields(article),
           "record": record, "phrases": phrases, "vec": vector.tolist()}
    for field in ("record", "phrases"):
        if len(row[field].encode("utf-8")) > TEXT_MAX:
            raise ValueError(f"passage {p.passage_id} is too long for a Milvus text field ({field}: "
                             f"{len(row[field].encode('utf-8'))} bytes, at most {TEXT_MAX})")
    return row


def filter_fields(article: ArticleRecord) -> dict[str, str]:
    """The fields `collections.selection_filter` reads, of a passage of `article`."""
    return {"article_id": article.id, "product": article.product.lower(), "language": article.language.lower(),
            "audience": article.audience.lower()}


def patched(base: MilvusReader, remove: set[str], articles: Sequence[ArticleRecord],
            passages: Sequence[PassageRecord], vectors: np.ndarray):
    """`base` minus the articles `remove`, plus the new records: the whole content of the next version."""
    kept_articles = [a for a in base.articles(body=True) if a.id not in remove]
    owners = base.passage_articles()
    kept = [k for k, aid in enumerate(owners) if aid not in remove]
    found = base.passages(kept)
    all_vectors = np.vstack([base.vectors(kept), np.asarray(vectors, dtype=np.float32).reshape(-1, base.dim)])
    return kept_articles + list(articles), [found[k] for k in kept] + list(passages), all_vectors
