"""RecentVectors: an encoder that remembers the query vectors it computed lately, so nothing is embedded twice."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np


class RecentVectors:
    """Wraps a TextEncoder: `encode_queries` answers texts it encoded lately from memory (the last `size`, least
    recently used dropped first) and encodes only the others, in one call; everything else is the encoder's.

    The service hands it to the searcher and to the analytics event log: a query's topic vector is the embedding of
    its redacted text, and where redaction changed nothing that is the vector the search itself just computed, so
    the event log's writer gets it for free instead of running the model again beside the requests.
    """

    def __init__(self, encoder: Any, size: int = 4096):
        self.encoder, self.size = encoder, size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __getattr__(self, name: str) -> Any:  # model_id, dim, multilingual, encode_passages, load, ...
        return getattr(self.encoder, name)

    def encode_queries_beside(self, texts: Sequence[str]) -> np.ndarray:
        """`encode_queries` for work beside the requests: what is missing goes to the encoder's own
        `encode_queries_beside` when it has one (kb/embedder.py: a session that never takes the requests' threads)."""
        return self.encode_queries(texts, beside=True)

    def encode_queries(self, texts: Sequence[str], beside: bool = False) -> np.ndarray:
        texts = list(texts)
        with self._lock:
            known = {t: self._vectors[t] for t in set(texts) if t in self._vectors}
            for text in known:
                self._vectors.move_to_end(text)
            self.hits += sum(t in known for t in texts)
            self.misses += sum(t not in known for t in texts)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            encode = getattr(self.encoder, "encode_queries_beside", None) if beside else None
            fresh = (encode or self.encoder.encode_queries)(missing)
            known.update(zip(missing, fresh))
            with self._lock:
                for text, vector in zip(missing, fresh):
                    self._vectors[text] = np.array(vector)  # a copy: no row keeps its whole batch alive
                    self._vectors.move_to_end(text)
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        if not texts:
            return self.encoder.encode_queries([])
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)
