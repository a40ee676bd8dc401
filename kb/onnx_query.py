"""ONNX query encoder: the same MiniLM weights exported once to ONNX (fp32) for 2-4x faster single queries."""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger("kb.onnx")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_path(cache_dir: Path, model_dir: Path) -> Path:
    """Where the export of the model in `model_dir` lives: keyed by a hash of its weights file."""
    weights = model_dir / "model.safetensors"
    digest = hashlib.sha256(f"{weights}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode()).hexdigest()
    return cache_dir / f"query-encoder-{digest[:16]}.onnx"


def export_onnx(transformer, target: Path) -> None:
    """Export the transformer (token embeddings out) with dynamic batch and length; atomic write."""
    import torch

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    example = tuple(torch.ones((1, 4), dtype=torch.long) for _ in INPUTS)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        torch.onnx.export(TokenEmbeddings(transformer.eval()), example, str(tmp), input_names=list(INPUTS),
                          output_names=["token_embeddings"], opset_version=17, dynamo=False,
                          dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "token_embeddings")})
    os.replace(tmp, target)


class OnnxQueryEncoder:
    """Tokenise with the model's own tokenizer, run ONNX Runtime, mean-pool and L2-normalise."""

    def __init__(self, path: Path, tokenizer, max_length: int, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # No busy-waiting after a run: spinning threads stole the CPU from FAISS and SQLite (11 ms searches).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer, self.max_length = tokenizer, max_length

    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, return_tensors="np", truncation=True, max_length=self.max_length,
                               padding=True)
        feed = {name: batch[name].astype(np.int64) for name in INPUTS if name in batch}
        if "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        tokens = self.session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return np.ascontiguousarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), dtype=np.float32)


def load_query_encoder(model, model_dir: Path, cache_dir: Path) -> OnnxQueryEncoder | None:
    """Export (once) and open the ONNX query encoder; None, with a warning, if it does not match torch."""
    try:
        path = export_path(cache_dir, model_dir)
        if not path.is_file():
            log.info("exporting the query encoder to %s (once)", path)
            export_onnx(model[0].auto_model, path)
        encoder = OnnxQueryEncoder(path, model.tokenizer, int(model.max_seq_length))
        probe = ["Outlook keeps asking for my password", "Kamera Teams tidak berfungsi saat rapat 0x8004010F"]
        expected = model.encode(probe, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        agreement = float(np.min(np.sum(encoder.encode(probe) * expected, axis=1)))
        if agreement < 0.999:
            log.warning("ONNX query encoder disagrees with torch (cosine %.4f); using torch", agreement)
            return None
        return encoder
    except Exception as exc:  # an export problem must never stop search: torch still works
        log.warning("ONNX query encoder unavailable (%s); using torch", exc)
        return None
