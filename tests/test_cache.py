"""Embedding cache: unchanged text is never embedded twice; the model id is part of the key."""
import numpy as np

from indexer.cache import EmbeddingCache


def fake_encode(calls):
    def encode(texts):
        calls.append(list(texts))
        return np.stack([np.full(4, len(t), dtype=np.float32) for t in texts])
    return encode


def test_second_run_encodes_only_new_text(tmp_path):
    calls = []
    cache = EmbeddingCache(tmp_path, "m1", 4)
    vectors, encoded = cache.embed(["alpha", "beta", "alpha"], fake_encode(calls))
    assert encoded == 2 and vectors.shape == (3, 4)
    assert np.array_equal(vectors[0], vectors[2]) and vectors[1][0] == 4
    cache.close()
    cache = EmbeddingCache(tmp_path, "m1", 4)
    vectors, encoded = cache.embed(["beta", "gamma"], fake_encode(calls))
    assert encoded == 1 and calls[-1] == ["gamma"]
    assert vectors[0][0] == 4 and vectors[1][0] == 5


def test_other_model_does_not_share_vectors(tmp_path):
    calls = []
    EmbeddingCache(tmp_path, "m1", 4).embed(["alpha"], fake_encode(calls))
    _, encoded = EmbeddingCache(tmp_path, "m2", 4).embed(["alpha"], fake_encode(calls))
    assert encoded == 1


def test_progress_reports_every_encoded_text(tmp_path):
    seen = []
    EmbeddingCache(tmp_path, "m", 4).embed([f"t{i}" for i in range(10)], fake_encode([]), chunk=3,
                                          progress=seen.append)
    assert sum(seen) == 10 and len(seen) == 4
