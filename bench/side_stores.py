"""Side stores under faults and floods, against a real `kb serve`: does it start, what do searches, feedback and events
answer, what does the log say, and how fast can one client grow the feedback file. Needs root for the faults (read-only
bind mounts, a 1 MB tmpfs); --repo points it at an older checkout to compare with. Bounded by --seconds and --timeout."""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from hostile_input import RepoServer  # bench/ is on sys.path
from suggest_latency import REPO_ROOT, free_port

SEARCHES = ("outlook keeps asking for my password", "teams microphone not working", "onedrive sync stuck")
ARTICLE = "Outlook/outlook-password-prompt"


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def read_only(path: Path) -> None:
    sh("mount", "--bind", str(path), str(path))
    sh("mount", "-o", "remount,bind,ro", str(path))


def fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def seed_feedback(path: Path, repo: Path) -> None:
    """A feedback file with one answer, written by the code under test (WAL, as the service leaves it)."""
    code = ("import sys; from pathlib import Path; from kb.feedback import FeedbackStore; "
            "FeedbackStore(Path(sys.argv[1])).record('', sys.argv[2], True, source='article')")
    subprocess.run([sys.executable, "-c", code, str(path), ARTICLE], cwd=repo, check=True,
                   env={**os.environ, "PYTHONPATH": str(repo)})


def tally(responses: list) -> dict[str, int]:
    return dict(collections.Counter(str(r) for r in responses))


def status(client: httpx.Client, method: str, path: str, **kwargs) -> str:
    """The status code, with the error code for 4xx/5xx JSON, or the transport error (a dropped connection)."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        return type(exc).__name__
    try:
        code = response.json()["error"]["code"] if response.status_code >= 400 else ""
    except (ValueError, KeyError, TypeError):
        code = ""
    return f"{response.status_code} {code}".strip()


def log_figures(text: str) -> dict:
    stores = {store: {"cannot_be_written": len(re.findall(rf"{store} store cannot be written", text)),
                      "written_again": len(re.findall(rf"{store} store is written again", text))}
              for store in ("feedback", "usage", "analytics")}
    return {"lines": len(text.splitlines()), "tracebacks": text.count("Traceback"),
            "error_lines": sum(1 for line in text.splitlines() if line.startswith("ERROR")), "stores": stores}


def fault_scenario(name: str, index_dir: Path, repo: Path, rounds: int, timeout: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"kb-side-{name}-"))
    stores, mounts = root / "stores", []
    stores.mkdir()
    env = {"KB_FEEDBACK_DB": str(stores / "feedback.sqlite"), "KB_USAGE_DB": str(stores / "usage.sqlite"),
           "KB_ANALYTICS_DB": str(stores / "analytics.sqlite"), "KB_AUTH_DB": str(root / "auth.sqlite"),
           "KB_WEBHOOK_DB": str(root / "webhooks.sqlite")}
    if name == "read-only-folder":
        read_only(stores)
        mounts.append(stores)
    elif name == "read-only-feedback-file":
        seed_feedback(stores / "feedback.sqlite", repo)
        read_only(stores / "feedback.sqlite")
        mounts.append(stores / "feedback.sqlite")
    elif name == "full-disk":
        sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stores))
        mounts.append(stores)
    server = RepoServer(index_dir, free_port(), repo, {**env, "KB_LOG_LEVEL": "info"})
    result: dict = {"scenario": name}
    started = time.monotonic()
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            try:
                server.wait_healthy(client, timeout)
            except RuntimeError as exc:
                result["started"] = False
                result["why"] = [line for line in str(exc).splitlines() if "Error" in line][-1:]
                return result
            result["started"], result["start_seconds"] = True, round(time.monotonic() - started, 1)
            if name == "full-disk":
                assert status(client, "POST", "/api/feedback", json={"query": "q", "article_id": ARTICLE,
                                                                      "helpful": True}).startswith("201")
                fill(stores)
            answers: dict[str, list] = collections.defaultdict(list)
            for n in range(rounds):
                answers["GET /api/search"].append(status(client, "GET", "/api/search",
                                                         params={"q": SEARCHES[n % 3]}))
                answers["POST /api/suggest"].append(status(client, "POST", "/api/suggest", json={
                    "subject": "Outlook password", "body": "Outlook asks for my password again"}))
                answers["POST /api/feedback"].append(status(client, "POST", "/api/feedback", json={
                    "query": "outlook password", "article_id": ARTICLE, "helpful": n % 2 == 0}))
                answers["POST /api/events"].append(status(client, "POST", "/api/events", json={
                    "kind": "copy", "article_id": ARTICLE, "source": "page"}))
                answers["GET /api/feedback/summary"].append(status(client, "GET", "/api/feedback/summary"))
            time.sleep(1.5)  # the event log's writer takes its batch (0.5 s linger) and finds it cannot write
            answers["POST /api/events (after the writer's batch)"].append(status(client, "POST", "/api/events", json={
                "kind": "copy", "article_id": ARTICLE, "source": "page"}))
            answers["GET /api/search (last)"].append(status(client, "GET", "/api/search", params={"q": "outlook"}))
            result["answers"] = {route: tally(values) for route, values in answers.items()}
    finally:
        server.stop()
        result["log"] = log_figures(Path(server.log.name).read_text(errors="replace"))
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return result


def flood(index_dir: Path, repo: Path, seconds: float, timeout: float) -> dict:
    """One client posting feedback as fast as it can: first 20,000-character queries about random article ids (the
    issue's flood), then valid answers (a real article, a short query), each from the start of a one-minute window;
    what was answered, and how many answers and how much text were stored."""
    root = Path(tempfile.mkdtemp(prefix="kb-side-flood-"))
    env = {"KB_FEEDBACK_DB": str(root / "feedback.sqlite"), "KB_USAGE_DB": str(root / "usage.sqlite"),
           "KB_ANALYTICS_DB": str(root / "analytics.sqlite"), "KB_AUTH_DB": str(root / "auth.sqlite"),
           "KB_WEBHOOK_DB": str(root / "webhooks.sqlite"), "KB_MAX_IN_FLIGHT": "0"}
    server = RepoServer(index_dir, free_port(), repo, env)
    server.start()
    chance = random.Random(14)
    result: dict = {}

    def stored() -> tuple[int, int]:
        """(answers, bytes of query and article id) in the feedback table, read as another process would."""
        if not (root / "feedback.sqlite").is_file():
            return 0, 0
        with sqlite3.connect(f"file:{root / 'feedback.sqlite'}?mode=ro", uri=True) as db:
            rows, text = db.execute("SELECT count(*), coalesce(sum(length(query) + length(article_id)), 0) "
                                    "FROM feedback").fetchone()
        return rows, text

    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            server.wait_healthy(client, timeout)
            for name, body in (("20,000-character queries, random article ids",
                                lambda: {"query": "x" * 20_000, "helpful": True,
                                         "article_id": f"Flood/{chance.getrandbits(64):016x}"}),
                               ("valid answers", lambda: {"query": "outlook password", "article_id": ARTICLE,
                                                          "helpful": True})):
                time.sleep(60 - time.time() % 60)  # each flood starts with a fresh one-minute rate window
                before, answers, sent = stored(), [], 0
                started = time.monotonic()
                while time.monotonic() - started < seconds:
                    payload = json.dumps(body()).encode()
                    sent += len(payload)
                    answers.append(status(client, "POST", "/api/feedback", content=payload,
                                          headers={"content-type": "application/json"}))
                elapsed = time.monotonic() - started
                rows, text = (after - earlier for after, earlier in zip(stored(), before))
                result[name] = {"seconds": round(elapsed, 1), "requests_per_s": round(len(answers) / elapsed, 1),
                                "answers": tally(answers), "sent_mb_per_s": round(sent / elapsed / 1e6, 3),
                                "rows_stored": rows, "stored_text_kb_per_s": round(text / elapsed / 1e3, 1)}
            summary = client.get("/api/feedback/summary")
            result["summary"] = {"bytes": len(summary.content),
                                 "articles_listed": len(summary.json().get("articles", []))}
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, required=True, help="an index built by the code under test")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to run (default: this one)")
    parser.add_argument("--rounds", type=int, default=5, help="requests per route in each fault scenario")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each flood")
    parser.add_argument("--timeout", type=float, default=180.0, help="longest wait for a server to come up")
    args = parser.parse_args()
    figures: dict = {"repo": str(args.repo), "load_average": os.getloadavg()[0]}
    if os.geteuid() == 0:
        figures["faults"] = [fault_scenario(name, args.index_dir, args.repo, args.rounds, args.timeout)
                             for name in ("read-only-folder", "read-only-feedback-file", "full-disk")]
    else:
        print("not root: the fault scenarios (bind mounts, tmpfs) are skipped", file=sys.stderr)
    figures["flood"] = flood(args.index_dir, args.repo, args.seconds, args.timeout)
    for scenario in figures.get("faults", []):
        print(f"\n== {scenario['scenario']}: started {scenario['started']}"
              + (f" in {scenario['start_seconds']} s" if scenario["started"] else f": {scenario.get('why')}"))
        for route, answers in scenario.get("answers", {}).items():
            print(f"   {route}: {answers}")
        print(f"   log: {scenario['log']}")
    for name, flood_figures in figures["flood"].items():
        print(f"\n== flood, {name}: {flood_figures}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
