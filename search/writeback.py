"""Write-back: the top suggestions as an internal note on the helpdesk ticket, posted by one background thread."""
from __future__ import annotations

import html
import logging
import queue
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable

import httpx

from kb.settings import Settings

log = logging.getLogger("kb.writeback")

HELPDESKS = ("zendesk", "freshdesk")
NOTE_ARTICLES = 3
RETRY_STATUSES = {409, 429}  # 409: Zendesk's answer to concurrent updates of one ticket; 429: rate limited


@dataclass(frozen=True)
class Suggestion:
    title: str
    url: str  # absolute
    score: float


@dataclass(frozen=True)
class Note:
    """An internal note for one ticket: article titles, links and the confidence cue; never ticket text."""

    helpdesk: str
    ticket_id: str
    suggestions: tuple[Suggestion, ...]
    confident: bool | None = None
    confidence: float | None = None

    @classmethod
    def from_result(cls, helpdesk: str, ticket_id: str, result: dict, absolute: Callable[[str], str],
                    limit: int = NOTE_ARTICLES) -> "Note":
        """The note for a Searcher.suggest result; `absolute` turns the articles' URLs into absolute links."""
        suggestions = tuple(Suggestion(a["title"], absolute(a["url"]), float(a["score"]))
                            for a in result.get("articles", ())[:limit])
        return cls(helpdesk, ticket_id, suggestions, result.get("confident"), result.get("confidence"))

    def cue(self) -> str:
        if self.confident is None:
            return ""
        shown = f"confidence {self.confidence:.2f}" if self.confidence is not None else "confidence"
        return (f"{shown}: the knowledge base likely answers this ticket" if self.confident
                else f"{shown}: low, no article clearly answers this ticket; check before using")

    def text(self) -> str:
        """Plain text (Zendesk comment body)."""
        lines = ["Suggested knowledge-base articles (KB Search)" + (f" - {self.cue()}" if self.cue() else ""), ""]
        for n, s in enumerate(self.suggestions, 1):
            lines.append(f"{n}. {s.title} (score {s.score:.2f})")
            lines.append(f"   {s.url}")
        return "\n".join(lines)

    def html(self) -> str:
        """HTML (Freshdesk note body); titles and links escaped."""
        cue = f" <em>({html.escape(self.cue())})</em>" if self.cue() else ""
        items = "".join(f'<li><a href="{html.escape(s.url, quote=True)}">{html.escape(s.title)}</a> '
                        f"(score {s.score:.2f})</li>" for s in self.suggestions)
        return f"<p><strong>Suggested knowledge-base articles (KB Search)</strong>{cue}</p><ol>{items}</ol>"


def note_request(note: Note) -> tuple[str, str, dict]:
    """(method, path, JSON body) of the helpdesk's documented call that adds a private note to a ticket."""
    if note.helpdesk == "zendesk":  # Tickets API: update a ticket with a private comment
        return "PUT", f"/api/v2/tickets/{note.ticket_id}.json", \
            {"ticket": {"comment": {"body": note.text(), "public": False}}}
    if note.helpdesk == "freshdesk":  # Tickets API: create a note (private)
        return "POST", f"/api/v2/tickets/{note.ticket_id}/notes", {"body": note.html(), "private": True}
    raise ValueError(f"no write-back for {note.helpdesk!r}")


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class WriteBack:
    """Posts notes through a bounded queue and one worker thread, so a webhook answer never waits for it.

    Each note is tried up to `attempts` times: transport errors, 5xx, 409 and 429 are retried after
    `backoff * 2**n` seconds (at most `max_backoff`), a 429's Retry-After (at most `max_retry_after`) when it sends
    one; any other 4xx is final. `sleep(seconds)` waits between attempts and returns True to give up (the default
    waits on the stop event, so stopping the service does not wait out a backoff). Outcomes are counted.
    """

    def __init__(self, api_url: str, token: str, user: str = "", *, attempts: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0, max_retry_after: float = 300.0, queue_size: int = 100,
                 timeout: float = 10.0, sleep: Callable[[float], bool] | None = None):
        base = api_url.rstrip("/")
        self.api_url = base[: -len("/api/v2")] if base.endswith("/api/v2") else base
        self.user, self.token = user, token
        self.attempts, self.backoff, self.max_backoff = max(1, attempts), backoff, max_backoff
        self.max_retry_after, self.timeout = max_retry_after, timeout
        self._stop = threading.Event()
        self.sleep = sleep or self._stop.wait
        self._queue: queue.Queue[Note | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Condition()
        self._counts = {"queued": 0, "sent": 0, "failed": 0, "retries": 0, "dropped": 0}
        self._busy = 0  # notes submitted and not yet finished
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> "WriteBack | None":
        """The write-back of the service, or None unless KB_HELPDESK_API_URL and KB_HELPDESK_API_TOKEN are set."""
        if not (settings.helpdesk_api_url and settings.helpdesk_api_token):
            return None
        return cls(settings.helpdesk_api_url, settings.helpdesk_api_token, settings.helpdesk_api_user, **options)

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="helpdesk-writeback", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker: the note being sent gets no further attempts; notes still queued are dropped."""
        self._stop.set()
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        left = self._queue.qsize()
        if left:
            log.warning("write-back stopped with %d note(s) not sent", left)

    # ---- submitting ----------------------------------------------------------------------------------------------
    def submit(self, note: Note) -> bool:
        """Queue a note; False (counted as dropped) when the queue is full or the worker has stopped."""
        with self._lock:
            if self._stop.is_set():
                self._counts["dropped"] += 1
                return False
            try:
                self._queue.put_nowait(note)
            except queue.Full:
                self._counts["dropped"] += 1
                log.error("write-back queue full (%d notes): note for %s ticket %s dropped", self._queue.maxsize,
                          note.helpdesk, note.ticket_id)
                return False
            self._counts["queued"] += 1
            self._busy += 1
            return True

    def counters(self) -> dict:
        with self._lock:
            return {"enabled": True, **self._counts, "pending": self._busy}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted note has been sent or given up; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._busy == 0, timeout)

    # ---- sending -------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                note = self._queue.get()
                if note is None or self._stop.is_set():
                    return
                try:
                    outcome = "sent" if self.deliver(note, client) else "failed"
                except Exception:  # noqa: BLE001 - the worker must outlive any one note
                    log.exception("write-back to %s ticket %s failed", note.helpdesk, note.ticket_id)
                    outcome = "failed"
                with self._lock:
                    self._counts[outcome] += 1
                    self._busy -= 1
                    self._lock.notify_all()

    def auth(self, helpdesk: str) -> httpx.BasicAuth:
        if helpdesk == "zendesk":  # API token: {email}/token:{api_token}
            return httpx.BasicAuth(f"{self.user}/token", self.token)
        return httpx.BasicAuth(self.token, "X")  # Freshdesk: {api_key}:X

    def deliver(self, note: Note, client: httpx.Client) -> bool:
        """Send one note, retrying as the class says; True once the helpdesk accepted it."""
        where = f"{note.helpdesk} ticket {note.ticket_id}"
        if note.helpdesk == "zendesk" and not self.user:
            log.error("write-back to %s skipped: Zendesk API tokens need KB_HELPDESK_API_USER (the agent's e-mail)",
                      where)
            return False
        method, path, body = note_request(note)
        for attempt in range(1, self.attempts + 1):
            wait = None
            try:
                response = client.request(method, self.api_url + path, json=body, auth=self.auth(note.helpdesk))
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.is_success:
                    log.info("write-back: note added to %s", where)
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRY_STATUSES:
                    log.error("write-back to %s refused: %s (not retried)", where, problem)
                    return False
                if response.status_code == 429:
                    wait = retry_after_seconds(response.headers.get("retry-after"))
                    wait = None if wait is None else min(wait, self.max_retry_after)
            if attempt == self.attempts:
                log.error("write-back to %s failed after %d attempts: %s", where, attempt, problem)
                return False
            if wait is None:
                wait = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            log.warning("write-back to %s: %s; attempt %d of %d, next in %.2f s", where, problem, attempt,
                        self.attempts, wait)
            with self._lock:
                self._counts["retries"] += 1
            if self.sleep(wait):
                log.warning("write-back to %s abandoned: the service is stopping", where)
                return False
        return False
