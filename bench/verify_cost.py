"""What verifying an index version costs when it is opened: sha256 of each file against the manifest, the unit-length
check of the vectors, SQLite's quick_check (versions without checksums), and the whole open with and without the
file checksums, next to what putting the version into service costs anyway (the Searcher's own loading)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import faiss  # noqa: E402

from bench.version_swaps import copy_versions  # noqa: E402
from kb import integrity  # noqa: E402
from kb.index.faiss_sqlite import store  # noqa: E402


def uncache(folder: Path) -> None:
    """Drop this version's files (only these) from the page cache, so that the next read comes from the disk."""
    for name in store.CHECKED_FILES + (store.MANIFEST,):
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn, runs: int, cold: Path | None = None) -> dict:
    seconds = []
    for _ in range(runs):
        if cold is not None:
            uncache(cold)
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return {"median_ms": round(statistics.median(seconds) * 1000, 1), "min_ms": round(min(seconds) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, default=Path("/tmp/serve-bench/office-idx"),
                        help="a built index folder (only read; its current version is copied and sealed)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--searcher", action="store_true", help="also time the Searcher's loading (loads no model)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="kb-verify-"))
    try:
        (build_id,) = copy_versions(args.index, work / "index", 1)
        folder = work / "index" / build_id
        manifest = store.read_manifest(folder)
        model = manifest["model"]
        sizes = {name: (folder / name).stat().st_size for name in store.CHECKED_FILES}
        vectors = faiss.read_index(str(folder / store.VECTORS))
        conn = store.open_version(folder, model).db()
        figures = {
            "sha256 vectors.faiss": timed(lambda: integrity.file_checksum(folder / store.VECTORS), args.runs),
            "sha256 meta.sqlite": timed(lambda: integrity.file_checksum(folder / store.META), args.runs),
            "unit-length check": timed(lambda: integrity.check_unit_length(vectors, folder), args.runs),
            "quick_check meta.sqlite (no checksums)": timed(lambda: integrity.quick_check(conn, folder), args.runs),
            "open, files verified": timed(lambda: store.open_version(folder, model).close(), args.runs),
            "open, files not verified": timed(lambda: store.open_version(folder, model, check_files=False).close(),
                                              args.runs),
            "open, files verified, cold cache": timed(lambda: store.open_version(folder, model).close(), args.runs,
                                                      cold=folder),
            "re-verify files (KB_VERIFY_SECONDS)": timed(
                lambda: integrity.verify_files(folder, manifest[integrity.FILES]), args.runs),
        }
        if args.searcher:
            from kb.settings import load_settings
            from search.searcher import Searcher

            class NoModel:  # the Searcher's loading reads the index only; queries are not encoded here
                model_id, dim, multilingual = model, manifest["dim"], False

            settings = load_settings({})
            figures["Searcher loading (not verification)"] = timed(
                lambda: Searcher(store.open_version(folder, model, check_files=False), NoModel(), settings),
                max(3, args.runs // 2))
        print(f"{folder.name}: {manifest['counts']['passages']} passages; "
              + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items()))
        for name, figure in figures.items():
            print(f"  {name:42s} median {figure['median_ms']:8.1f} ms   min {figure['min_ms']:8.1f} ms")
        print(json.dumps({"bench": "verify_cost", "passages": manifest["counts"]["passages"], "bytes": sizes,
                          "runs": args.runs, "figures": figures}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
