"""Milvus collections of the index: one client per URI, the schemas of a version's two collections and the registry,
filter expressions of typed selections, paging by ranges of an integer key."""
from __future__ import annotations

import threading
from typing import Iterator

from kb.index.milvus.connection import TIMEOUT, Connection
from kb.index.records import Selection

PREFIX = "kb_"  # every collection and alias of the index starts with it
REGISTRY = PREFIX + "versions"  # name -> manifest of every complete version
ALIAS = PREFIX + "current"  # the version in service
DATA_SUFFIX = "__data"  # a version's articles, bodies and term counts, as JSON in parts
PART = 16_000  # characters per stored part (at most 64,000 bytes of UTF-8: under VARCHAR's 65,535)
TEXT_MAX = 65_535
PAGE = 2_000  # rows per query when reading a whole collection
TOPK_MAX = 16_384  # Milvus' largest limit per search or query
BLOB_DIM = 2  # Milvus wants a vector field in every collection; the data collections' one is unused
LEXICAL_SUFFIX = "__lexical"  # a version's BM25 term weights as sparse vectors (lexicon.py)

_clients: dict[tuple[str, float], object] = {}
_clients_guard = threading.Lock()


def client_for(uri: str, timeout: float = TIMEOUT):
    """One connection per URI, timeout and process (milvus-lite lets one process open a .db file, any number of
    threads; pymilvus shares its one server among clients of the same file): calls bounded by `timeout` seconds
    (KB_MILVUS_TIMEOUT), Milvus out of reach raised as IndexUnavailable (kb/index/milvus/connection.py)."""
    with _clients_guard:
        client = _clients.get((uri, timeout))
        if client is None:
            client = _clients[uri, timeout] = Connection(uri, timeout)
        return client


def literal(value: str) -> str:
    """A string as a Milvus expression literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selection_filter(selection: Selection | None) -> str | None:
    """The filter expression of a selection ('' for all passages); None when it admits no passage at all."""
    if selection is None or selection.empty:
        return ""
    parts = []
    for name in ("product", "language", "audience"):
        value = getattr(selection, name)
        if value:
            parts.append(f"{name} == {literal(value.lower())}")
    if selection.exclude_audience:
        parts.append(f"audience != {literal(selection.exclude_audience.lower())}")
    if selection.article_ids is not None:
        if not selection.article_ids:
            return None
        parts.append(f"article_id in [{', '.join(literal(a) for a in sorted(selection.article_ids))}]")
    return " and ".join(parts)


def passage_schema(client, dim: int):
    """Passages: key (0 .. size - 1), passage id and text hash, filter fields (lower-case), the record as JSON, the
    phrase field (tokens, columns apart) and the dense vector."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("key", DataType.INT64, is_primary=True)
    schema.add_field("passage_id", DataType.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("text_hash", DataType.VARCHAR, max_length=1024)  # read back by contents.verify (versions since
    # their digest: older collections lack it and are never asked for it)
    add_filter_fields(schema)
    schema.add_field("record", DataType.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("phrases", DataType.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    params = client.prepare_index_params()
    params.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
    return schema, params


def lexical_schema(client):
    """BM25 term weights (lexicon.py): key, filter fields and one sparse vector per passage that holds a term."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("key", DataType.INT64, is_primary=True)
    add_filter_fields(schema)
    schema.add_field("terms", DataType.SPARSE_FLOAT_VECTOR)
    params = client.prepare_index_params()
    params.add_index(field_name="terms", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    return schema, params


def add_filter_fields(schema) -> None:
    """The fields `selection_filter` reads: article id, product, language and audience (lower-case)."""
    from pymilvus import DataType

    schema.add_field("article_id", DataType.VARCHAR, max_length=TEXT_MAX)
    for name in ("product", "language", "audience"):
        schema.add_field(name, DataType.VARCHAR, max_length=1024)


def blob_schema(client):
    """Parts of JSON documents: seq (insertion order), kind, owner (an article id, a version name), part, data."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("seq", DataType.INT64, is_primary=True)
    schema.add_field("kind", DataType.VARCHAR, max_length=64)
    schema.add_field("owner", DataType.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("part", DataType.INT64)
    schema.add_field("data", DataType.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=BLOB_DIM)
    params = client.prepare_index_params()
    params.add_index(field_name="v", index_type="FLAT", metric_type="L2")
    return schema, params


def blob_rows(kind: str, owner: str, text: str, first_seq: int) -> list[dict]:
    """`text` cut into parts of at most PART characters, as rows of a blob collection."""
    pieces = [text[i:i + PART] for i in range(0, len(text), PART)] or [""]
    return [{"seq": first_seq + n, "kind": kind, "owner": owner, "part": n, "data": piece, "v": [0.0] * BLOB_DIM}
            for n, piece in enumerate(pieces)]


def read_blobs(client, collection: str, expr: str) -> dict[str, str]:
    """owner -> text of the blobs `expr` selects, parts joined in order."""
    parts: dict[str, list[tuple[int, str]]] = {}
    for row in rows_in_order(client, collection, "seq", expr, ["owner", "part", "data"]):
        parts.setdefault(row["owner"], []).append((row["part"], row["data"]))
    return {owner: "".join(data for _, data in sorted(found)) for owner, found in parts.items()}


def rows_in_order(client, collection: str, key: str, expr: str, fields: list[str]) -> Iterator[dict]:
    """Every row `expr` selects, read in pages by ranges of the integer primary key `key`, in key order."""
    start = 0
    while True:
        where = f"{key} >= {start} and {key} < {start + PAGE}" + (f" and ({expr})" if expr else "")
        found = client.query(collection, filter=where, output_fields=[key, *fields], limit=PAGE)
        if found:
            yield from sorted(found, key=lambda r: r[key])
        elif not client.query(collection, filter=f"{key} >= {start}" + (f" and ({expr})" if expr else ""),
                              output_fields=[key], limit=1):
            return
        start += PAGE
