"""Wall time of whole `kb search` / `kb suggest` commands, side by side: an older tree, in process here, --url."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["outlook keeps asking for password", "teams camera black screen in meetings",
           "550 5.7.124 sender not allowed distribution group", "onedrive stuck processing changes",
           "shared mailbox sent items not saved"]
TICKET = ("Hi team,\n\nSince this morning Outlook keeps popping up the password prompt every few minutes. I type my "
          "password and it comes back again. Webmail works fine.\n\nThanks,\nAnna Kowalski\nFinance Department")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(argv: list[str], cwd: Path, env: dict, stdin: str | None) -> tuple[float, float, str, str]:
    """(wall seconds, peak RSS MB, stdout, stderr) of one command run to its end."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True)
        if stdin is not None:
            proc.stdin.write(stdin)
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr}")
    return wall, usage.ru_maxrss / 1024, stdout, stderr


def start_server(index_dir: Path, env: dict, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server_env = {**env, "KB_FEEDBACK_DB": str(workdir / "feedback.sqlite"), "KB_USAGE_DB": str(workdir / "usage.sqlite"),
                  "KB_ANALYTICS_DB": str(workdir / "analytics.sqlite"), "KB_AUTH_DB": str(workdir / "auth.sqlite")}
    log = open(workdir / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--no-watch", "--index-dir", str(index_dir),
                             "--port", str(port)], cwd=REPO_ROOT, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    base, deadline = f"http://127.0.0.1:{port}", time.time() + 180
    while True:
        if proc.poll() is not None:
            raise SystemExit((workdir / "server.log").read_text())
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("kb serve did not come up")
        time.sleep(0.3)


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": len(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, required=True, help="an index folder (with CURRENT) to search")
    parser.add_argument("--before-tree", type=Path, help="a copy of an older commit to time as `before`, e.g. "
                        "`git archive <commit> | tar -x -C DIR` (run with this virtualenv)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each variant and command (default 7)")
    parser.add_argument("--no-url", action="store_true", help="leave out the variant through a running kb serve")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: 1-minute load average {load:.2f} at the start: figures are noisy", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="kb-cli-bench-"))
    # One model cache for every variant, so that no run exports the ONNX model (warm-up runs fill it).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KB_INDEX_DIR": str(args.index_dir.resolve()),
           "KB_MODEL_CACHE_DIR": str(scratch / "models"), "KB_USAGE_DB": str(scratch / "usage.sqlite"),
           "KB_FEEDBACK_DB": str(scratch / "feedback.sqlite"), "KB_ANALYTICS_DB": str(scratch / "analytics.sqlite")}
    variants: dict[str, tuple[Path, list[str]]] = {}
    if args.before_tree:
        variants["before"] = (args.before_tree.resolve(), [])
    variants["in_process"] = (REPO_ROOT, [])
    server = None
    if not args.no_url:
        server, base = start_server(args.index_dir.resolve(), env, scratch)
        variants["url"] = (REPO_ROOT, ["--url", base])
    commands = {"search": lambda n: (["search", QUERIES[n % len(QUERIES)], "-k", "5", "--json"], None),
                "suggest": lambda n: (["suggest", "-k", "5", "--json"], TICKET)}
    figures: dict = {"index_dir": str(args.index_dir), "loadavg_1m_before": round(load, 2), "variants": {}}
    try:
        def run(variant: str, command: str, n: int) -> tuple[float, float, dict]:
            cwd, extra = variants[variant]
            argv, stdin = commands[command](n)
            wall, rss, stdout, stderr = timed([sys.executable, "-m", "cli.main", *argv, *extra], cwd,
                                              {**env, "PYTHONPATH": str(cwd)}, stdin)
            return wall, rss, json.loads(stdout)

        for variant, command in itertools.product(variants, commands):  # warm-up: export, checked record, caches
            run(variant, command, 0)
        walls = {(v, c): [] for v in variants for c in commands}
        rss = {(v, c): [] for v in variants for c in commands}
        tops: dict = {}
        for n in range(args.runs):  # round robin, so that a busy moment of the machine hits every variant
            for command in commands:
                for variant in variants:
                    wall, peak, result = run(variant, command, n)
                    walls[variant, command].append(wall)
                    rss[variant, command].append(peak)
                    hits = result.get("results") or result.get("articles") or []
                    tops.setdefault((command, n), set()).add(hits[0]["id"] if hits else None)
        figures["same_top_article_in_every_variant"] = all(len(ids) == 1 for ids in tops.values())
        probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", "search", QUERIES[0], "--json"],
                               cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
        imported = {line.split("|")[-1].strip() for line in probe.stderr.splitlines() if line.startswith("import time")}
        figures["in_process_imports_torch"] = any(name == "torch" or name.startswith("torch.") for name in imported)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    for command in commands:
        print(f"kb {command} --json, {args.runs} runs each (wall seconds of the whole command; peak RSS):")
        for variant in variants:
            s = summary(walls[variant, command])
            s["peak_rss_mb"] = round(statistics.median(rss[variant, command]))
            figures["variants"].setdefault(variant, {})[command] = s
            print(f"  {variant:<11} median {s['median_s']:6.2f} s  min {s['min_s']:6.2f}  max {s['max_s']:6.2f}  "
                  f"RSS {s['peak_rss_mb']} MB")
        if "before" in variants:
            base_median = figures["variants"]["before"][command]["median_s"]
            for variant in variants:
                if variant != "before":
                    ratio = base_median / figures["variants"][variant][command]["median_s"]
                    figures["variants"][variant][command]["speedup_vs_before"] = round(ratio, 1)
                    print(f"  before / {variant}: {ratio:.1f}x")
    print(f"same top article in every variant: {figures['same_top_article_in_every_variant']}; "
          f"in-process query imports torch: {figures['in_process_imports_torch']}")
    figures["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
