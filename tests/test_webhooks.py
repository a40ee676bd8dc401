"""Helpdesk webhook routes: Zendesk, Freshdesk and generic payloads answered like /api/suggest, signatures,
replays, limits, write-back through a real loopback server; one signed webhook to a real `kb serve`."""
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.errors import BadRequest
from kb.settings import load_settings, to_environment
from search.app import create_app
from search.helpdesk import zendesk_signature
from tests.conftest import FIXTURES, REPO, free_port, running_server
from tests.test_writeback import Helpdesk

SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
SUBJECT = "Outlook keeps asking for my password"
DESCRIPTION = "Hi,\nOutlook prompts for credentials again and again after the quuxwobble update.\nThanks,\nRina"
SHAPE = {"query", "confident", "confidence", "not_covered", "answers", "articles", "answer_id"}


def plain(body: dict) -> dict:
    """An answer without its answer_id (random per recorded answer; null when another worker recorded it)."""
    return {key: value for key, value in body.items() if key != "answer_id"}


def event(ticket_id="35436", subject=SUBJECT, description=DESCRIPTION, kind="ticket.created", **detail):
    return {"type": f"zen:event-type:{kind}", "account_id": 88888888, "id": "01HNXXXX-CTEXAMPLE",
            "time": "2024-04-17T17:18:10Z", "zendesk_event_version": "2022-11-06", "subject": f"zen:ticket:{ticket_id}",
            "detail": {"id": ticket_id, "subject": subject, "description": description, "tags": ["outlook", "vip"],
                       "status": "OPEN", "via": {"channel": "web"}, **detail},
            "event": {}}


def stamp(offset_seconds: float = 0) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def signed(body: bytes, secret: str = SECRET, timestamp: str | None = None) -> dict:
    timestamp = timestamp or stamp()
    return {"content-type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            "X-Zendesk-Webhook-Signature": zendesk_signature(secret, timestamp, body)}


class Service:
    """A TestClient on the tiny encoder, with suggest calls and usage records counted."""

    def __init__(self, client: TestClient):
        self.client = client
        self.state = client.app.state.kb
        self.suggests, self.recorded = 0, []
        self.before = (0, 0)
        searcher, usage = self.state.searcher, self.state.usage
        original_suggest, original_record = searcher.suggest, usage.record_later

        def counting_suggest(*args, **kwargs):
            self.suggests += 1
            return original_suggest(*args, **kwargs)

        def counting_record(ids):
            self.recorded.append(sorted(set(ids)))
            return original_record(ids)

        searcher.suggest, usage.record_later = counting_suggest, counting_record

    def post(self, path: str, payload=None, **kwargs) -> httpx.Response:
        self.before = self.suggests, len(self.recorded)
        if payload is not None:
            kwargs["content"] = json.dumps(payload).encode()
            kwargs.setdefault("headers", {"content-type": "application/json"})
        return self.client.post(path, **kwargs)

    def suggest(self, **ticket) -> dict:
        """The same ticket asked of /api/suggest (bypassing the counters)."""
        before = self.suggests, list(self.recorded)
        body = plain(self.client.post("/api/suggest", json=ticket).json())
        self.suggests, self.recorded = before[0], before[1]
        return body


@pytest.fixture
def make_service(content_copy, tmp_path, tiny_encoder):
    built = {}
    clients = []

    def make(**overrides) -> Service:
        overrides.setdefault("webhook_db", tmp_path / "webhooks.sqlite")
        settings = load_settings({}, content_dir=content_copy, index_dir=tmp_path / "index",
                                 feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite",
                                 reload_poll_seconds=0, **overrides)
        if not built:
            build_index(settings, tiny_encoder, progress=False)
            built["done"] = True
        client = TestClient(create_app(settings, encoder=tiny_encoder))
        clients.append(client)
        client.__enter__()
        return Service(client)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def service(make_service) -> Service:
    return make_service()


def assert_refused(service: Service, response: httpx.Response, status: int, code: str) -> dict:
    """The last request was answered with `status` and error `code`; nothing suggested or counted as returned."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert (service.suggests, len(service.recorded)) == service.before
    return body["error"]


# ---- Zendesk ---------------------------------------------------------------------------------------------------

def test_zendesk_ticket_event_is_answered_exactly_like_api_suggest(service):
    response = service.post("/api/webhooks/zendesk", event())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == SHAPE and body["articles"] and body["answers"]
    assert plain(body) == service.suggest(subject=SUBJECT, body=DESCRIPTION, tags=["outlook", "vip"])
    assert response.headers["X-KB-Replayed"] == "false" and response.headers["X-KB-Writeback"] == "none"
    assert service.suggests == 1 and len(service.recorded) == 1


@pytest.mark.parametrize("kind", ["ticket.subject_changed", "ticket.description_changed", "ticket.tags_changed"])
def test_zendesk_update_events_that_change_what_is_searched_are_answered(service, kind):
    response = service.post("/api/webhooks/zendesk", event(kind=kind))
    assert response.status_code == 200 and set(response.json()) == SHAPE


def test_zendesk_trigger_body_with_space_separated_tags(service):
    trigger = {"ticket": {"id": "77", "subject": SUBJECT,
                          "description": DESCRIPTION, "tags": "outlook vip"}}
    response = service.post("/api/webhooks/zendesk", trigger, params={"k": 2})
    assert response.status_code == 200, response.text
    assert plain(response.json()) == service.suggest(subject=SUBJECT, body=DESCRIPTION, tags=["outlook", "vip"], k=2)
    assert len(response.json()["articles"]) <= 2


def test_a_valid_signature_is_accepted(make_service):
    service = make_service(zendesk_webhook_secret=SECRET)
    body = json.dumps(event()).encode()
    response = service.post("/api/webhooks/zendesk", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert set(response.json()) == SHAPE and service.suggests == 1


def test_bad_missing_and_stale_signatures_are_refused(make_service):
    service = make_service(zendesk_webhook_secret=SECRET)
    body = json.dumps(event()).encode()
    post = lambda headers: service.post("/api/webhooks/zendesk", content=body, headers=headers)  # noqa: E731
    wrong = signed(body, secret="not the secret")
    assert_refused(service, post(wrong), 401, "signature_invalid")
    tampered = signed(body)
    response = service.post("/api/webhooks/zendesk", content=body.replace(b"35436", b"35437"),
                                   headers=tampered)
    assert_refused(service, response, 401, "signature_invalid")
    error = assert_refused(service, post({"content-type": "application/json"}), 401, "signature_invalid")
    assert "X-Zendesk-Webhook-Signature header missing" in error["message"]
    no_stamp = {k: v for k, v in signed(body).items() if k != "X-Zendesk-Webhook-Signature-Timestamp"}
    assert_refused(service, post(no_stamp), 401, "signature_invalid")
    for offset in (-301, 400):  # too old, or from a clock far ahead
        error = assert_refused(service, post(signed(body, timestamp=stamp(offset))), 401, "signature_stale")
        assert "stale" in error["message"]


def test_unknown_event_types_are_refused(service):
    for kind in ("ticket.status_changed", "ticket.soft_deleted", "user.created"):
        error = assert_refused(service, service.post("/api/webhooks/zendesk", event(kind=kind)), 422,
                               "unsupported_event")
        assert f"zen:event-type:{kind}" in error["message"] and "zen:event-type:ticket.created" in error["message"]


def test_malformed_empty_and_misshapen_bodies_are_refused(service):
    url = "/api/webhooks/zendesk"
    headers = {"content-type": "application/json"}
    assert_refused(service, service.post(url, content=b'{"ticket": {"id": 1,', headers=headers), 400,
                   "malformed_json")
    assert_refused(service, service.post(url, content=b"", headers=headers), 400, "malformed_json")
    error = assert_refused(service, service.post(url, {"ticket": {"id": 1, "subject": " ", "description": ""}}),
                           422, "empty_ticket")
    assert "neither a subject nor a description" in error["message"]
    assert_refused(service, service.post(url, {"hello": "world"}), 422, "invalid_payload")
    assert_refused(service, service.post(url, ["not", "an", "object"]), 422, "invalid_payload")
    assert_refused(service, service.post(url, {"ticket": {"id": "../users/1", "subject": "x"}}), 422,
                   "invalid_payload")


def test_oversized_bodies_are_refused_before_and_while_reading(make_service):
    service = make_service(webhook_max_bytes=2000)
    big = event(description="word " * 1000)
    assert_refused(service, service.post("/api/webhooks/zendesk", big), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit is applied while reading
        data = json.dumps(big).encode()
        for start in range(0, len(data), 500):
            yield data[start:start + 500]

    response = service.post("/api/webhooks/generic", content=chunks(),
                                   headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    error = assert_refused(service, response, 413, "payload_too_large")
    assert "KB_WEBHOOK_MAX_BYTES" in error["message"]
    small = service.post("/api/webhooks/zendesk", event())
    assert small.status_code == 200 and len(small.request.content) <= 2000


def test_the_same_ticket_within_the_window_is_answered_from_the_first_result(service):
    first = service.post("/api/webhooks/zendesk", event())
    again = service.post("/api/webhooks/zendesk", event(subject="Totally different now", description="ignored"))
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["X-KB-Replayed"] == "true"
    assert service.suggests == 1 and len(service.recorded) == 1
    other = service.post("/api/webhooks/zendesk", event(ticket_id="99"))  # another ticket: its own answer
    assert other.headers["X-KB-Replayed"] == "false" and service.suggests == 2
    freshdesk = service.post("/api/webhooks/freshdesk", {"ticket_id": 35436, "subject": "x", "description": "y"})
    assert freshdesk.headers["X-KB-Replayed"] == "false" and service.suggests == 3  # another helpdesk's 35436

    # After the window, an updated ticket gets a fresh answer.
    window = service.state.settings.webhook_replay_seconds
    cache, shared = service.state.webhooks.replays, service.state.webhooks.log
    real_clock, real_wall = cache.clock, shared.clock
    cache.clock = lambda: real_clock() + window + 1
    shared.clock = lambda: real_wall() + window + 1
    updated = service.post("/api/webhooks/zendesk", event(kind="ticket.subject_changed",
                                                          subject="Teams microphone not working",
                                                          description="Nobody hears me in Teams meetings"))
    assert updated.headers["X-KB-Replayed"] == "false" and service.suggests == 4
    assert updated.json() != first.json()
    assert plain(updated.json()) == service.suggest(
        subject="Teams microphone not working", body="Nobody hears me in Teams meetings", tags=["outlook", "vip"])


def test_failures_are_not_kept_for_replay(service):
    refused = service.post("/api/webhooks/zendesk", event(description="x" * 30_000))  # over KB_MAX_QUERY_CHARS
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_request"
    assert service.recorded == []
    retried = service.post("/api/webhooks/zendesk", event())
    assert retried.status_code == 200 and retried.headers["X-KB-Replayed"] == "false" and service.suggests == 2


def test_ticket_text_is_never_logged(service, caplog):
    caplog.set_level(logging.DEBUG)
    service.post("/api/webhooks/zendesk", event())
    service.post("/api/webhooks/zendesk", event())
    service.post("/api/webhooks/zendesk", event(kind="user.created"))
    service.post("/api/webhooks/freshdesk", {"ticket_id": 1, "subject": SUBJECT, "description": DESCRIPTION})
    assert service.suggests == 2
    assert "quuxwobble" not in caplog.text and "Rina" not in caplog.text


# ---- Freshdesk and generic -------------------------------------------------------------------------------------

def test_freshdesk_automation_body_and_flat_body(service):
    wrapped = {"freshdesk_webhook": {"ticket_id": "1007", "ticket_subject": SUBJECT,
                                     "ticket_description": "<div>Outlook prompts for credentials</div>"
                                                           "<div>again &amp; again</div>",
                                     "ticket_tags": "outlook, password prompt", "ticket_status": "Open"}}
    response = service.post("/api/webhooks/freshdesk", wrapped)
    assert response.status_code == 200, response.text
    assert plain(response.json()) == service.suggest(
        subject=SUBJECT, body="Outlook prompts for credentials\nagain & again", tags=["outlook", "password prompt"])
    flat = service.post("/api/webhooks/freshdesk", {"ticket_id": 8, "subject": "OneDrive sync pending",
                                                    "description_text": "Files stay pending", "tags": ["onedrive"]})
    assert plain(flat.json()) == service.suggest(
        subject="OneDrive sync pending", body="Files stay pending", tags=["onedrive"])
    assert_refused(service, service.post("/api/webhooks/freshdesk", {"ticket_id": 9}), 422,
                   "empty_ticket")


def test_generic_webhook_with_the_default_map(service):
    response = service.post("/api/webhooks/generic", {"id": "T-1", "subject": SUBJECT, "body": DESCRIPTION,
                                                      "tags": ["outlook"], "language": "en"})
    assert response.status_code == 200, response.text
    assert plain(response.json()) == service.suggest(subject=SUBJECT, body=DESCRIPTION, tags=["outlook"], language="en")
    again = service.post("/api/webhooks/generic", {"id": "T-1", "subject": "other"})
    assert again.headers["X-KB-Replayed"] == "true" and again.headers["X-KB-Writeback"] == "none"


def test_generic_webhook_with_a_jira_map(make_service):
    service = make_service(generic_webhook_map=json.dumps({
        "subject": "/issue/fields/summary", "body": "/issue/fields/description", "tags": "/issue/fields/labels",
        "ticket_id": "/issue/key"}))
    jira = {"issue": {"key": "SD-4", "fields": {"summary": "OneDrive sync pending", "labels": ["onedrive"],
                                                 "description": "Files stay pending for days"}}}
    response = service.post("/api/webhooks/generic", jira)
    assert plain(response.json()) == service.suggest(
        subject="OneDrive sync pending", body="Files stay pending for days", tags=["onedrive"])
    assert_refused(service, service.post("/api/webhooks/generic", {"issue": {"key": "SD-5"}}), 422,
                   "empty_ticket")


def test_a_bad_generic_map_stops_start_up_naming_the_setting(content_copy, tmp_path, tiny_encoder):
    settings = load_settings({"KB_GENERIC_WEBHOOK_MAP": '{"subject": "fields/summary"}'}, content_dir=content_copy,
                             index_dir=tmp_path / "index")
    with pytest.raises(BadRequest) as caught:
        create_app(settings, encoder=tiny_encoder)
    assert "KB_GENERIC_WEBHOOK_MAP" in caught.value.message and "fields/summary" in caught.value.message


def test_kb_serve_refuses_a_bad_generic_map(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "KB_GENERIC_WEBHOOK_MAP": '{"subj": "/s"}'}
    run = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--no-watch", "--index-dir",
                          str(tmp_path / "index"), "--port", str(free_port())], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "kb serve: error: KB_GENERIC_WEBHOOK_MAP has unknown field(s) subj" in run.stderr


def test_openapi_documents_the_webhooks(service):
    spec = service.client.get("/openapi.json").json()
    for name in ("zendesk", "freshdesk", "generic"):
        operation = spec["paths"][f"/api/webhooks/{name}"]["post"]
        assert "application/json" in operation["requestBody"]["content"]
        assert {"200", "401", "413", "422"} <= set(operation["responses"])
    zendesk = spec["paths"]["/api/webhooks/zendesk"]["post"]
    assert "signatures are not checked" in zendesk["description"]
    assert "$ref" not in json.dumps(zendesk["requestBody"])


def test_api_keys_guard_the_webhooks_and_internal_articles_need_the_internal_scope(make_service, tmp_path):
    service = make_service(auth="required", auth_db=tmp_path / "auth.sqlite")
    keys = service.client.app.state.auth.keys
    _, public = keys.create("zendesk-public", ["suggest"])
    _, internal = keys.create("zendesk-internal", ["suggest", "internal"])
    _, searching = keys.create("search-only", ["search"])
    ticket = event(ticket_id="8", subject="Escalate this ticket to tier 2",
                   description="What severity and SLA apply when we escalate to Microsoft support?")
    assert service.post("/api/webhooks/zendesk", ticket).status_code == 401
    denied = service.post("/api/webhooks/zendesk", ticket, headers={"X-API-Key": searching,
                                                                    "content-type": "application/json"})
    assert denied.status_code == 403
    answers = {}
    for name, key in (("public", public), ("internal", internal)):
        response = service.post("/api/webhooks/zendesk", ticket, headers={"Authorization": f"Bearer {key}",
                                                                           "content-type": "application/json"})
        assert response.status_code == 200 and response.headers["X-KB-Replayed"] == "false", response.text
        answers[name] = [article["id"] for article in response.json()["articles"]]
    assert "internal/escalation-policy" in answers["internal"]
    assert "internal/escalation-policy" not in answers["public"]


# ---- write-back ------------------------------------------------------------------------------------------------

@pytest.fixture
def helpdesk_api():
    server = Helpdesk()
    yield server
    server.close()


def test_write_back_posts_one_private_note_per_ticket_and_window(make_service, helpdesk_api):
    service = make_service(helpdesk_api_url=helpdesk_api.url, helpdesk_api_token="tok",
                           helpdesk_api_user="agent@example.com")
    first = service.post("/api/webhooks/zendesk", event())
    assert first.headers["X-KB-Writeback"] == "queued"
    again = service.post("/api/webhooks/zendesk", event())
    assert again.headers["X-KB-Replayed"] == "true" and again.headers["X-KB-Writeback"] == "none"
    writeback = service.state.webhooks.writeback
    assert writeback.wait_idle(10)
    [request] = helpdesk_api.requests
    assert (request["method"], request["path"]) == ("PUT", "/api/v2/tickets/35436.json")
    comment = request["body"]["ticket"]["comment"]
    assert set(request["body"]) == {"ticket"} and set(comment) == {"body", "public"} and comment["public"] is False
    top = first.json()["articles"][0]
    assert f"1. {top['title']}" in comment["body"]
    assert f"http://testserver/articles/{top['id']}\n" in comment["body"] + "\n"
    assert "confidence" in comment["body"] and "quuxwobble" not in comment["body"]
    health = service.client.get("/healthz").json()
    assert health["writeback"] == {"enabled": True, "queued": 1, "sent": 1, "failed": 0, "retries": 0,
                                   "dropped": 0, "pending": 0, "webhook_db_errors": 0}
    generic = service.post("/api/webhooks/generic", {"id": "G-1", "subject": SUBJECT})
    assert generic.headers["X-KB-Writeback"] == "none"  # no write-back for the generic route


def test_write_back_to_freshdesk_links_to_an_absolute_kb_base_url(make_service, helpdesk_api):
    service = make_service(helpdesk_api_url=helpdesk_api.url, helpdesk_api_token="fdkey",
                           base_url="https://kb.example.com/articles")
    response = service.post("/api/webhooks/freshdesk", {"freshdesk_webhook": {
        "ticket_id": "1007", "ticket_subject": SUBJECT, "ticket_description": DESCRIPTION}})
    assert response.headers["X-KB-Writeback"] == "queued"
    assert service.state.webhooks.writeback.wait_idle(10)
    [request] = helpdesk_api.requests
    assert (request["method"], request["path"]) == ("POST", "/api/v2/tickets/1007/notes")
    assert request["body"]["private"] is True and set(request["body"]) == {"body", "private"}
    top = response.json()["articles"][0]
    assert f'<a href="https://kb.example.com/articles/{top["id"]}">' in request["body"]["body"]


# ---- once per ticket across worker processes (KB_WEBHOOK_DB) --------------------------------------------------

WRITEBACK = dict(helpdesk_api_token="tok", helpdesk_api_user="agent@example.com")

# A second worker process: the same settings (as `kb serve --workers N` passes them, KB_* variables), the same index
# and KB_WEBHOOK_DB, its own memory and write-back queue. Posts the signed bodies it is given, in order.
SECOND_WORKER = r"""
import json, sys
from fastapi.testclient import TestClient
from kb.settings import load_settings
from search.app import create_app
from tests.conftest import TinyEncoder

out = []
with TestClient(create_app(load_settings(), encoder=TinyEncoder())) as client:
    for body, headers in json.load(sys.stdin):
        r = client.post("/api/webhooks/zendesk", content=body.encode(), headers=headers)
        out.append({"status": r.status_code, "replayed": r.headers.get("X-KB-Replayed"),
                    "writeback": r.headers.get("X-KB-Writeback"), "answer": r.json()})
    assert client.app.state.kb.webhooks.writeback.wait_idle(30)
    out.append(client.get("/healthz").json()["writeback"])
print(json.dumps(out))
"""


def test_a_retry_that_reaches_another_worker_process_posts_no_second_note(make_service, helpdesk_api):
    service = make_service(zendesk_webhook_secret=SECRET, helpdesk_api_url=helpdesk_api.url, **WRITEBACK)
    first_body, second_body = (json.dumps(event(ticket_id=n)).encode() for n in ("601", "602"))
    first = service.post("/api/webhooks/zendesk", content=first_body, headers=signed(first_body))
    assert first.status_code == 200 and first.headers["X-KB-Writeback"] == "queued", first.text

    # Zendesk retries ticket 601 (and sends 602) to the other worker, a real second process.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **to_environment(service.state.settings)}
    posts = [[body.decode(), signed(body)] for body in (first_body, second_body)]
    run = subprocess.run([sys.executable, "-c", SECOND_WORKER], input=json.dumps(posts), env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    retry, other, health = json.loads(run.stdout.strip().splitlines()[-1])
    assert (retry["status"], retry["replayed"], retry["writeback"]) == (200, "true", "none")
    assert plain(retry["answer"]) == plain(first.json())  # computed again there, from the same index
    assert retry["answer"]["answer_id"] is None  # ... and recorded there only once: by the first worker
    assert (other["status"], other["replayed"], other["writeback"]) == (200, "false", "queued")
    assert (health["queued"], health["sent"], health["webhook_db_errors"]) == (1, 1, 0)

    # ... and the retry of 602 comes back to this one.
    again = service.post("/api/webhooks/zendesk", content=second_body, headers=signed(second_body))
    assert (again.headers["X-KB-Replayed"], again.headers["X-KB-Writeback"]) == ("true", "none")
    assert plain(again.json()) == plain(other["answer"]) and again.json()["answer_id"] is None
    assert service.suggests == 2 and len(service.recorded) == 1  # a replay from elsewhere is not counted as usage
    assert service.state.webhooks.writeback.wait_idle(10)
    assert sorted(r["path"] for r in helpdesk_api.requests) == ["/api/v2/tickets/601.json",
                                                                "/api/v2/tickets/602.json"]
    assert [(row[0], row[1], row[4]) for row in service.state.webhooks.log.rows()] == \
        [("zendesk", "601", 1), ("zendesk", "602", 1)]


def test_two_workers_answering_one_ticket_at_the_same_moment_post_one_note(make_service, helpdesk_api):
    workers = [make_service(zendesk_webhook_secret=SECRET, helpdesk_api_url=helpdesk_api.url, **WRITEBACK)
               for _ in range(2)]
    assert workers[0].state is not workers[1].state
    body = json.dumps(event(ticket_id="700")).encode()
    for worker in workers:  # FastAPI builds a route on its first request; building it in two threads at once
        # races on the global warning filters (warnings.catch_warnings is not thread-safe), which pytest's
        # filterwarnings=error turns into an exception: warm each up with a refused (unsigned) delivery.
        assert worker.post("/api/webhooks/zendesk", content=body).status_code == 401
    start = threading.Barrier(2)

    def deliver(worker: Service) -> httpx.Response:
        start.wait()
        return worker.post("/api/webhooks/zendesk", content=body, headers=signed(body))

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(deliver, workers))
    assert [r.status_code for r in responses] == [200, 200]
    assert sorted(r.headers["X-KB-Writeback"] for r in responses) == ["none", "queued"]
    assert sorted(r.headers["X-KB-Replayed"] for r in responses) == ["false", "true"]
    assert plain(responses[0].json()) == plain(responses[1].json())
    assert sorted(r.json()["answer_id"] is None for r in responses) == [False, True]  # the claimant's answer only
    for worker in workers:
        assert worker.state.webhooks.writeback.wait_idle(10)
    [request] = helpdesk_api.requests
    assert request["path"] == "/api/v2/tickets/700.json"
    assert sum(len(worker.recorded) for worker in workers) == 1


def test_the_webhook_db_holds_ticket_ids_and_times_but_no_ticket_text(make_service, helpdesk_api, tmp_path):
    service = make_service(helpdesk_api_url=helpdesk_api.url, **WRITEBACK)
    subject = SUBJECT + " zyxsubjectmarker"
    assert service.post("/api/webhooks/zendesk", event(subject=subject)).headers["X-KB-Writeback"] == "queued"
    assert service.post("/api/webhooks/freshdesk", {"freshdesk_webhook": {
        "ticket_id": "1007", "ticket_subject": subject, "ticket_description": DESCRIPTION,
        "ticket_tags": "vwxtagmarker"}}).status_code == 200
    assert service.post("/api/webhooks/generic", {"id": "G-9", "subject": subject, "body": DESCRIPTION}) \
        .status_code == 200
    assert service.state.webhooks.writeback.wait_idle(10)
    assert [row[:3] + row[4:] for row in service.state.webhooks.log.rows()] == \
        [("zendesk", "35436", 1, 1), ("freshdesk", "1007", 1, 1), ("generic", "G-9", 1, 0)]  # open loopback: sees internal
    files = sorted(tmp_path.glob("webhooks.sqlite*"))
    raw = b"".join(path.read_bytes() for path in files)
    assert b"35436" in raw and b"G-9" in raw  # the bytes are readable: ids and times are what is there
    for text in ("zyxsubjectmarker", "quuxwobble", "Rina", "Outlook keeps asking", "vwxtagmarker", "outlook"):
        assert text.encode() not in raw and text.encode("utf-16-le") not in raw, (text, files)


def test_an_unwritable_webhook_db_falls_back_to_the_per_process_rule(make_service, helpdesk_api, tmp_path,
                                                                     caplog):
    caplog.set_level(logging.INFO, logger="kb.webhooks")
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("")  # the file's folder cannot be created: as on a read-only disk, for root too
    service = make_service(webhook_db=not_a_folder / "webhooks.sqlite", helpdesk_api_url=helpdesk_api.url,
                           **WRITEBACK)
    first = service.post("/api/webhooks/zendesk", event())
    assert first.status_code == 200 and first.headers["X-KB-Writeback"] == "queued"
    again = service.post("/api/webhooks/zendesk", event())  # this process still knows the ticket
    assert (again.headers["X-KB-Replayed"], again.headers["X-KB-Writeback"]) == ("true", "none")
    other = service.post("/api/webhooks/zendesk", event(ticket_id="99"))
    assert other.status_code == 200 and other.headers["X-KB-Writeback"] == "queued"
    assert service.state.webhooks.writeback.wait_idle(10)
    assert sorted(r["path"] for r in helpdesk_api.requests) == ["/api/v2/tickets/35436.json",
                                                                "/api/v2/tickets/99.json"]
    assert service.client.get("/healthz").json()["writeback"]["webhook_db_errors"] == 2
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 and "KB_WEBHOOK_DB" in warnings[0].getMessage()
    assert not (not_a_folder / "webhooks.sqlite").exists()


def test_healthz_says_when_write_back_is_off(service):
    assert service.client.get("/healthz").json()["writeback"] == {"enabled": False, "webhook_db_errors": 0}


# ---- a real server ---------------------------------------------------------------------------------------------

@pytest.mark.model
def test_signed_zendesk_webhook_to_a_real_kb_serve(tmp_path):
    """kb index + kb serve (real model) with a webhook secret and write-back to a loopback helpdesk."""
    content = tmp_path / "content"
    shutil.copytree(FIXTURES / "content", content)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    index = subprocess.run([sys.executable, "-m", "cli.main", "index", "--content", str(content), "--index-dir",
                            str(tmp_path / "index"), "--quiet"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert index.returncode == 0, index.stderr
    helpdesk = Helpdesk()
    try:
        serve_env = {"KB_ZENDESK_WEBHOOK_SECRET": SECRET, "KB_HELPDESK_API_URL": helpdesk.url,
                     "KB_HELPDESK_API_TOKEN": "tok", "KB_HELPDESK_API_USER": "agent@example.com",
                     "KB_WEBHOOK_DB": str(tmp_path / "webhooks.sqlite")}
        with running_server(tmp_path / "index", tmp_path, env=serve_env) as (base, port):
            body = json.dumps(event(ticket_id="501")).encode()
            response = httpx.post(base + "/api/webhooks/zendesk", content=body, headers=signed(body), timeout=30)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert set(answer) == SHAPE
            assert answer["articles"][0]["id"] == "Outlook/outlook-password-prompt"
            refused = httpx.post(base + "/api/webhooks/zendesk", content=body,
                                 headers=signed(body, secret="wrong"), timeout=30)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "signature_invalid"
            replay = httpx.post(base + "/api/webhooks/zendesk", content=body, headers=signed(body), timeout=30)
            assert replay.json() == answer and replay.headers["X-KB-Replayed"] == "true"
            assert helpdesk.wait_for(1, timeout=30)
            [request] = helpdesk.requests
            assert (request["method"], request["path"]) == ("PUT", "/api/v2/tickets/501.json")
            assert f"http://127.0.0.1:{port}/articles/Outlook/outlook-password-prompt" in \
                request["body"]["ticket"]["comment"]["body"]
            health = httpx.get(base + "/healthz", timeout=10).json()
            assert health["writeback"]["sent"] == 1 and health["writeback"]["queued"] == 1
        log = (tmp_path / "server.log").read_text()
        assert "quuxwobble" not in log
    finally:
        helpdesk.close()
