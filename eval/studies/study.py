"""Study helpers: a Searcher over an index built by `kb index`, and a ticket set's answerable queries."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kb.embedder import Embedder  # noqa: E402
from kb.index import open_backend  # noqa: E402
from kb.settings import load_settings  # noqa: E402
from search.evaluation import read_jsonl, read_qrels  # noqa: E402
from search.searcher import Searcher  # noqa: E402


def open_searcher(index_dir: str | Path, model: str = "all-MiniLM-L6-v2") -> Searcher:
    """The service's Searcher (KB_* settings, ONNX query encoder) over the current version in `index_dir`."""
    settings = load_settings()
    encoder = Embedder(model, query_engine=settings.query_engine, cache_dir=settings.model_cache_dir)
    return Searcher(open_backend(Path(index_dir)).open(model_id=encoder.model_id), encoder, settings)


def read_ticket_set(folder: str | Path) -> tuple[dict, list[dict]]:
    """(qrels, every query of the set in file order); a query is answerable when it is in qrels."""
    folder = Path(folder)
    return read_qrels(folder / "qrels.tsv"), read_jsonl(folder / "queries.jsonl")
