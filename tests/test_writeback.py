"""Write-back against a real HTTP server on loopback: the documented calls, retries, Retry-After, bounded queue."""
import base64
import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kb.settings import load_settings
from search.writeback import Note, Suggestion, WriteBack, note_request, retry_after_seconds
from tests.conftest import free_port

NOTE = Note("zendesk", "123", (Suggestion("Outlook keeps asking for a password",
                                          "https://kb.example.com/articles/Outlook/outlook-password-prompt", 0.8123),
                               Suggestion("Fix <Send/Receive> 0x8004010F",
                                          "http://testserver/articles/Outlook/send-receive?x=1&y=2#fix", 0.5)),
            confident=True, confidence=0.912)


class Helpdesk:
    """A helpdesk API stand-in: answers from a script of (status, headers), then 200; records every request."""

    def __init__(self, script=()):
        self.script, self.requests = list(script), []
        self.arrived = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with recorder.arrived:
                    recorder.requests.append({"method": self.command, "path": self.path,
                                              "headers": dict(self.headers), "body": json.loads(body)})
                    status, headers = recorder.script.pop(0) if recorder.script else (200, {})
                    recorder.arrived.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_PUT = do_POST = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 10) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= n, timeout)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def helpdesk():
    servers = []

    def make(script=()):
        servers.append(Helpdesk(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


class Waits:
    """An injected `sleep`: records the waits asked for and returns at once (False: keep trying)."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)
        return False


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def run(writeback: WriteBack, *notes: Note) -> dict:
    writeback.start()
    try:
        for note in notes:
            assert writeback.submit(note)
        assert writeback.wait_idle(10)
        return writeback.counters()
    finally:
        writeback.stop()


def test_zendesk_note_is_a_private_comment_put_on_the_ticket(helpdesk):
    server = helpdesk()
    counters = run(WriteBack(server.url + "/", "tok123", "agent@example.com"), NOTE)
    [request] = server.requests
    assert (request["method"], request["path"]) == ("PUT", "/api/v2/tickets/123.json")
    assert request["headers"]["Authorization"] == basic("agent@example.com/token", "tok123")
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"ticket": {"comment": {"body": NOTE.text(), "public": False}}}
    text = NOTE.text()
    assert "confidence 0.91: the knowledge base likely answers this ticket" in text
    assert "1. Outlook keeps asking for a password (score 0.81)\n" \
           "   https://kb.example.com/articles/Outlook/outlook-password-prompt" in text
    assert counters == {"enabled": True, "queued": 1, "sent": 1, "failed": 0, "retries": 0, "dropped": 0,
                        "pending": 0}


def test_freshdesk_note_is_a_private_note_posted_with_the_api_key(helpdesk):
    server = helpdesk()
    note = Note("freshdesk", "1007", NOTE.suggestions, confident=False, confidence=0.2)
    run(WriteBack(server.url + "/api/v2", "fdkey"), note)  # a base URL given with /api/v2 works too
    [request] = server.requests
    assert (request["method"], request["path"]) == ("POST", "/api/v2/tickets/1007/notes")
    assert request["headers"]["Authorization"] == basic("fdkey", "X")
    assert request["body"] == {"body": note.html(), "private": True}
    assert request["body"]["body"] == (
        "<p><strong>Suggested knowledge-base articles (KB Search)</strong> <em>(confidence 0.20: low, no article "
        "clearly answers this ticket; check before using)</em></p><ol>"
        '<li><a href="https://kb.example.com/articles/Outlook/outlook-password-prompt">Outlook keeps asking for a '
        "password</a> (score 0.81)</li>"
        '<li><a href="http://testserver/articles/Outlook/send-receive?x=1&amp;y=2#fix">Fix &lt;Send/Receive&gt; '
        "0x8004010F</a> (score 0.50)</li></ol>")


def test_server_errors_are_retried_with_exponential_backoff(helpdesk):
    server, waits = helpdesk([(500, {}), (500, {})]), Waits()
    counters = run(WriteBack(server.url, "t", "u@example.com", backoff=0.5, sleep=waits), NOTE)
    assert [r["method"] for r in server.requests] == ["PUT"] * 3
    assert server.requests[0]["body"] == server.requests[2]["body"]
    assert waits.waits == [0.5, 1.0]
    assert (counters["sent"], counters["retries"], counters["failed"]) == (1, 2, 0)


def test_backoff_waits_really_and_is_capped(helpdesk):
    server = helpdesk([(503, {}), (502, {})])
    started = time.monotonic()
    counters = run(WriteBack(server.url, "t", "u@example.com", backoff=0.05, max_backoff=0.06), NOTE)
    assert counters["sent"] == 1 and len(server.requests) == 3
    assert time.monotonic() - started >= 0.05 + 0.06 - 0.01
    capped, waits = helpdesk([(500, {})] * 4), Waits()
    run(WriteBack(capped.url, "t", "u@example.com", backoff=1, max_backoff=3, attempts=5, sleep=waits), NOTE)
    assert waits.waits == [1, 2, 3, 3] and len(capped.requests) == 5


def test_429_waits_as_long_as_retry_after_says(helpdesk):
    server, waits = helpdesk([(429, {"Retry-After": "7"}), (429, {"Retry-After": "900"}), (429, {})]), Waits()
    counters = run(WriteBack(server.url, "t", "u@example.com", backoff=0.25, max_retry_after=60, sleep=waits), NOTE)
    # Retry-After honoured; capped at max_retry_after; without the header, the exponential backoff.
    assert waits.waits == [7.0, 60.0, 1.0]
    assert len(server.requests) == 4 and counters["sent"] == 1 and counters["retries"] == 3


def test_409_is_retried_and_other_client_errors_are_final(helpdesk):
    server, waits = helpdesk([(409, {}), (404, {})]), Waits()
    counters = run(WriteBack(server.url, "t", "u@example.com", sleep=waits), NOTE)
    assert len(server.requests) == 2 and waits.waits == [1.0]
    assert (counters["sent"], counters["failed"], counters["retries"]) == (0, 1, 1)


def test_attempts_are_bounded(helpdesk):
    server, waits = helpdesk([(500, {})] * 10), Waits()
    counters = run(WriteBack(server.url, "t", "u@example.com", attempts=3, sleep=waits), NOTE)
    assert len(server.requests) == 3 and len(waits.waits) == 2 and counters["failed"] == 1


def test_an_unreachable_helpdesk_is_retried_then_counted_failed(caplog):
    waits = Waits()
    counters = run(WriteBack(f"http://127.0.0.1:{free_port()}", "t", "u@example.com", attempts=2, timeout=2,
                             sleep=waits), NOTE)
    assert (counters["failed"], counters["retries"]) == (1, 1) and waits.waits == [1.0]
    assert "failed after 2 attempts: ConnectError" in caplog.text


def test_zendesk_without_a_user_is_not_attempted(helpdesk, caplog):
    server = helpdesk()
    counters = run(WriteBack(server.url, "t", ""), NOTE)
    assert server.requests == [] and counters["failed"] == 1 and "KB_HELPDESK_API_USER" in caplog.text


def test_a_full_queue_drops_notes_and_counts_them(caplog):
    writeback = WriteBack("http://127.0.0.1:9", "t", "u", queue_size=2)  # not started: nothing is taken off
    assert writeback.submit(NOTE) and writeback.submit(NOTE)
    assert not writeback.submit(NOTE)
    assert writeback.counters()["dropped"] == 1 and writeback.counters()["queued"] == 2
    assert "queue full" in caplog.text


def test_stopping_interrupts_a_backoff(helpdesk):
    server = helpdesk([(500, {})] * 5)
    writeback = WriteBack(server.url, "t", "u@example.com", backoff=60)
    writeback.start()
    assert writeback.submit(NOTE)
    assert server.wait_for(1)
    started = time.monotonic()
    writeback.stop(timeout=10)
    assert time.monotonic() - started < 5
    assert len(server.requests) == 1 and writeback.counters()["failed"] == 1
    assert not writeback.submit(NOTE) and writeback.counters()["dropped"] == 1


def test_from_settings_needs_url_and_token():
    assert WriteBack.from_settings(load_settings({})) is None
    assert WriteBack.from_settings(load_settings({"KB_HELPDESK_API_URL": "https://acme.zendesk.com"})) is None
    writeback = WriteBack.from_settings(load_settings({"KB_HELPDESK_API_URL": "https://acme.zendesk.com/",
                                                       "KB_HELPDESK_API_TOKEN": "tok",
                                                       "KB_HELPDESK_API_USER": "a@acme.com"}))
    assert (writeback.api_url, writeback.user, writeback.token) == ("https://acme.zendesk.com", "a@acme.com", "tok")


def test_note_requests_and_retry_after_values():
    assert note_request(NOTE)[:2] == ("PUT", "/api/v2/tickets/123.json")
    with pytest.raises(ValueError):
        note_request(Note("generic", "1", ()))
    assert retry_after_seconds("12") == 12.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert 25 <= retry_after_seconds(formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after_seconds(formatdate(time.time() - 30, usegmt=True)) == 0.0
