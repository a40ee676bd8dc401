"""Latency of POST /api/suggest and GET /api/search against the real `kb serve` process over loopback."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SUGGEST_P50_TARGET_MS = 30.0
SUGGEST_P99_TARGET_MS = 100.0

# Realistic helpdesk tickets: greetings, signatures, disclaimers, quoted replies, pasted codes and logs.
TICKETS: list[dict] = [
    {"subject": "Outlook keeps asking for my password",
     "body": "Hi team,\n\nSince this morning Outlook keeps popping up the password prompt every few minutes. "
             "I type my password and it comes back again. Webmail works fine.\n\nThanks,\nAnna Kowalski\n"
             "Finance Department | Contoso Ltd\n+44 20 7946 0958"},
    {"subject": "Cannot send email - error 0x800CCC0E",
     "body": "Hello,\n\nWhen I try to send an email from Outlook I get this error:\n"
             "Sending reported error (0x800CCC0E): 'Outlook cannot connect to your outgoing (SMTP) e-mail server.'\n"
             "Receiving works. Please help.\n\nRegards,\nMark"},
    {"subject": "Teams sign in fails AADSTS50076",
     "body": "Dear support,\n\nI can't sign in to Teams on my new laptop. It says:\n"
             "AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new "
             "location, you must use multi-factor authentication to access.\n"
             "My phone was replaced last week.\n\nBest regards,\nJohn Smith\nIT Coordinator"},
    {"subject": "OneDrive stuck on 'Processing changes'",
     "body": "Hi,\nOneDrive has been showing 'Processing changes' for two days and my files in the Documents folder "
             "are not syncing to the cloud. I already restarted the PC.\n\nSent from my iPhone"},
    {"subject": "RE: NDR 550 5.1.1 when emailing a customer",
     "body": "Hi again,\n\nStill getting the bounce below when I email our customer.\n\n"
             "Remote Server returned '550 5.1.1 RESOLVER.ADR.ExRecipNotFound; not found'\n\n"
             "On Mon, 3 Jun 2024 at 10:12, Helpdesk <helpdesk@contoso.com> wrote:\n"
             "> Can you send us the full NDR?\n\nThanks\nPeter"},
    {"subject": "Shared mailbox sent items",
     "body": "Good morning,\n\nWhen I send from the shared mailbox sales@contoso.com the message is saved in my own "
             "Sent Items, not in the shared mailbox Sent Items folder. Colleagues can't see what was sent.\n\n"
             "Kind regards,\nMaria Garcia\nSales Operations Manager"},
    {"subject": "Mailbox full",
     "body": "Hello IT,\n\nI got a warning that my mailbox is almost full and now I can't send emails. "
             "Can you increase the mailbox size? It's an Exchange Online mailbox.\n\nCheers,\nTom"},
    {"subject": "Teams camera not working in meetings",
     "body": "Hi there,\nIn Teams meetings my camera shows a black screen, other apps can use the camera fine. "
             "New Teams app, Windows 11.\nThanks in advance!\n\n--\nLisa Chen\nMarketing Specialist\n"
             "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and intended solely for "
             "the addressee."},
    {"subject": "Office says Unlicensed Product",
     "body": "Hi,\n\nWord and Excel show a red bar 'Unlicensed Product' and most features are disabled. "
             "I am signed in with my work account. Error code 0xC004F038 appears in the activation window.\n\n"
             "Regards,\nDavid"},
    {"subject": "Access denied opening SharePoint link",
     "body": "Dear helpdesk,\n\nA colleague shared a SharePoint folder with me but I get 'Access Denied - you need "
             "permission to access this item'. I requested access yesterday and nothing happened.\n\n"
             "Thank you,\nRobert Brown"},
    {"subject": "Outlook tidak bisa kirim email",
     "body": "Selamat pagi,\n\nSaya tidak bisa mengirim email dari Outlook sejak kemarin. Muncul pesan error "
             "0x800CCC0E dan email tertahan di Outbox.\nMohon bantuannya.\n\nTerima kasih,\nBudi Santoso\n"
             "Divisi Keuangan"},
    {"subject": "Outlook terus minta password",
     "body": "Halo tim IT,\n\nOutlook di laptop saya terus meminta kata sandi setiap kali dibuka, padahal sudah "
             "saya masukkan dengan benar. Di webmail bisa login.\n\nSalam,\nSiti Rahmawati"},
    {"subject": "Tidak bisa login Teams - AADSTS50079",
     "body": "Dengan hormat,\n\nSaat login ke Microsoft Teams muncul kode AADSTS50079 dan diminta mendaftarkan "
             "MFA, tetapi aplikasi Authenticator di HP baru saya belum diatur.\nMohon dibantu.\n\n"
             "Hormat saya,\nAndi Wijaya\nStaf Administrasi"},
    {"subject": "OneDrive tidak sinkron",
     "body": "Hai kak,\nFile di OneDrive saya tidak sinkron, ikonnya terus berputar dan beberapa file tertahan. "
             "Sudah restart laptop tapi tetap sama.\n\nMakasih\nDewi\n\nDikirim dari Outlook untuk Android"},
    {"subject": "Kotak surat penuh",
     "body": "Selamat siang Pak,\n\nKotak surat Exchange saya penuh dan tidak bisa menerima email dari pelanggan. "
             "Apakah kuota bisa ditambah?\n\nTerima kasih atas perhatiannya.\nRina\nPT Maju Jaya Tbk"},
    {"subject": "Kamera dan mikrofon Teams tidak berfungsi",
     "body": "Halo,\n\nDi rapat Teams mikrofon saya tidak terdeteksi dan kamera hitam. Di aplikasi lain normal. "
             "Mohon solusinya.\n\nSalam hangat,\nAgus"},
    {"subject": "Akses ditolak saat membuka file SharePoint",
     "body": "Pagi tim,\n\nRekan saya membagikan file SharePoint tapi saya mendapat pesan \"Akses ditolak\". "
             "Saya sudah minta akses tapi belum ada respon.\n\nTerima kasih sebelumnya,\nFajar"},
    {"subject": "FW: 5.7.57 Client was not authenticated",
     "body": "Hi,\n\nOur scanner can no longer send email through smtp.office365.com. The log shows:\n"
             "2024-06-03 09:14:22 ERROR 530 5.7.57 Client not authenticated to send mail. [AM0PR02CA0001]\n"
             "2024-06-03 09:14:22 INFO retrying in 60s\n\nPlease advise.\n\nRegards,\nFacilities"},
    {"subject": "Autodiscover fails for new Outlook profile",
     "body": "Hello,\n\nCreating a new Outlook profile fails: Outlook cannot log on, Autodiscover does not find "
             "the Exchange Online mailbox settings. Error 0x8004010F shown when sending/receiving.\n\n"
             "Thanks a lot,\nKevin O'Neill\nSystems Administrator | Fabrikam Inc"},
    {"subject": "Excel crashes when opening a file",
     "body": "Hi support,\n\nExcel stops responding and then crashes every time I open our budget workbook from "
             "SharePoint. Other files open fine. I'm on Microsoft 365 Apps, Current Channel.\n\n"
             "I hope you can help.\nBest,\nSarah"},
]

SEARCH_QUERIES = [
    "outlook password prompt", "0x800CCC0E", "teams sign in error", "AADSTS50076", "onedrive not syncing",
    "shared mailbox sent items", "mailbox full", "550 5.1.1", "teams camera black", "unlicensed product",
    "sharepoint access denied", "outlook tidak bisa kirim email", "kata sandi outlook", "onedrive tidak sinkron",
    "kotak surat penuh", "clear teams cache", "autodiscover", "excel crash", "recover unsaved word document",
    "free/busy",
]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summarise(latencies_s: list[float], wall_s: float, errors: int) -> dict:
    ms = sorted(x * 1000.0 for x in latencies_s)
    return {"requests": len(ms), "errors": errors, "p50_ms": round(percentile(ms, 50), 2),
            "p90_ms": round(percentile(ms, 90), 2), "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(ms[-1], 2) if ms else None, "mean_ms": round(sum(ms) / len(ms), 2) if ms else None,
            "requests_per_s": round(len(ms) / wall_s, 2) if wall_s > 0 else None, "wall_s": round(wall_s, 3)}


class Server:
    """`python -m cli.main serve` as a child process; output goes to a log file; stopped by its pid."""

    def __init__(self, index_dir: Path, port: int, log_level: str, root: Path = REPO_ROOT, env: dict | None = None):
        self.index_dir, self.port, self.log_level = index_dir, port, log_level
        self.root, self.env = root, env or {}  # root: the source tree to serve from (bench/http_ab.py: two trees)
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="kb-bench-serve-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {"KB_MAX_IN_FLIGHT": "0",  # capacity, not admission (bench/overload.py measures that)
               **os.environ, **self.env, "HF_HUB_OFFLINE": "1", "KB_LOG_LEVEL": self.log_level,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "cli.main", "serve", "--index-dir", str(self.index_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--no-watch"]  # measure serving only
        self.proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_healthy(self, client: httpx.Client, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} before it was healthy\n"
                                   + self.log_tail())
            try:
                response = client.get(f"{self.url}/healthz", timeout=2.0)
                if response.status_code == 200:
                    return response.json()
                last = f"{response.status_code} {response.text[:300]}"
                if response.status_code == 503:  # up, but no usable index: waiting will not help
                    raise RuntimeError(f"server has no usable index: {last}")
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout:.0f}s (last: {last})\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = Path(self.log.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "--- server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on SIGINT/SIGTERM
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def run_load(make_request, count: int, concurrency: int) -> tuple[list[float], float, int, list[str]]:
    """Send `count` requests (make_request(client, i) -> response) with `concurrency` threads."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counter = itertools.count()

    def worker() -> None:
        with httpx.Client(timeout=30.0) as client:
            while True:
                i = next(counter)
                if i >= count:
                    return
                started = time.perf_counter()
                try:
                    response = make_request(client, i)
                    ok = response.status_code == 200
                    detail = "" if ok else f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                elapsed = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        failures.append(detail)

    started = time.perf_counter()
    if concurrency <= 1:
        worker()
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for future in [pool.submit(worker) for _ in range(concurrency)]:
                future.result()
    return latencies, time.perf_counter() - started, len(failures), failures[:5]


def print_figures(name: str, figures: dict, targets: dict[str, float] | None = None) -> None:
    targets = targets or {}
    print(f"{name}: {figures['requests']} ok, {figures['errors']} errors, {figures['requests_per_s']} req/s "
          f"over {figures['wall_s']} s")
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"):
        value = figures[key]
        line = f"  {key[:-3]:<5} {value:8.2f} ms" if value is not None else f"  {key[:-3]:<5}      n/a"
        if key in targets and value is not None:
            line += f"   (target <= {targets[key]:.0f} ms: {'OK' if value <= targets[key] else 'MISS'})"
        print(line)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, default=Path("var/index"),
                        help="index folder the server serves (default var/index)")
    parser.add_argument("--requests", type=int, default=300, help="POST /api/suggest requests to time (default 300)")
    parser.add_argument("--search-requests", type=int, default=200,
                        help="GET /api/search requests to time (default 200; 0 skips)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up requests (default 20)")
    parser.add_argument("--concurrency", type=int, default=1, help="client threads sending requests (default 1)")
    parser.add_argument("--k", type=int, default=5, help="k of each suggest request (default 5)")
    parser.add_argument("--port", type=int, default=0, help="server port (default 0: a free loopback port)")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for /healthz (default 180)")
    parser.add_argument("--server-log-level", default="warning",
                        help="KB_LOG_LEVEL of the server (default warning: no per-request access log)")
    args = parser.parse_args(argv)

    index_dir = args.index_dir.resolve()
    if not index_dir.is_dir():
        parser.error(f"index folder {index_dir} does not exist: build it with `kb index --index-dir {index_dir}`")
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        print(f"WARNING: 1-minute load average is {load1:.2f}: other processes share the CPUs, latencies will be "
              "noisy (the client also runs on this machine)")

    server = Server(index_dir, args.port or free_port(), args.server_log_level)
    # A SIGTERM to the benchmark should stop the server too: turn it into an exception that runs `finally`.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started with SIGINT ignored (background job)
    try:
        started = time.perf_counter()
        server.start()
        with httpx.Client() as client:
            health = server.wait_healthy(client, args.startup_timeout)
        startup_s = time.perf_counter() - started
        print(f"server pid {server.proc.pid} at {server.url}, healthy after {startup_s:.1f} s: index "
              f"{health.get('index_version')}, {health.get('counts')}, model {health.get('model')}")
        print(f"{args.requests} suggest + {args.search_requests} search requests, concurrency {args.concurrency}, "
              f"{len(TICKETS)} distinct tickets, {len(SEARCH_QUERIES)} distinct queries\n")

        def suggest(client: httpx.Client, i: int) -> httpx.Response:
            return client.post(f"{server.url}/api/suggest", json={**TICKETS[i % len(TICKETS)], "k": args.k})

        def search(client: httpx.Client, i: int) -> httpx.Response:
            return client.get(f"{server.url}/api/search", params={"q": SEARCH_QUERIES[i % len(SEARCH_QUERIES)]})

        # Warm up both endpoints (and check the answers are not empty).
        with httpx.Client(timeout=30.0) as client:
            empty = 0
            for i in range(args.warmup):
                response = suggest(client, i)
                if response.status_code != 200:
                    raise RuntimeError(f"warm-up suggest failed: {response.status_code} {response.text[:300]}")
                empty += not response.json().get("answers")
                search(client, i)
        if empty:
            print(f"note: {empty} of {args.warmup} warm-up suggest responses had no answers")

        latencies, wall, errors, failures = run_load(suggest, args.requests, args.concurrency)
        suggest_figures = summarise(latencies, wall, errors)
        print_figures("POST /api/suggest", suggest_figures,
                      {"p50_ms": SUGGEST_P50_TARGET_MS, "p99_ms": SUGGEST_P99_TARGET_MS})
        for detail in failures:
            print(f"  error: {detail}")

        search_figures = None
        if args.search_requests > 0:
            latencies, wall, errors, failures = run_load(search, args.search_requests, args.concurrency)
            search_figures = summarise(latencies, wall, errors)
            print()
            print_figures("GET /api/search", search_figures)
            for detail in failures:
                print(f"  error: {detail}")

        result = {"bench": "suggest_latency", "index_dir": str(index_dir), "index_version": health.get("index_version"),
                  "counts": health.get("counts"), "concurrency": args.concurrency, "k": args.k,
                  "startup_seconds": round(startup_s, 2), "suggest": suggest_figures, "search": search_figures,
                  "targets": {"suggest_p50_ms": SUGGEST_P50_TARGET_MS, "suggest_p99_ms": SUGGEST_P99_TARGET_MS},
                  "suggest_p50_ok": suggest_figures["p50_ms"] <= SUGGEST_P50_TARGET_MS,
                  "suggest_p99_ok": suggest_figures["p99_ms"] <= SUGGEST_P99_TARGET_MS,
                  "loadavg_1m_before": round(load1, 2)}
        print()
        print(json.dumps(result))
        return 0 if not suggest_figures["errors"] and not (search_figures or {}).get("errors") else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the server", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        try:
            os.unlink(server.log.name)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
