"""Embedding cache: vectors keyed by model id + text hash, so unchanged passage text is never embedded twice."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

CACHE_FILE = "embed-cache.sqlite"


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A SQLite table of float32 vectors beside the index versions (not inside one)."""

    def __init__(self, index_dir: Path, model_id: str, dim: int):
        index_dir.mkdir(parents=True, exist_ok=True)
        self.model_id, self.dim = model_id, dim
        self._conn = sqlite3.connect(index_dir / CACHE_FILE)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash TEXT, vector BLOB, "
                           "PRIMARY KEY (model, hash)) WITHOUT ROWID")

    def close(self) -> None:
        self._conn.close()

    def get_many(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            rows = self._conn.execute(
                f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN ({','.join('?' * len(chunk))})",
                [self.model_id, *chunk])
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape == (self.dim,):
                    found[key] = vector
        return found

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                               [(self.model_id, key, np.asarray(v, dtype=np.float32).tobytes()) for key, v in items])
        self._conn.commit()

    def embed(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray],
              chunk: int = 512, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
        """Vectors for `texts` (row i for texts[i]), encoding only the ones not cached; returns (vectors, encoded)."""
        hashes = [hash_text(t) for t in texts]
        known = self.get_many(hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in known))
        text_of = dict(zip(hashes, texts))
        missing.sort(key=lambda key: len(text_of[key]))  # batches of similar length pad less
        for start in range(0, len(missing), chunk):
            keys = missing[start:start + chunk]
            vectors = encode([text_of[k] for k in keys])
            self.put_many(list(zip(keys, vectors)))
            known.update(zip(keys, vectors))
            if progress:
                progress(len(keys))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, key in enumerate(hashes):
            out[i] = known[key]
        return out, len(missing)
