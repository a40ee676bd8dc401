"""Hostile bodies against a real `kb serve`: a huge JSON body (Content-Length and chunked), lone surrogates on one
keep-alive connection, a foreign Host header. Prints the server's peak RSS and the time to an answer; bounded by
--timeout and --rss-limit-mb (the server is killed past it), so that it can also be pointed at an older commit
(--repo) that still reads such a body whole."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from suggest_latency import REPO_ROOT, Server, _raise_interrupt, free_port  # bench/ is on sys.path

FIXTURE_CONTENT = REPO_ROOT / "tests" / "fixtures" / "content"
CHUNK = b"a" * (1 << 20)


class RepoServer(Server):
    """`python -m cli.main serve --no-watch` run from `repo` (this checkout, or an older one to compare with)."""

    def __init__(self, index_dir: Path, port: int, repo: Path, env: dict[str, str]):
        super().__init__(index_dir, port, "warning")
        self.repo, self.env = repo, env

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "KB_LOG_LEVEL": self.log_level, "PYTHONPATH": str(self.repo),
               **self.env}
        command = [sys.executable, "-m", "cli.main", "serve", "--index-dir", str(self.index_dir), "--host",
                   "127.0.0.1", "--port", str(self.port), "--no-watch"]
        self.proc = subprocess.Popen(command, cwd=self.repo, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssWatch:
    """Samples a process's RSS every 20 ms; kills it (SIGKILL) once it passes `limit_mb`."""

    def __init__(self, pid: int, limit_mb: float):
        self.pid, self.limit_mb, self.peak, self.killed = pid, limit_mb, 0.0, False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            rss = rss_mb(self.pid)
            self.peak = max(self.peak, rss)
            if rss > self.limit_mb and not self.killed:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)

    def __enter__(self) -> RssWatch:
        self.peak = rss_mb(self.pid)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line and headers, body bytes already received); (b"", b"") when the server closed without answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError, socket.timeout):
            return b"", b""
        if not chunk:
            return b"", b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def huge_body(port: int, size: int, chunked: bool, timeout: float, rss_limit_mb: float, pid: int) -> dict:
    """POST /api/suggest with a `size`-byte JSON body sent in 1 MiB pieces; what the server did and what it cost."""
    head = b'{"body": "'
    tail = b'"}'
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n".encode()
    request = (f"POST /api/suggest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               .encode() + framing + b"\r\n")
    sent = {"bytes": 0, "error": None}
    answered = threading.Event()

    def piece(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

    def send_body(sock: socket.socket) -> None:
        try:
            sock.sendall(piece(head))
            left = size - len(head) - len(tail)
            while left > 0 and not answered.is_set():
                data = CHUNK if left >= len(CHUNK) else CHUNK[:left]
                sock.sendall(piece(data))
                sent["bytes"] += len(data)
                left -= len(data)
            if not answered.is_set():
                sock.sendall(piece(tail) + (b"0\r\n\r\n" if chunked else b""))
        except OSError as exc:  # the server closed the connection: it answered without reading the rest
            sent["error"] = type(exc).__name__

    baseline = rss_mb(pid)
    with RssWatch(pid, rss_limit_mb) as watch, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(timeout)
        started = time.perf_counter()
        sock.sendall(request)
        sender = threading.Thread(target=send_body, args=(sock,), daemon=True)
        sender.start()
        status_line = read_head(sock)[0].split(b"\r\n", 1)[0].decode("latin-1")
        seconds = time.perf_counter() - started
        answered.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sender.join(timeout=30)
    return {"framing": "chunked" if chunked else "content-length", "body_mb": round(size / 2**20),
            "status": status_line or ("server killed at the RSS limit" if watch.killed else "no answer"),
            "seconds_to_answer": round(seconds, 3), "mb_sent_before_answer": round(sent["bytes"] / 2**20, 1),
            "sender_stopped_by": sent["error"], "server_rss_mb_before": round(baseline),
            "server_rss_mb_peak": round(watch.peak), "server_rss_mb_growth": round(watch.peak - baseline),
            "killed_at_rss_limit": watch.killed}


def read_response(sock: socket.socket) -> tuple[int, bool]:
    """(status, whether the server closed the connection after it); status 0 when it closed without answering."""
    head, body = read_head(sock)
    if not head:
        return 0, True
    lines = head.split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    length = int(fields.get(b"content-length", b"0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closing = fields.get(b"connection", b"").lower() == b"close"
    return int(lines[0].split()[1]), closing


def surrogates_on_one_connection(port: int, rounds: int) -> dict:
    """Requests with a lone surrogate in their JSON, each followed by a good one, on one keep-alive connection:
    how they were answered and how often the client had to open a new connection."""
    def post(path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    requests = [post("/api/suggest", b'{"subject": "\\ud800", "body": "outlook asks for my password"}'),
                post("/api/feedback", b'{"query": "\\udfff", "article_id": "x", "helpful": true}'),
                post("/api/suggest", b'{"body": "outlook keeps asking for my password"}')]
    statuses: dict[str, int] = {}
    opened, failures = 1, 0
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        for _ in range(rounds):
            for request in requests:
                try:
                    sock.sendall(request)
                    status, closing = read_response(sock)
                except OSError:
                    status, closing = 0, True
                if status == 0:
                    failures += 1
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if closing:
                    sock.close()
                    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                    opened += 1
    finally:
        sock.close()
    return {"requests": rounds * len(requests), "statuses": statuses, "closed_without_answer": failures,
            "tcp_connections_opened": opened}


def foreign_host(url: str) -> dict:
    out = {}
    for host in ("127.0.0.1", "localhost", "attacker.example"):
        response = httpx.get(url + "/healthz", headers={"Host": host}, timeout=10)
        out[host] = response.status_code
    return out


def ensure_index(index_dir: Path | None, repo: Path) -> Path:
    """The given index folder, or one built from the test fixtures (8 articles) in a temporary folder."""
    if index_dir is not None:
        return index_dir.resolve()
    folder = Path(tempfile.mkdtemp(prefix="kb-bench-hostile-")) / "index"
    print(f"building an index of {FIXTURE_CONTENT} into {folder} ...", flush=True)
    subprocess.run([sys.executable, "-m", "cli.main", "index", "--content", str(FIXTURE_CONTENT), "--index-dir",
                    str(folder), "--quiet"], cwd=repo, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                             "PYTHONPATH": str(repo)}, check=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, help="index to serve (default: build one from tests/fixtures)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT,
                        help="checkout whose `kb serve` runs (default this one; e.g. a `git archive` of an older commit)")
    parser.add_argument("--body-mb", type=int, default=1024, help="size of the huge body in MiB (default 1024)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for an answer (default 180)")
    parser.add_argument("--rss-limit-mb", type=float, default=6000.0,
                        help="kill the server when its RSS passes this (default 6000)")
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the keep-alive surrogate test (default 50)")
    parser.add_argument("--only", choices=("content-length", "chunked", "surrogates", "host"), action="append",
                        help="run only these parts (repeatable; default all)")
    args = parser.parse_args(argv)
    parts = args.only or ["content-length", "chunked", "surrogates", "host"]
    index_dir = ensure_index(args.index_dir, args.repo.resolve())
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    result: dict = {"bench": "hostile_input", "repo": str(args.repo.resolve()), "loadavg_1m": os.getloadavg()[0]}
    for part in parts:
        server = RepoServer(index_dir, free_port(), args.repo.resolve(), {})
        try:
            server.start()
            with httpx.Client() as client:
                server.wait_healthy(client, 180)
            if part in ("content-length", "chunked"):
                figures = huge_body(server.port, args.body_mb << 20, part == "chunked", args.timeout,
                                    args.rss_limit_mb, server.proc.pid)
            elif part == "surrogates":
                figures = surrogates_on_one_connection(server.port, args.rounds)
            else:
                figures = foreign_host(server.url)
            result[part] = figures
            print(f"{part}: {json.dumps(figures)}", flush=True)
        finally:
            server.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
