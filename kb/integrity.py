"""Integrity of an index version: file sizes and sha256 in its sealed manifest, and the checks that find damage."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import faiss
import numpy as np

from kb.errors import IndexDamaged

SEAL = "checksum"  # manifest key: sha256 of the manifest's other keys, canonical JSON
FILES = "files"  # manifest key: file name -> {"bytes": size, "sha256": hex digest}
UNIT_TOLERANCE = 1e-3  # |squared norm - 1| allowed for a float32 vector normalised by the model


def repair_hint() -> str:
    return "build a new version with `kb index`"


def damaged(where: Path | str, what: str) -> IndexDamaged:
    """The one wording of damage: which version, what is wrong with it, what repairs it."""
    return IndexDamaged(f"index version {where} is damaged: {what}; {repair_hint()}")


def file_checksum(path: Path) -> dict:
    """{"bytes": size, "sha256": hex} of one file (hashlib.file_digest: ~1 GB/s with SHA extensions)."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return {"bytes": handle.tell(), "sha256": digest}


def file_checksums(folder: Path, names: tuple[str, ...]) -> dict[str, dict]:
    return {name: file_checksum(folder / name) for name in names}


def manifest_checksum(manifest: dict) -> str:
    body = {key: value for key, value in manifest.items() if key != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(manifest: dict) -> dict:
    """The manifest with its own checksum, so that an edited or scribbled manifest is found out too."""
    return {**manifest, SEAL: manifest_checksum(manifest)}


def is_sealed(manifest: dict, where: Path | str, record: str = FILES, named: str = "manifest.json") -> bool:
    """True for a manifest with checksums that match; False for one written before checksums (format 2 without
    them); IndexDamaged when the manifest does not match its own checksum. `record`: the manifest key of what the
    seal vouches for (FAISS + SQLite: its files; Milvus: its contents' digest), `named` the manifest in messages."""
    if SEAL not in manifest and record not in manifest:
        return False
    if manifest.get(SEAL) != manifest_checksum(manifest) or not isinstance(manifest.get(record), dict):
        raise damaged(where, f"{named} does not match its checksum")
    return True


def verify_files(folder: Path, files: dict[str, dict]) -> None:
    """Every file's size (cheap, first) and sha256 against the manifest; IndexDamaged naming the first that fails."""
    for name, expected in files.items():
        try:
            size = (folder / name).stat().st_size
        except OSError as exc:
            raise damaged(folder, f"{name} cannot be read ({exc.strerror})") from None
        if size != expected["bytes"]:
            raise damaged(folder, f"{name} has {size} bytes, its manifest says {expected['bytes']}")
    for name, expected in files.items():
        try:
            found = file_checksum(folder / name)
        except OSError as exc:
            raise damaged(folder, f"{name} cannot be read ({exc.strerror})") from None
        if found["sha256"] != expected["sha256"]:
            raise damaged(folder, f"{name} does not match its checksum (sha256 {found['sha256'][:12]}..., manifest "
                                  f"{expected['sha256'][:12]}...)")


def check_unit_length(vectors: faiss.Index, where: Path) -> None:
    """Every stored vector has length 1 (the model normalises them; cosines are inner products): scribbled floats,
    NaN or a build that forgot to normalise are damage, not answers with cosines of 1e37."""
    n, dim = vectors.ntotal, vectors.d
    if n == 0:
        return
    flat = faiss.downcast_index(vectors)
    if hasattr(flat, "get_xb"):  # IndexFlat: a view of the stored floats, no copy
        matrix = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    else:
        matrix = vectors.reconstruct_n(0, n)
    squared = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
    bad = np.flatnonzero(~(np.abs(squared - 1.0) <= UNIT_TOLERANCE))  # NaN fails the comparison too
    if len(bad):
        raise damaged(where, f"{len(bad)} of {n} vectors are not unit length (row {bad[0]}: length "
                             f"{float(np.sqrt(abs(squared[bad[0]]))):.4g})")


def quick_check(conn: sqlite3.Connection, where: Path) -> None:
    """SQLite's own structure check, for versions written before checksums (35 MB in ~35 ms)."""
    problems = [line for row in conn.execute("PRAGMA quick_check(20)") for line in str(row[0]).splitlines()
                if line.strip() and not line.startswith("***")]
    if problems != ["ok"]:
        raise damaged(where, f"meta.sqlite fails SQLite's quick_check ({'; '.join(problems[:2])}"
                             f"{'; ...' if len(problems) > 2 else ''})")
