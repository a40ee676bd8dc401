"""ONNX query encoder: the same MiniLM weights exported once to ONNX (fp32) for 2-4x faster single queries, and
optionally their 8-bit quantisation (`onnx-int8`), which encodes a query in about 0.6 of the time."""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger("kb.onnx")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Least cosine with torch's vectors on probe texts for an export to be used. The 8-bit weights move a query vector
# a little (median cosine with the fp32 export 0.994, least 0.98 over the 260 dev and check tickets, docs/quality.md).
AGREEMENT = {"onnx": 0.999, "onnx-int8": 0.98}
# How the export is made, part of its file's key so that a cache made otherwise is exported again. "fused-1": the
# attention traced in its plain ("eager") form, which ONNX Runtime's transformer optimizer fuses into one Attention
# node per layer (the SDPA form does not fuse): 0.79 of the time for a short query, 0.69 for a ticket in 8 bits
# (docs/benchmarks.md, "Fused attention in the query encoder").
EXPORT_FORMAT = "fused-1"
FUSE_TIMEOUT_S = 900  # the fusion's child process: multilingual-e5-small's 470 MB export fuses in about 15 s
# A batch of at most SHORT_TOKENS tokens (rows x padded length: a search's few words) runs on one thread. MiniLM in
# 8 bits on 2 cores: 12 tokens 1.43 ms on one thread vs 1.88 on two, 44 tokens 3.78 vs 4.03, 62 tokens 5.40 vs 4.95
# (docs/benchmarks.md, "One thread for a short query"). Only for exports up to SHORT_SESSION_MAX_BYTES: MiniLM's 23 MB
# int8 one, where it was measured; not its 90 MB fp32 one (not measured) nor multilingual-e5-small's 470 MB (a session
# holds its export in memory).
SHORT_TOKENS = 48
SHORT_SESSION_MAX_BYTES = 50_000_000


def export_path(cache_dir: Path, model_dir: Path) -> Path:
    """Where the export of the model in `model_dir` lives: keyed by a hash of its weights file and EXPORT_FORMAT."""
    weights = model_dir / "model.safetensors"
    stamp = f"{weights}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}"
    digest = hashlib.sha256(f"{stamp}:{EXPORT_FORMAT}".encode()).hexdigest()
    return cache_dir / f"query-encoder-{digest[:16]}.onnx"


def engine_file(export: Path, engine: str) -> Path:
    """The file an ONNX engine runs: the fp32 export, or its 8-bit quantisation beside it."""
    return export.with_name(f"{export.stem}-int8.onnx") if engine == "onnx-int8" else export


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantisation: weights as 8-bit integers per output channel, activations quantised at run
    time; atomic write. (Per tensor, the vectors moved 4x further: median cosine with fp32 0.963.)"""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f"{target.stem}.tmp-{os.getpid()}.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the model first goes to the root logger
    try:
        # The fused graph's outputs carry no inferred types: the tensors left to infer are float.
        quantize_dynamic(str(source), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(tmp, target)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)


def export_onnx(transformer, target: Path) -> None:
    """Export the transformer (token embeddings out) with dynamic batch and length, its attention traced in the plain
    form and fused (`fuse`); atomic write."""
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
    attention = transformer.config._attn_implementation
    try:
        transformer.set_attn_implementation("eager")  # the same weights and vectors, traced as plain matrix products
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            torch.onnx.export(TokenEmbeddings(transformer.eval()), example, str(tmp), input_names=list(INPUTS),
                              output_names=["token_embeddings"], opset_version=17, dynamo=False,
                              dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "token_embeddings")})
        fuse(tmp, transformer.config)
        os.replace(tmp, target)
    finally:
        transformer.set_attn_implementation(attention)
        tmp.unlink(missing_ok=True)


def fuse(path: Path, config) -> None:
    """Rewrite the exported BERT graph in place with ONNX Runtime's transformer optimizer: one Attention node per layer,
    skip + layer norm and bias + GELU fused (669 nodes -> 46 for MiniLM), the same vectors. In a child process: the
    optimizer's copies of the graph (about four times the file) stayed in this process's memory after it returned
    (MiniLM: the service's RSS 1.20 GB after its first start instead of 0.83). A graph the child cannot fuse is left as
    exported (slower, not wrong); the child writes a file of its own, which replaces `path` only once it has exited
    cleanly."""
    fused = path.with_name(f"{path.name}.fused")
    command = fusion_command(path, fused, int(config.num_attention_heads), int(config.hidden_size))
    package_root = str(Path(__file__).resolve().parent.parent)  # so that the child imports this `kb`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=FUSE_TIMEOUT_S, env=env)
        os.replace(fused, path)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        log.warning("query encoder export left unfused (%s)", lines[-1] if lines else f"exit status {exc.returncode}")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("query encoder export left unfused (%s)", exc)
    finally:
        fused.unlink(missing_ok=True)


def fusion_command(source: Path, target: Path, heads: int, hidden: int) -> list[str]:
    """The child process `fuse` runs."""
    return [sys.executable, "-m", "kb.onnx_query", "fuse", str(source), str(target), str(heads), str(hidden)]


def fuse_here(source: Path, target: Path, heads: int, hidden: int) -> None:
    """`fuse`'s work, in the process that calls it (the child's): the fused graph of `source` written to `target`."""
    from onnxruntime.transformers import optimizer

    logging.getLogger().setLevel(logging.ERROR)  # it reports each fusion on the root logger
    fused = optimizer.optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    fused.save_model_to_file(str(target))


def open_session(path: Path, threads: int):
    """An ONNX Runtime session of the export at `path` on `threads` intra-op threads (0: ORT's default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # No busy-waiting after a run: spinning threads stole the CPU from FAISS and SQLite (11 ms searches).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxQueryEncoder:
    """Tokenise with the model's own tokenizer, run ONNX Runtime, mean-pool and L2-normalise."""

    def __init__(self, path: Path, tokenizer, max_length: int, threads: int = 0):
        self.session = open_session(path, threads)
        # A short batch runs on a one-thread session of its own: ORT's second thread costs more than it saves there.
        small = Path(path).stat().st_size <= SHORT_SESSION_MAX_BYTES
        self.short_session = open_session(path, 1) if threads != 1 and small and (os.cpu_count() or 1) > 1 else None
        self.path, self.tokenizer, self.max_length = path, tokenizer, max_length

    def with_threads(self, threads: int) -> "OnnxQueryEncoder":
        """Another encoder of the same export and tokenizer whose every batch runs on `threads` threads (one thread:
        this encoder's short-batch session, shared, when it has one)."""
        if threads == 1 and self.short_session is not None:
            twin = copy.copy(self)
            twin.session, twin.short_session = self.short_session, None
            return twin
        return OnnxQueryEncoder(self.path, self.tokenizer, self.max_length, threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, return_tensors="np", truncation=True, max_length=self.max_length,
                               padding=True)
        feed = {name: batch[name].astype(np.int64) for name in INPUTS if name in batch}
        if "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        short = self.short_session is not None and feed["input_ids"].size <= SHORT_TOKENS
        tokens = (self.short_session if short else self.session).run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return np.ascontiguousarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), dtype=np.float32)


def load_query_encoder(model, model_dir: Path, cache_dir: Path, engine: str = "onnx"
                       ) -> tuple[OnnxQueryEncoder | None, str]:
    """Export (once), quantise (once, for onnx-int8) and open the ONNX query encoder: (encoder, engine). An 8-bit
    file that fails falls back to the fp32 export; (None, "torch"), with a warning, if that does not match torch."""
    engines = ("onnx-int8", "onnx") if engine == "onnx-int8" else ("onnx",)
    for name in engines:
        try:
            export = export_path(cache_dir, model_dir)
            if not export.is_file():
                log.info("exporting the query encoder to %s (once)", export)
                export_onnx(model[0].auto_model, export)
            path = engine_file(export, name)
            if not path.is_file():
                log.info("quantising the query encoder to %s (once)", path)
                quantize_int8(export, path)
            encoder = OnnxQueryEncoder(path, model.tokenizer, int(model.max_seq_length))
            probe = ["Outlook keeps asking for my password", "Kamera Teams tidak berfungsi saat rapat 0x8004010F"]
            expected = model.encode(probe, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            agreement = float(np.min(np.sum(encoder.encode(probe) * expected, axis=1)))
            if agreement < AGREEMENT[name]:
                log.warning("%s query encoder disagrees with torch (cosine %.4f); not used", name, agreement)
                continue
            return encoder, name
        except Exception as exc:  # an export problem must never stop search: torch still works
            log.warning("%s query encoder unavailable (%s)", name, exc)
    log.warning("no ONNX query encoder; using torch")
    return None, "torch"


if __name__ == "__main__" and sys.argv[1:2] == ["fuse"]:
    fuse_here(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
