"""Near-duplicate pairs: mean passage vectors per article, compared blockwise; each pair once, most similar first."""
import numpy as np
import pytest

from indexer import similarity
from indexer.similarity import article_vectors, near_duplicates, similar_pairs


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("block_rows", [1, 2, 2048])
def test_pairs_above_threshold_each_once_most_similar_first(monkeypatch, block_rows):
    monkeypatch.setattr(similarity, "BLOCK_ROWS", block_rows)
    ids = ["a", "b", "c", "d"]
    matrix = np.stack([unit(1, 0, 0), unit(1, 0.1, 0), unit(0, 1, 0), unit(1, 0.2, 0)])
    pairs = similar_pairs(ids, matrix, 0.97)
    assert [(a, b) for a, b, _ in pairs] == [("b", "d"), ("a", "b"), ("a", "d")]
    assert pairs[0][2] == pytest.approx(float(matrix[1] @ matrix[3]))
    assert similar_pairs(ids, matrix, 0.9999) == []


def test_article_vectors_are_normalised_means_of_their_passages(tmp_path, tiny_encoder):
    from indexer.build import build_index
    from kb.settings import load_settings
    from kb.index import open_backend

    content = tmp_path / "content"
    content.mkdir()
    for name, text in [("a", "alpha beta gamma"), ("b", "alpha beta gamma"), ("c", "delta epsilon")]:
        (content / f"{name}.md").write_text(f"---\ntitle: Same\n---\n{text}\n", encoding="utf-8")
    settings = load_settings({}, content_dir=content, index_dir=tmp_path / "index")
    build_index(settings, tiny_encoder, progress=False)
    version = open_backend(settings.index_dir).open(model_id=tiny_encoder.model_id)
    ids, matrix = article_vectors(version)
    assert ids == ["a", "b", "c"] and np.allclose(np.linalg.norm(matrix, axis=1), 1.0)
    assert article_vectors(version, ["c", "zzz"])[0] == ["c"]
    assert [(a, b) for a, b, _ in near_duplicates(version, 0.99)] == [("a", "b")]
    assert near_duplicates(version, 0.99, ["a", "c"]) == []
