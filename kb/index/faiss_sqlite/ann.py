"""The approximate dense index of a large FAISS + SQLite version: IVF lists of 4-bit product-quantised codes (scanned
by FAISS' fast-scan kernels) beside the exact vectors."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from kb import integrity
from kb.errors import IndexDamaged

ANN = "ann.faiss"
VECTORS = "vectors.faiss"  # the exact IndexFlatIP of the version (store.VECTORS)
CURRENT = "CURRENT"  # names the version in service (store.CURRENT)
REQUEST = "ann_request"  # manifest key on the way in, never sealed: {"min_passages": n} from the backend's setting
RECORD = "ann"  # sealed manifest key of a version that carries ANN: what was built, how it is searched
KIND = "IVF-PQ4FS"  # was "IVF-SQ8" (8-bit codes) before 2026-12-03; versions built so still open and search as built
LISTS_PER_SQRT = 4  # lists ~ 4 * sqrt(passages), a power of two: 2048 at 205k passages, 1024 at 51k
TRAIN_PER_LIST = 40  # training sample per list (faiss asks for 39)
TRAIN_ITERATIONS = 10  # k-means rounds (faiss' default is 25; the recall in docs/benchmarks.md is with 10)
# Share of the lists a search probes, by the number of lists (docs/benchmarks.md, "Approximate dense index" and "4-bit
# codes"). 8-bit codes: 3/8 gave recall@10 0.9905 over 512 lists on 28,794 distinct passages (1/4: 0.979); over 2,048
# lists on 168,585 distinct vectors (those passages and their sentences) 1/4 gave 0.9912 (3/8: 0.9963) in 0.57 of the
# time. 4-bit codes, two dimensions each, 200 candidates rescored: the same recall in every set, in about half the time;
# over 1,024 lists on 51,100 distinct vectors 3/8 gives 0.9928 (1/4: 0.9856).
PROBE_SHARES = ((2048, 0.25), (0, 0.375))
EXACT_BELOW_SHARE = 0.5  # a selection admitting less than this share of passages is searched exactly
FETCH_PER_RESULT = 2  # candidates taken per result asked for, then rescored with the exact vectors
MIN_FETCH = 200  # 4-bit codes rank roughly: the searcher's 100 get 200 candidates, fewer asked get as many
RETRAIN_DRIFT = 2.0  # a patched version keeps its lists while its size stays within 2x of the size they learnt
PATCH_AT_MOST = 0.5  # beyond this share of rows changed, the lists are trained again
ADD_CHUNK = 65_536
SEED = 15


@dataclass(frozen=True)
class Built:
    """What `attach` put in a version: its ANN index and how it came about (the manifest's "ann" record)."""

    index: faiss.Index
    record: dict


@dataclass
class Approximate:
    """An opened ANN index: candidates from the IVF lists, scored again exactly from the version's flat vectors."""

    index: faiss.Index  # IndexIVFPQFastScan (IndexIVFScalarQuantizer when built before), ids = passage keys
    nprobe: int
    nlist: int

    def serves(self, admitted: int, size: int) -> bool:
        """Whether a search admitting `admitted` of `size` passages goes through the lists (else: exact)."""
        return size > 0 and admitted >= EXACT_BELOW_SHARE * size

    def search(self, vector: np.ndarray, limit: int, matrix: np.ndarray, selector=None,
               share: float = 1.0) -> dict[int, float]:
        """The best `limit` keys by exact inner product among the lists' candidates; a selection admitting `share`
        of the passages probes 1 / share times more lists, so as many admitted candidates are seen."""
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        nprobe = min(self.nlist, math.ceil(self.nprobe / max(share, 1e-9)))
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
        fetch = min(max(limit * FETCH_PER_RESULT, MIN_FETCH), self.index.ntotal)
        _, rows = self.index.search(query, fetch, params=params)
        rows = rows[0][rows[0] >= 0]
        scores = matrix[rows] @ query[0]
        best = np.lexsort((rows, -scores))[:limit]  # equal scores: the lowest keys, as the flat index keeps them
        return {int(rows[i]): float(scores[i]) for i in best}


def probes(nlist: int) -> int:
    """Lists probed by a search without a selection."""
    share = next(share for at_least, share in PROBE_SHARES if nlist >= at_least)
    return max(1, round(nlist * share))


def plan_lists(n: int) -> int:
    """The number of IVF lists for `n` passages: a power of two near 4 * sqrt(n), each with 40 training vectors."""
    nlist = 2 ** max(0, round(math.log2(max(1.0, LISTS_PER_SQRT * math.sqrt(n)))))
    while nlist > 1 and nlist * TRAIN_PER_LIST > n:
        nlist //= 2
    return nlist


class _Owned(np.ndarray):
    """A view of a faiss index's floats that keeps the index (and its mapping) alive while the view is."""

    def __new__(cls, view: np.ndarray, owner):
        obj = view.view(cls)
        obj.owner = owner
        return obj

    def __array_finalize__(self, obj):
        self.owner = getattr(obj, "owner", None)


def flat_matrix(path: Path) -> np.ndarray:
    """The vectors of a flat index file, mapped (the file's pages, no copy in the build's memory): the version being
    written or the one in service, whose files no one changes."""
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    flat = faiss.downcast_index(index)
    n, dim = index.ntotal, index.d
    if n == 0:
        return np.zeros((0, dim), np.float32)
    matrix = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    return _Owned(matrix, index)


def codes_spec(dim: int) -> str:
    """The FAISS factory string of the lists' codes: 4 bits per two dimensions (96 bytes for 384), in the fast-scan
    layout; one dimension each for an odd dimension."""
    return f"PQ{dim // 2 if dim % 2 == 0 else dim}x4fs"


def train(matrix: np.ndarray) -> faiss.Index:
    """A new IVF index of 4-bit codes, its lists and codebooks learnt from a sample of `matrix`, holding every row."""
    n, dim = matrix.shape
    nlist = plan_lists(n)
    index = faiss.index_factory(dim, f"IVF{nlist},{codes_spec(dim)}", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = TRAIN_ITERATIONS
    sample = np.sort(np.random.default_rng(SEED).choice(n, min(n, nlist * TRAIN_PER_LIST), replace=False))
    index.train(np.ascontiguousarray(matrix[sample]))
    for start in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(matrix[start:start + ADD_CHUNK]))
    return index


def changed_rows(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Rows present in both whose vectors differ (compared in chunks)."""
    common = min(len(old), len(new))
    found = [start + np.flatnonzero((old[start:end] != new[start:end]).any(axis=1))
             for start in range(0, common, ADD_CHUNK) for end in [min(start + ADD_CHUNK, common)]]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


def patch(index: faiss.Index, old: np.ndarray, new: np.ndarray) -> int:
    """Make `index` (built over `old`) hold `new`: the lists holding rows that changed or went are emptied, and their
    other rows are added again with the rows that changed or came, under their keys. Returns the rows that changed or
    came.

    Not faiss' `remove_ids`: on fast-scan lists it leaves the removed codes' bits in the list's last block, and codes
    added there afterwards are merged with them (faiss 1.15.1; tests/test_ann.py). An emptied list is grown again from
    zeroed blocks."""
    differs = changed_rows(old, new)
    gone = np.concatenate([differs, np.arange(len(new), len(old), dtype=np.int64)])
    came = np.concatenate([differs, np.arange(len(old), len(new), dtype=np.int64)])
    again = [came]
    if len(gone):
        ivf = faiss.extract_index_ivf(index)
        lists = ivf.invlists
        for list_no in range(lists.nlist):
            size = lists.list_size(list_no)
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy()
            hit = np.isin(ids, gone)
            if hit.any():
                lists.resize(list_no, 0)
                again.append(ids[~hit])
        ivf.ntotal = index.ntotal = sum(lists.list_size(list_no) for list_no in range(lists.nlist))
    rows = np.sort(np.concatenate(again))
    for start in range(0, len(rows), ADD_CHUNK):
        chunk = rows[start:start + ADD_CHUNK]
        index.add_with_ids(np.ascontiguousarray(new[chunk]), chunk)
    return len(came)


def _base(index_dir: Path, manifest: dict, n: int) -> tuple[Path, dict] | None:
    """The version in service when its ANN index can be patched into this one: same model and dimension, sizes
    within RETRAIN_DRIFT of what its lists learnt, its file matching its checksum."""
    try:
        name = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
        base_manifest = json.loads((index_dir / name / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = base_manifest.get(RECORD)
    if not isinstance(record, dict) or record.get("kind") != KIND:
        return None
    if (base_manifest.get("model"), base_manifest.get("dim")) != (manifest.get("model"), manifest.get("dim")):
        return None
    trained = int(record.get("trained_passages", 0))
    if not trained / RETRAIN_DRIFT <= n <= trained * RETRAIN_DRIFT:
        return None
    files = base_manifest.get(integrity.FILES) or {}
    if ANN not in files:
        return None
    try:
        integrity.verify_files(index_dir / name, {ANN: files[ANN]})
    except IndexDamaged:
        return None
    return index_dir / name, record


def build(index_dir: Path, folder: Path, build_id: str, manifest: dict, min_passages: int) -> Built | None:
    """The ANN index for the version being written in `folder` (None below `min_passages`): the version in service's
    lists patched with the rows that differ when it has them and they still fit, else lists trained anew."""
    matrix = flat_matrix(folder / VECTORS)
    n = len(matrix)
    if n < min_passages or n == 0:
        return None
    base = _base(index_dir, manifest, n)
    if base is not None:
        base_dir, base_record = base
        old = flat_matrix(base_dir / VECTORS)
        if len(changed_rows(old, matrix)) + abs(len(matrix) - len(old)) <= PATCH_AT_MOST * n:
            index = faiss.read_index(str(base_dir / ANN))
            added = patch(index, old, matrix)
            return Built(index, {**{k: base_record[k] for k in ("kind", "nlist", "nprobe", "trained_passages",
                                                                "trained_in")},
                                 "min_passages": min_passages, "patched_from": base_dir.name, "rows_added": added})
    index = train(matrix)
    nlist = faiss.extract_index_ivf(index).nlist
    return Built(index, {"kind": KIND, "nlist": nlist, "nprobe": probes(nlist),
                         "trained_passages": n, "trained_in": build_id, "min_passages": min_passages,
                         "rows_added": n})


def attach(index_dir: Path, folder: Path, build_id: str, manifest: dict) -> dict:
    """The hook of publishing: the manifest without its REQUEST; with a RECORD when an ANN file was written into
    `folder` (the backend asked for one and the version is large enough)."""
    request = manifest.get(REQUEST)
    manifest = {k: v for k, v in manifest.items() if k not in (REQUEST, RECORD)}
    if not isinstance(request, dict) or request.get("min_passages") is None:
        return manifest
    built = build(Path(index_dir), Path(folder), build_id, manifest, int(request["min_passages"]))
    if built is None:
        return manifest
    faiss.write_index(built.index, str(folder / ANN))
    fd = os.open(folder / ANN, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {**manifest, RECORD: {**built.record, "file": ANN}}


def files(manifest: dict) -> tuple[str, ...]:
    """The files the manifest's RECORD adds to those sealed by checksum."""
    return (ANN,) if isinstance(manifest.get(RECORD), dict) else ()


def open_ann(version_dir: Path, manifest: dict, size: int, dim: int) -> Approximate | None:
    """The version's ANN index when its manifest records one; IndexDamaged when it is unreadable or does not fit."""
    record = manifest.get(RECORD)
    if not isinstance(record, dict):
        return None
    try:
        index = faiss.read_index(str(version_dir / ANN))
    except RuntimeError as exc:
        raise integrity.damaged(version_dir, f"{ANN} is unreadable ({str(exc).splitlines()[-1][:200]})") from None
    try:
        ivf = faiss.extract_index_ivf(index)
        nlist = int(record["nlist"])  # probed as this code's probes() says; the record keeps what its build chose
    except (RuntimeError, KeyError, TypeError, ValueError):
        raise integrity.damaged(version_dir, f"{ANN} is not the IVF index its manifest records") from None
    if (index.ntotal, index.d, ivf.nlist) != (size, dim, nlist):
        raise integrity.damaged(version_dir, f"{ANN} holds {index.ntotal} vectors of dim {index.d} in {ivf.nlist} "
                                             f"lists, the manifest says {size} of dim {dim} in {nlist}")
    return Approximate(index, probes(nlist), nlist)
