"""Open files of `kb serve` across index version swaps under concurrent searches: copies of one built version are
put into service in turn (CURRENT switched, the service follows it) while clients search; the server's open file
descriptors (/proc/<pid>/fd) are counted after every swap."""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from kb import integrity  # noqa: E402
from kb.index.faiss_sqlite import store  # noqa: E402

QUERIES = ["outlook password prompt", "teams camera black screen", "onedrive sync stuck", "mailbox full",
           "shared mailbox sent items", "excel formula wrong result", "sharepoint access denied", "word crashes"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_versions(source: Path, target: Path, n: int) -> list[str]:
    """`n` copies of the version `source` names, each under its own build id with a sealed manifest (files'
    checksums computed here when the source was built before them)."""
    current = store.current_id(source)
    target.mkdir(parents=True)
    ids = []
    for _ in range(n):
        build_id = store.new_build_id()
        folder = target / build_id
        shutil.copytree(source / current, folder)
        manifest = store.read_manifest(folder)
        manifest.update(build_id=build_id, files=integrity.file_checksums(folder, store.CHECKED_FILES))
        (folder / store.MANIFEST).write_text(json.dumps(integrity.seal(manifest), indent=2, sort_keys=True))
        ids.append(build_id)
    store.switch_current(target, ids[0])
    return ids


def serving(base: str) -> str | None:
    """The version /healthz names; None when it does not answer (a server out of file descriptors)."""
    try:
        return httpx.get(base + "/healthz", timeout=10).json().get("index_version")
    except (httpx.HTTPError, ValueError):
        return None


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, default=Path("/tmp/serve-bench/office-idx"),
                        help="a built index folder (only read; its current version is copied)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="code the server runs (e.g. an export of an "
                                                                      "older commit, for a before figure)")
    parser.add_argument("--swaps", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--versions", type=int, default=3, help="copies swapped in turn")
    parser.add_argument("--max-open-files", type=int, default=0,
                        help="the server's limit of open files (RLIMIT_NOFILE; 0: inherited), e.g. 256")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="kb-swaps-"))
    index_dir = work / "index"
    ids = copy_versions(args.index, index_dir, args.versions)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(args.repo), "KB_LOG_LEVEL": "warning",
           "KB_RELOAD_POLL_SECONDS": "0.2", "KB_FEEDBACK_DB": str(work / "fb.sqlite"),
           "KB_USAGE_DB": str(work / "usage.sqlite"), "KB_ANALYTICS_DB": str(work / "analytics.sqlite"),
           "KB_MAX_IN_FLIGHT": "0"}  # no admission limit: as many request threads as clients
    log_path = work / "server.log"

    def limit_files() -> None:
        if args.max_open_files:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.max_open_files, args.max_open_files))

    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--no-watch", "--index-dir",
                                 str(index_dir), "--port", str(port)], env=env, cwd=args.repo, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=limit_files)
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            i = n
            while not stop.is_set():
                try:
                    ok = http.get("/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 5}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["ok" if ok else "failed"] += 1
                i += 1

    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"server did not come up:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        fds = [open_files(proc.pid)]
        print(f"server pid {proc.pid}, {args.clients} clients, start: {fds[0]} open files, {rss_mb(proc.pid):.0f} MB")
        started, stuck = time.perf_counter(), None
        for n in range(1, args.swaps + 1):
            target = ids[n % len(ids)]
            store.switch_current(index_dir, target)
            until = time.time() + 60
            while serving(base) != target and time.time() < until and proc.poll() is None:
                time.sleep(0.05)
            if serving(base) != target:
                stuck = n
                errors = [line for line in log_path.read_text().splitlines() if "rror" in line]
                print(f"swap {n} to {target} not seen in 60 s; the server's last error: "
                      f"{errors[-1] if errors else '(none logged)'}")
                break
            time.sleep(0.5)  # requests on the replaced version finish
            fds.append(open_files(proc.pid))
            if n % 10 == 0 or n == args.swaps:
                print(f"swap {n:3d}: {fds[-1]} open files, {rss_mb(proc.pid):.0f} MB, "
                      f"{counts['ok']} ok / {counts['failed']} failed requests")
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        result = {"bench": "version_swaps", "repo": str(args.repo), "swaps": args.swaps, "clients": args.clients,
                  "max_open_files": args.max_open_files or None, "stuck_at_swap": stuck,
                  "open_files_start": fds[0], "open_files_max": max(fds), "open_files_end": fds[-1],
                  "open_files_after_each_swap": fds[1:], "rss_mb_end": round(rss_mb(proc.pid)),
                  "requests_ok": counts["ok"], "requests_failed": counts["failed"],
                  "seconds": round(time.perf_counter() - started, 1)}
        print(f"open files: start {fds[0]}, max {max(fds)}, end {fds[-1]}; requests {counts['ok']} ok, "
              f"{counts['failed']} failed")
        print(json.dumps(result))
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
