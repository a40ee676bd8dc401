"""The integrity record of a Milvus version: Milvus keeps the data itself, so there are no files to hash (kb/integrity.py
seals a FAISS + SQLite version's files); instead the writer records in the version's sealed manifest a digest of what
it wrote, and opening the version reads the collections back and compares.

DIGEST in the manifest: {"passages": sha256 over every passage's (key, passage_id, text_hash) in key order,
"articles": sha256 over every article's (id, source_hash) in id order}; the row counts are the manifest's "counts".
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable

from kb import integrity
from kb.index.milvus.collections import TOPK_MAX, read_blobs

DIGEST = "digest"  # manifest key, sealed with the rest by integrity.seal
VERIFY_PAGE = TOPK_MAX  # passages per query when reading a version back: milvus-lite scans the collection for each
# query (at 200k passages about 1.5 s a query of 10,000 rows, 2.0 s of 16,384, whatever the fields): the largest
# page Milvus allows (16,384)
MANIFEST = "its manifest in the registry"  # how messages name a Milvus version's manifest


def _line(*values) -> bytes:
    return (json.dumps(values, ensure_ascii=False) + "\n").encode()


class PassageDigest:
    """sha256 over (key, passage_id, text_hash), fed in key order (as the writer assigns keys, as `read_passages`
    reads them back)."""

    def __init__(self):
        self._hash = hashlib.sha256()
        self.rows = 0

    def add(self, key: int, passage_id: str, text_hash: str) -> None:
        self._hash.update(_line(int(key), passage_id, text_hash))
        self.rows += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def articles_digest(pairs: Iterable[tuple[str, str]]) -> tuple[int, str]:
    """(number of articles, sha256 over their (id, source_hash) in id order)."""
    digest, n = hashlib.sha256(), 0
    for article_id, source_hash in sorted(pairs):
        digest.update(_line(article_id, source_hash))
        n += 1
    return n, digest.hexdigest()


def read_passages(client, collection: str) -> PassageDigest:
    """The digest of what `collection` holds, read in pages of VERIFY_PAGE rows in key order: `key > last` with the
    options pymilvus' query iterator sends (iterator, reduce_stop_for_best), under which Milvus answers the lowest
    keys first (a plain query with a limit answers any rows). The client's own query_iterator does the same, but
    warns on every use that milvus-lite gives it no snapshot timestamp, and its calls would bypass the Connection's
    timeout; a version is never written after its commit, so it needs no snapshot."""
    digest, last = PassageDigest(), -1
    while True:
        page = client.query(collection, filter=f"key > {last}", output_fields=["key", "passage_id", "text_hash"],
                            limit=VERIFY_PAGE, iterator="True", reduce_stop_for_best="True")
        if not page:
            return digest
        page.sort(key=lambda row: row["key"])
        for row in page:
            digest.add(row["key"], row["passage_id"], row.get("text_hash") or "")
        last = int(page[-1]["key"])


def read_articles(client, data: str) -> dict[str, dict]:
    """Article id -> its stored record (JSON in the data collection's "article" blobs)."""
    return {aid: json.loads(text) for aid, text in read_blobs(client, data, 'kind == "article"').items()}


def sealed(manifest: dict, name: str) -> bool:
    """True for a version whose manifest carries the digest and matches its seal; False for one written before
    (no record: opened as before); IndexDamaged when the manifest was changed after it was sealed."""
    return integrity.is_sealed(manifest, name, record=DIGEST, named=MANIFEST)


def verify(client, name: str, collection: str, data: str, manifest: dict) -> dict[str, dict]:
    """Read version `name` back (its passages' keys, ids and text hashes; its articles' ids and source hashes) and
    compare with its sealed manifest: IndexDamaged naming the version and what differs. Returns the article records
    read (id -> stored record), which the reader keeps instead of reading them again."""
    expected, counts = manifest[DIGEST], manifest["counts"]
    found = read_passages(client, collection)
    if found.rows != int(counts["passages"]):
        raise integrity.damaged(name, f"its collection {collection} holds {found.rows} passages, its manifest says "
                                      f"{counts['passages']}")
    if found.hexdigest() != expected.get("passages"):
        raise integrity.damaged(name, f"the (key, passage_id, text_hash) of its {found.rows} passages in {collection} "
                                      f"differ from what was written (digest {found.hexdigest()[:12]}..., manifest "
                                      f"{str(expected.get('passages'))[:12]}...)")
    try:
        articles = read_articles(client, data)
        n, digest = articles_digest((aid, record.get("source_hash", "")) for aid, record in articles.items())
    except (ValueError, AttributeError) as exc:  # JSON cut or scribbled
        raise integrity.damaged(name, f"its articles in {data} are unreadable ({type(exc).__name__}: {exc})") from None
    if n != int(counts["articles"]):
        raise integrity.damaged(name, f"its collection {data} holds {n} articles, its manifest says "
                                      f"{counts['articles']}")
    if digest != expected.get("articles"):
        raise integrity.damaged(name, f"the (id, source_hash) of its {n} articles in {data} differ from what was "
                                      f"written (digest {digest[:12]}..., manifest {str(expected.get('articles'))[:12]}...)")
    return articles
