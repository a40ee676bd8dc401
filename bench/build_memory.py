"""Peak memory and wall time of a full `kb index --full` from the embedding cache, trees side by side (issue 15).

Each build runs `python -m cli.main index --full --quiet` in a child process, in a fresh index folder holding a copy of
an embedding cache (so nothing is embedded: the build's own memory, not the model's work), with the child's code from
its tree (`--tree`, default this checkout; give an old commit's `git worktree` as another). Builds alternate between
the trees, `--repeat` rounds. Per build: wall seconds, peak RSS (ru_maxrss from wait4), the largest anonymous RSS seen
by polling /proc/<pid>/status every 0.2 s (RSS minus file-backed pages such as a memory-mapped vectors.faiss),
passages, and the sha256 of the version's vectors.faiss (the same bytes from every tree = the same vectors, same
order). Ends with one JSON line.

  .venv/bin/python bench/build_memory.py --content /tmp/growth/content-4x \
      --cache /tmp/serve-bench/office-idx/embed-cache.sqlite --tree /tmp/stream/base --tree .
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def rss_anon_kb(pid: int) -> int:
    """RssAnon of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def build(tree: Path, content: Path, cache: Path, index_dir: Path) -> dict:
    """One full build in a child process with `tree`'s code; its figures."""
    index_dir.mkdir(parents=True)
    shutil.copyfile(cache, index_dir / "embed-cache.sqlite")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "cli.main", "index", "--full", "--quiet", "--content", str(content),
               "--index-dir", str(index_dir)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_anon = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], rss_anon_kb(proc.pid))
            done.wait(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        done.set()
        poller.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"build in {tree} failed ({proc.returncode}):\n{output[-2000:]}")
    version = index_dir / (index_dir / "CURRENT").read_text().strip()
    manifest = json.loads((version / "manifest.json").read_text())
    with open(version / "vectors.faiss", "rb") as handle:
        vectors_sha = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"tree": str(tree), "passages": manifest["counts"]["passages"], "articles": manifest["counts"]["articles"],
            "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "peak_anon_mb": round(peak_anon[0] / 1024, 1),
            "vectors_sha256": vectors_sha, "summary": output.strip().splitlines()[-1] if output.strip() else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", type=Path, required=True, help="content folder to build")
    parser.add_argument("--cache", type=Path, required=True, help="an embed-cache.sqlite holding the passages' vectors")
    parser.add_argument("--tree", type=Path, action="append", help="a checkout whose code builds (repeatable; "
                                                                    "default: this one)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of one build per tree (default 1)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where index folders go (default: a temp folder)")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [REPO_ROOT])]
    work = Path(tempfile.mkdtemp(prefix="kb-build-memory-", dir=args.work_dir))
    load_before = os.getloadavg()
    runs = []
    try:
        for round_ in range(args.repeat):
            for n, tree in enumerate(trees):
                figures = build(tree, args.content.resolve(), args.cache.resolve(), work / f"r{round_}-t{n}")
                shutil.rmtree(work / f"r{round_}-t{n}")
                runs.append(figures)
                print(f"round {round_ + 1} {tree}: {figures['passages']} passages, wall {figures['wall_s']:.1f} s "
                      f"(CPU {figures['cpu_s']:.1f} s), peak RSS {figures['peak_rss_mb']:.0f} MB, peak anonymous "
                      f"{figures['peak_anon_mb']:.0f} MB, vectors {figures['vectors_sha256'][:12]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    best = {str(t): {k: min(r[k] for r in runs if r["tree"] == str(t)) for k in ("wall_s", "peak_rss_mb",
                                                                              "peak_anon_mb")} for t in trees}
    first = best[str(trees[0])]
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
          f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    for tree in trees:
        b = best[str(tree)]
        print(f"{tree}: best wall {b['wall_s']:.1f} s ({b['wall_s'] / first['wall_s']:.2f}x the first tree), peak RSS "
              f"{b['peak_rss_mb']:.0f} MB ({b['peak_rss_mb'] / first['peak_rss_mb']:.2f}x), peak anonymous "
              f"{b['peak_anon_mb']:.0f} MB")
    same = len({r["vectors_sha256"] for r in runs}) == 1
    print(f"vectors.faiss identical across every build: {same}")
    print(json.dumps({"bench": "build_memory", "content": str(args.content), "runs": runs, "best": best,
                      "vectors_identical": same, "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in load_after]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
