"""Benchmark a full `build_index` (parse, chunk, embed, write) against raw SentenceTransformer.encode, then a no-change re-index."""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from indexer.build import build_index  # noqa: E402
from indexer.cache import hash_text  # noqa: E402
from indexer.parse import discover  # noqa: E402
from kb.embedder import Embedder  # noqa: E402
from kb.index import open_backend  # noqa: E402
from kb.settings import load_settings  # noqa: E402

DEFAULT_CONTENT = REPO_ROOT.parent / "shared" / "datasets" / "md-office-support-kb" / "articles"
PIPELINE_RAW_TARGET = 0.85
NOCHANGE_TARGET_S = 10.0


class TimedEmbedder(Embedder):
    """An Embedder that only records how long model loading and passage encoding take (same behaviour)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.load_seconds = 0.0
        self.encode_seconds = 0.0
        self.encode_cpu_seconds = 0.0
        self.encode_calls = 0
        self.encoded = 0

    def load(self):
        if self._model is not None:
            return self._model
        started = time.perf_counter()
        model = super().load()
        self.load_seconds += time.perf_counter() - started
        return model

    def encode_passages(self, texts, batch_size: int = 16):
        self.load()  # keep a first-time load out of the encode figure
        started, cpu = time.perf_counter(), time.process_time()
        vectors = super().encode_passages(texts, batch_size=batch_size)
        self.encode_seconds += time.perf_counter() - started
        self.encode_cpu_seconds += time.process_time() - cpu
        self.encode_calls += 1
        self.encoded += len(texts)
        return vectors


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def copy_subset(content: Path, limit: int, dest: Path) -> int:
    """Copy the first `limit` articles (discover() order = sorted paths) and every includes folder to `dest`."""
    articles = discover(content)[:limit]
    for path in articles:
        target = dest / path.relative_to(content)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for folder in content.rglob("*"):
        if folder.is_dir() and folder.name.lower() == "includes" and \
                not any(p.startswith(".") for p in folder.relative_to(content).parts):
            shutil.copytree(folder, dest / folder.relative_to(content), dirs_exist_ok=True)
    return len(articles)


def read_embed_texts(version) -> tuple[list[str], int]:
    """Embed texts of all passages in key order, rebuilt like Passage.embed_text(); plus hash mismatches."""
    titles = {a.id: a.title for a in version.articles()}
    found = version.passages(range(version.size))
    texts, mismatches = [], 0
    for title, headings, text, text_hash in ((titles[p.article_id], p.heading_path, p.text, p.text_hash)
                                             for p in (found[k] for k in range(version.size))):
        context = " > ".join((title, *headings))
        embed_text = f"{context}\n{text}"
        mismatches += hash_text(embed_text) != text_hash
        texts.append(embed_text)
    return texts, mismatches


def children_cpu_seconds() -> float:
    """CPU of this process's ended children so far (the build's parsing worker, once it has ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raw_cold_child(index_dir: Path, batch_size: int | None) -> int:
    """--raw-cold-of: in this fresh process, load the model (untimed), then time one encode of the version's passage
    texts in the service's precision; prints the figures as JSON."""
    settings = load_settings()
    texts, _ = read_embed_texts(open_backend(index_dir).open(check=False))
    embedder = Embedder(settings.model, precision=settings.encode_precision)
    started = time.perf_counter()
    model = embedder.load()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    with embedder.passage_context():
        model.encode(texts, batch_size=batch_size or settings.batch_size, normalize_embeddings=True,
                     show_progress_bar=False)
    print(json.dumps({"raw_passages": len(texts), "raw_cold_seconds": round(time.perf_counter() - started, 3),
                      "load_seconds": round(load_s, 3)}))
    return 0


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT,
                        help=f"content folder to index (default {DEFAULT_CONTENT})")
    parser.add_argument("--limit", type=int, default=None,
                        help="index only the first N articles (sorted paths) plus the includes folders, "
                             "copied into a temp content folder")
    parser.add_argument("--index-dir", type=Path, default=None,
                        help="index folder to build into; must be empty or absent (default: a temp folder, "
                             "deleted at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temp index folder and print its path")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override KB_BATCH_SIZE (default: the setting, 16)")
    parser.add_argument("--skip-raw", action="store_true", help="skip the raw SentenceTransformer.encode run")
    parser.add_argument("--raw-cold", action="store_true",
                        help="also run the raw encode in a fresh process (model loaded untimed, then one encode): "
                             "as cold as the build's own first batches, where the in-process raw run is warm")
    parser.add_argument("--raw-cold-of", type=Path, default=None, help=argparse.SUPPRESS)  # that child's mode
    parser.add_argument("--raw-repeat", type=int, default=1, metavar="R",
                        help="run the raw encode R times and report the fastest (default 1)")
    parser.add_argument("--skip-cli", action="store_true",
                        help="skip the extra no-change `kb index` run in a fresh process")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="run the full build under cProfile and print the top N functions by cumulative "
                             "time (slows the build; the timing figures then include profiler overhead)")
    args = parser.parse_args(argv)
    if args.raw_cold_of is not None:
        return raw_cold_child(args.raw_cold_of, args.batch_size)

    content = args.content.resolve()
    if not content.is_dir():
        parser.error(f"content folder {content} does not exist")
    cleanup: list[Path] = []
    if args.index_dir is not None:
        index_dir = args.index_dir.resolve()
        if index_dir.exists() and any(index_dir.iterdir()):
            parser.error(f"--index-dir {index_dir} is not empty: the benchmark needs a fresh index and "
                         "embedding cache")
    else:
        index_dir = Path(tempfile.mkdtemp(prefix="kb-bench-index-"))
        if not args.keep:
            cleanup.append(index_dir)
    try:
        if args.limit is not None:
            subset = Path(tempfile.mkdtemp(prefix="kb-bench-content-"))
            cleanup.append(subset)
            copied = copy_subset(content, args.limit, subset)
            print(f"content: first {copied} articles of {content} (+ includes) copied to {subset}")
            content = subset
        else:
            print(f"content: {content}")
        overrides = {"content_dir": content, "index_dir": index_dir}
        if args.batch_size:
            overrides["batch_size"] = args.batch_size
        settings = load_settings(**overrides)
        import torch

        embedder = TimedEmbedder(settings.model, precision=settings.encode_precision)
        print(f"index:   {index_dir}")
        print(f"settings: batch_size={settings.batch_size} passage_max_words={settings.passage_max_words} "
              f"passage_min_words={settings.passage_min_words}; torch threads={torch.get_num_threads()}, "
              f"cpus={os.cpu_count()}; passages embedded in {embedder.precision} "
              f"(KB_ENCODE_PRECISION={settings.encode_precision})")
        load1 = os.getloadavg()[0]
        if load1 > 0.5:
            print(f"WARNING: 1-minute load average is {load1:.2f} before the run: other processes share the CPUs, "
                  "so wall-clock figures (and the pipeline/raw ratio) will be noisy")
        rss_start = peak_rss_mb()

        # ---- 1. full build -----------------------------------------------------------------
        profiler = cProfile.Profile() if args.profile else None
        started, cpu = time.perf_counter(), time.process_time()
        children_cpu = children_cpu_seconds()
        if profiler:
            profiler.enable()
        report = build_index(settings, embedder, full=True, progress=True)
        if profiler:
            profiler.disable()
        build_s = time.perf_counter() - started
        build_cpu_s = time.process_time() - cpu
        worker_cpu_s = children_cpu_seconds() - children_cpu
        rss_build = peak_rss_mb()
        other_s = build_s - embedder.load_seconds - embedder.encode_seconds
        print()
        print(f"full build: {report.summary()}")
        print(f"  articles           {report.articles}")
        print(f"  passages           {report.passages}  ({report.embedded} embedded)")
        print(f"  wall               {build_s:.2f} s  (process CPU {build_cpu_s:.2f} s; its parsing worker's "
              f"{worker_cpu_s:.2f} s)")
        print(f"    model load       {embedder.load_seconds:.2f} s")
        print(f"    encode           {embedder.encode_seconds:.2f} s  ({embedder.encode_calls} calls, "
              f"process CPU {embedder.encode_cpu_seconds:.2f} s)")
        print(f"    everything else  {other_s:.2f} s  (discover, parse, chunk, cache, write)")
        print(f"  articles/s         {rate(report.articles, build_s):.1f}")
        print(f"  passages/s         {rate(report.passages, build_s):.1f}  "
              f"(excluding model load: {rate(report.passages, build_s - embedder.load_seconds):.1f})")
        print(f"  peak RSS           {rss_build:.0f} MB  (before build {rss_start:.0f} MB)")
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
            print("\ncProfile of the full build (cumulative):")
            print(out.getvalue())

        # ---- 2. raw encode of the same texts -----------------------------------------------
        raw: dict = {}
        if not args.skip_raw:
            version = open_backend(index_dir).open(check=False)
            texts, mismatches = read_embed_texts(version)
            model = embedder.load()  # already loaded by the build
            runs = []
            for _ in range(max(1, args.raw_repeat)):
                started, cpu = time.perf_counter(), time.process_time()
                with embedder.passage_context():  # the build's precision: like is compared with like
                    vectors = model.encode(texts, batch_size=settings.batch_size, normalize_embeddings=True,
                                           show_progress_bar=False)
                runs.append((time.perf_counter() - started, time.process_time() - cpu))
            raw_s, raw_cpu_s = min(runs)
            stored = version.vectors()
            max_diff = float(np.max(np.abs(stored - np.asarray(vectors, dtype=np.float32)))) if len(texts) else 0.0
            raw_rate = rate(len(texts), raw_s)
            pipeline_rate = rate(report.passages, build_s)
            ratio = pipeline_rate / raw_rate
            ratio_no_load = rate(report.passages, build_s - embedder.load_seconds) / raw_rate
            raw = {"raw_passages": len(texts), "raw_seconds": round(raw_s, 3), "raw_cpu_seconds": round(raw_cpu_s, 3),
                   "raw_runs_seconds": [round(r[0], 3) for r in runs], "raw_passages_per_s": round(raw_rate, 2),
                   "encode_in_build_vs_raw": round(raw_s / embedder.encode_seconds, 3)
                   if embedder.encode_seconds else None,
                   "pipeline_raw_ratio": round(ratio, 3), "pipeline_raw_ratio_excl_load": round(ratio_no_load, 3),
                   "embed_text_hash_mismatches": mismatches, "max_abs_vector_diff": max_diff}
            print()
            print(f"raw SentenceTransformer.encode of the same {len(texts)} passage texts "
                  f"(batch_size={settings.batch_size}, normalize_embeddings=True):")
            print(f"  seconds            {raw_s:.2f} s  (process CPU {raw_cpu_s:.2f} s"
                  + (f"; fastest of {len(runs)}: {', '.join(f'{r[0]:.2f}' for r in runs)}" if len(runs) > 1 else "")
                  + ")")
            print(f"  passages/s         {raw_rate:.1f}")
            print(f"  pipeline / raw     {ratio:.3f}  (target >= {PIPELINE_RAW_TARGET}: "
                  f"{verdict(ratio >= PIPELINE_RAW_TARGET)}); excluding model load {ratio_no_load:.3f}")
            if embedder.encode_seconds:
                print(f"  raw / in-build encode time  {raw_s / embedder.encode_seconds:.3f}  "
                      "(1.0 = the build's encode calls run at raw speed)")
            print(f"  sanity             {mismatches} embed-text hash mismatches, "
                  f"max |raw - indexed| vector diff {max_diff:.2e}")
        if args.raw_cold:
            command = [sys.executable, str(Path(__file__).resolve()), "--raw-cold-of", str(index_dir),
                       "--batch-size", str(settings.batch_size)]
            child = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
            cold = json.loads(child.stdout.strip().splitlines()[-1])
            cold_ratio = rate(report.passages, build_s) / rate(cold["raw_passages"], cold["raw_cold_seconds"])
            cold_ratio_no_load = rate(report.passages, build_s - embedder.load_seconds) / \
                rate(cold["raw_passages"], cold["raw_cold_seconds"])
            raw.update({"raw_cold_seconds": cold["raw_cold_seconds"], "raw_cold_load_seconds": cold["load_seconds"],
                        "pipeline_raw_cold_ratio": round(cold_ratio, 3),
                        "pipeline_raw_cold_ratio_excl_load": round(cold_ratio_no_load, 3)})
            print(f"raw encode in a fresh process: {cold['raw_cold_seconds']:.2f} s (model load before it "
                  f"{cold['load_seconds']:.2f} s, untimed); pipeline / raw cold {cold_ratio:.3f}, excluding the "
                  f"build's model load {cold_ratio_no_load:.3f}")

        # ---- 3. no-change re-index, new Embedder ------------------------------------------
        fresh = Embedder(settings.model)
        started = time.perf_counter()
        again = build_index(settings, fresh, full=False, progress=False)
        nochange_s = time.perf_counter() - started
        loaded = fresh._model is not None
        print()
        print(f"no-change re-index (in process, new Embedder): {again.summary()}")
        print(f"  seconds            {nochange_s:.2f} s  (target < {NOCHANGE_TARGET_S:.0f} s: "
              f"{verdict(nochange_s < NOCHANGE_TARGET_S)})")
        print(f"  model loaded       {'YES (unexpected)' if loaded else 'no'}; new version written: "
              f"{again.build_id or 'no'}")

        cli: dict = {}
        if not args.skip_cli:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
            command = [sys.executable, "-m", "cli.main", "index", "--quiet", "--content", str(content),
                       "--index-dir", str(index_dir)]
            started = time.perf_counter()
            proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            cli_s = time.perf_counter() - started
            cli = {"cli_nochange_seconds": round(cli_s, 3), "cli_nochange_exit": proc.returncode}
            print(f"no-change `kb index` in a fresh process: {cli_s:.2f} s, exit {proc.returncode}: "
                  f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]}")

        figures = {"bench": "index_build", "content": str(args.content), "limit": args.limit,
                   "worker_cpu_seconds": round(worker_cpu_s, 3),
                   "articles": report.articles, "passages": report.passages, "embedded": report.embedded,
                   "problems": len(report.problems), "build_seconds": round(build_s, 3),
                   "model_load_seconds": round(embedder.load_seconds, 3),
                   "encode_seconds": round(embedder.encode_seconds, 3), "other_seconds": round(other_s, 3),
                   "articles_per_s": round(rate(report.articles, build_s), 2),
                   "passages_per_s": round(rate(report.passages, build_s), 2),
                   "build_cpu_seconds": round(build_cpu_s, 3),
                   "encode_cpu_seconds": round(embedder.encode_cpu_seconds, 3),
                   "peak_rss_mb": round(rss_build, 1), **raw,
                   "nochange_seconds": round(nochange_s, 3), "nochange_model_loaded": loaded,
                   "nochange_new_version": again.build_id is not None, **cli,
                   "batch_size": settings.batch_size, "precision": embedder.precision,
                   "torch_threads": torch.get_num_threads(),
                   "profiled": bool(args.profile), "loadavg_1m_before": round(load1, 2), "final_peak_rss_mb": round(peak_rss_mb(), 1)}
        if args.keep and args.index_dir is None:
            print(f"\nindex kept in {index_dir}")
        print()
        print(json.dumps(figures))
        return 0
    finally:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
