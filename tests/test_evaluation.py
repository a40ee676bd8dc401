"""BEIR evaluation helpers: metrics and file readers with clear errors."""
import pytest

from kb.errors import BadRequest
from search.evaluation import metrics, read_jsonl, read_qrels


def test_metrics_recall_mrr_ndcg():
    m = metrics(["x", "a", "b"], {"a": 1, "b": 1})
    assert m["R@1"] == 0.0 and m["R@10"] == 1.0 and m["MRR@10"] == 0.5
    assert 0.0 < m["nDCG@10"] < 1.0
    assert metrics(["a", "b"], {"a": 1, "b": 1})["nDCG@10"] == pytest.approx(1.0)


def test_readers_name_file_and_line(tmp_path):
    bad = tmp_path / "queries.jsonl"
    bad.write_text('{"id": "q1", "text": "ok"}\n{"id": "q2", "text": \n')
    with pytest.raises(BadRequest, match="queries.jsonl:2"):
        read_jsonl(bad)
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\thigh\n")
    with pytest.raises(BadRequest, match="qrels.tsv:3"):
        read_qrels(qrels)
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t0\n")
    assert read_qrels(qrels) == {"q1": {"d1": 1}}


def test_a_corpus_index_of_an_older_format_is_written_again(tmp_path, tiny_encoder, monkeypatch):
    """After an upgrade that changes the index format, `kb eval` on a BEIR set met its old index in var/eval and
    stopped with "rebuild it with `kb index --full`", which no command of its own could do."""
    import json

    from kb.index import backend_for
    from kb.index.faiss_sqlite import store
    from kb.settings import load_settings
    from search.evaluation import build_corpus_index

    dataset = tmp_path / "faq"
    dataset.mkdir()
    (dataset / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i}"})
                                                  + "\n" for i in range(3)))
    settings = load_settings({"KB_INDEX_DIR": str(tmp_path / "var" / "index")})
    folder = build_corpus_index(dataset, tiny_encoder, settings)
    old = backend_for(settings, folder).current()
    monkeypatch.setattr(store, "FORMAT_VERSION", store.FORMAT_VERSION + 1)  # this code reads a newer format
    assert build_corpus_index(dataset, tiny_encoder, settings) == folder
    with backend_for(settings, folder).open(model_id=tiny_encoder.model_id) as version:
        assert version.build_id != old and version.size == 3
    assert build_corpus_index(dataset, tiny_encoder, settings) == folder
    assert backend_for(settings, folder).current() == version.build_id  # and then reused


def test_a_corpus_gets_an_index_per_model_and_precision(tmp_path, tiny_encoder):
    """Another KB_MODEL (or precision) met the first model's index in var/eval and could not open it."""
    import json

    from kb.index import backend_for
    from kb.settings import load_settings
    from search.evaluation import build_corpus_index
    from tests.conftest import TinyEncoder

    dataset = tmp_path / "faq"
    dataset.mkdir()
    (dataset / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i}"})
                                                  + "\n" for i in range(3)))
    settings = load_settings({"KB_INDEX_DIR": str(tmp_path / "var" / "index")})

    class OtherModel(TinyEncoder):
        model_id = "test/other"

    first = build_corpus_index(dataset, tiny_encoder, settings)
    assert build_corpus_index(dataset, tiny_encoder, settings) == first  # reused
    other = build_corpus_index(dataset, OtherModel(), settings)
    assert other != first and other.parent == first.parent == tmp_path / "var" / "eval"
    with backend_for(settings, other).open(model_id="test/other") as version:
        assert version.size == 3
    bf16 = TinyEncoder()
    bf16.precision = "bf16"
    assert build_corpus_index(dataset, bf16, settings) not in (first, other)
