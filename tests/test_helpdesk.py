"""Helpdesk payloads -> tickets, Zendesk signatures, RFC 6901 pointers, the generic map, the replay cache."""
import base64
import hashlib
import hmac
import threading
from datetime import datetime, timezone

import pytest

from kb.errors import (BadRequest, EmptyTicket, InvalidPayload, MalformedJSON, SignatureInvalid, SignatureStale,
                       UnsupportedEvent)
from search.helpdesk import (MISSING, ReplayCache, freshdesk_ticket, generic_ticket, html_to_text, parse_json,
                             parse_pointer, parse_tags, parse_webhook_map, resolve_pointer, verify_zendesk,
                             zendesk_signature, zendesk_ticket)

SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
NOW = datetime(2024, 1, 1, 0, 0, 0, tzinfo=timezone.utc).timestamp()


# ---- Zendesk signatures ----------------------------------------------------------------------------------------

def test_signature_is_base64_hmac_sha256_of_timestamp_then_body():
    body, stamp = b'{"say": "hello"}', "2021-07-25T10:00:00Z"
    expected = base64.b64encode(hmac.new(SECRET.encode(), stamp.encode() + body, hashlib.sha256).digest()).decode()
    assert zendesk_signature(SECRET, stamp, body) == expected
    assert zendesk_signature(SECRET, stamp, body + b" ") != expected


def test_a_valid_signature_within_the_window_passes_in_both_directions():
    body = b'{"ticket": {"id": 1}}'
    for stamp in ("2024-01-01T00:00:00Z", "2023-12-31T23:55:01Z", "2024-01-01T00:04:59Z"):
        verify_zendesk(SECRET, body, zendesk_signature(SECRET, stamp, body), stamp, 300, now=NOW)


@pytest.mark.parametrize("stamp, words", [("2023-12-31T23:54:59Z", "301 s old"),
                                          ("2024-01-01T00:05:01Z", "301 s in the future")])
def test_a_timestamp_outside_the_window_is_stale(stamp, words):
    body = b"{}"
    with pytest.raises(SignatureStale) as caught:
        verify_zendesk(SECRET, body, zendesk_signature(SECRET, stamp, body), stamp, 300, now=NOW)
    assert caught.value.status == 401 and "stale" in caught.value.message and words in caught.value.message


def test_wrong_or_missing_signatures_are_refused():
    body, stamp = b'{"ticket": {"id": 1}}', "2024-01-01T00:00:00Z"
    good = zendesk_signature(SECRET, stamp, body)
    cases = [(zendesk_signature("other secret", stamp, body), stamp, body),  # wrong key
             (good, stamp, body + b" "),                                       # body changed
             (good, "2024-01-01T00:00:01Z", body),                             # timestamp changed
             (None, stamp, body), (good, None, body), ("", stamp, body),       # missing
             (good, "yesterday", body)]                                        # unreadable timestamp
    for signature, timestamp, sent in cases:
        with pytest.raises(SignatureInvalid) as caught:
            verify_zendesk(SECRET, sent, signature, timestamp, 300, now=NOW)
        assert caught.value.status == 401 and type(caught.value) is SignatureInvalid


# ---- payloads --------------------------------------------------------------------------------------------------

def test_zendesk_ticket_event_reads_detail_not_the_event_subject():
    event = {"type": "zen:event-type:ticket.created", "account_id": 1, "id": "01HN", "time": "2024-04-17T17:18:10Z",
             "zendesk_event_version": "2022-11-06", "subject": "zen:ticket:35436",
             "detail": {"id": "35436", "subject": "Outlook asks for password", "description": "Again and again",
                        "tags": ["outlook", "vip"], "status": "OPEN", "via": {"channel": "web"}},
             "event": {}}
    ticket = zendesk_ticket(event)
    assert (ticket.source, ticket.ticket_id, ticket.subject, ticket.body, ticket.tags) == \
        ("zendesk", "35436", "Outlook asks for password", "Again and again", ("outlook", "vip"))
    assert ticket.key == ("zendesk", "35436") and ticket.language is None


def test_zendesk_trigger_body_with_placeholder_values():
    ticket = zendesk_ticket({"ticket": {"id": 42, "subject": "Mail bounced", "description": "550 5.7.124",
                                        "tags": "exchange  distribution_list", "language": "English"}})
    assert (ticket.ticket_id, ticket.tags, ticket.language) == ("42", ("exchange", "distribution_list"), "en")


@pytest.mark.parametrize("event_type", ["zen:event-type:ticket.status_changed", "zen:event-type:user.created",
                                        "zen:event-type:ticket.soft_deleted", 7])
def test_other_zendesk_event_types_are_unsupported(event_type):
    with pytest.raises(UnsupportedEvent) as caught:
        zendesk_ticket({"type": event_type, "detail": {"id": "1", "subject": "x"}})
    assert caught.value.status == 422 and "zen:event-type:ticket.created" in caught.value.message


@pytest.mark.parametrize("payload", [{"hello": 1}, {"ticket": "nope"}, {"ticket": {"id": "12a", "subject": "x"}},
                                     {"ticket": {"subject": ["x"]}}, {"ticket": {"subject": "x", "tags": {"a": 1}}}])
def test_zendesk_payloads_of_the_wrong_shape(payload):
    with pytest.raises(InvalidPayload):
        zendesk_ticket(payload)


def test_a_ticket_without_subject_or_description_is_refused():
    with pytest.raises(EmptyTicket) as caught:
        zendesk_ticket({"ticket": {"id": 1, "subject": "  ", "description": None}})
    assert caught.value.status == 422 and "neither a subject nor a description" in caught.value.message


def test_freshdesk_wrapped_body_with_html_description_and_comma_tags():
    ticket = freshdesk_ticket({"freshdesk_webhook": {
        "ticket_id": "1007", "ticket_subject": "Teams mic",
        "ticket_description": "<div>Hi,</div><div>my mic&nbsp;is <b>muted</b></div><script>x()</script>",
        "ticket_tags": "teams, audio issue", "ticket_status": "Open"}})
    assert (ticket.source, ticket.ticket_id, ticket.subject) == ("freshdesk", "1007", "Teams mic")
    assert ticket.body == "Hi,\nmy mic is muted" and ticket.tags == ("teams", "audio issue")


def test_freshdesk_flat_body_prefers_description_text():
    ticket = freshdesk_ticket({"ticket_id": 5, "subject": "s", "description": "<p>html</p>",
                               "description_text": "plain", "tags": ["a"]})
    assert (ticket.ticket_id, ticket.body, ticket.tags) == ("5", "plain", ("a",))
    assert freshdesk_ticket({"id": 6, "description": "<p>only html</p>"}).body == "only html"


def test_html_to_text_keeps_plain_text_untouched():
    assert html_to_text("a < b and c") == "a < b and c"
    assert html_to_text("line one\nline two") == "line one\nline two"


def test_parse_json_errors():
    with pytest.raises(MalformedJSON) as caught:
        parse_json(b'{"ticket": ')
    assert caught.value.status == 400 and caught.value.code == "malformed_json"
    with pytest.raises(MalformedJSON):
        parse_json(b"\xff\xfe\x00")
    with pytest.raises(InvalidPayload):
        parse_json(b"[1, 2]")


def test_tags_from_lists_and_strings():
    assert parse_tags("a b  c") == ("a", "b", "c")
    assert parse_tags("a, b c,") == ("a", "b c")
    assert parse_tags(["x", 3]) == ("x", "3") and parse_tags(None) == ()
    with pytest.raises(InvalidPayload):
        parse_tags([{"x": 1}])


# ---- JSON pointers and the generic map -------------------------------------------------------------------------

RFC_DOC = {"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4, "i\\j": 5, 'k"l': 6, " ": 7,
           "m~n": 8}


@pytest.mark.parametrize("pointer, value", [("", RFC_DOC), ("/foo", ["bar", "baz"]), ("/foo/0", "bar"), ("/", 0),
                                            ("/a~1b", 1), ("/c%d", 2), ("/e^f", 3), ("/g|h", 4), ("/i\\j", 5),
                                            ('/k"l', 6), ("/ ", 7), ("/m~0n", 8)])
def test_pointers_resolve_as_rfc_6901_section_5(pointer, value):
    assert resolve_pointer(RFC_DOC, parse_pointer(pointer)) == value


@pytest.mark.parametrize("pointer", ["/foo/2", "/foo/01", "/foo/-", "/nope", "/foo/0/x", "/ /x"])
def test_pointers_that_lead_nowhere_are_missing(pointer):
    assert resolve_pointer(RFC_DOC, parse_pointer(pointer)) is MISSING


@pytest.mark.parametrize("pointer", ["foo", "/a~2", "/a~"])
def test_invalid_pointers(pointer):
    with pytest.raises(ValueError):
        parse_pointer(pointer)


@pytest.mark.parametrize("raw, words", [("{not json", "not valid JSON"), ('["/subject"]', "JSON object"),
                                        ('{"subject": "/s", "priority": "/p"}', "unknown field(s) priority"),
                                        ('{"tags": "/t"}', "at least one of subject and body"),
                                        ('{"subject": "fields/summary"}', "must be empty or start with '/'"),
                                        ('{"subject": 3}', "JSON pointer string")])
def test_generic_map_errors_name_the_setting(raw, words):
    with pytest.raises(BadRequest) as caught:
        parse_webhook_map(raw)
    assert caught.value.message.startswith("KB_GENERIC_WEBHOOK_MAP") and words in caught.value.message


def test_generic_ticket_from_a_jira_issue_with_an_atlassian_document_description():
    mapping = parse_webhook_map('{"subject": "/issue/fields/summary", "body": "/issue/fields/description", '
                                '"tags": "/issue/fields/labels", "ticket_id": "/issue/key", '
                                '"language": "/issue/fields/customfield_1/value"}')
    issue = {"issue": {"key": "SD-12", "fields": {
        "summary": "VPN drops", "labels": ["vpn", "network"], "customfield_1": {"value": "id"},
        "description": {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "It drops "},
                                              {"type": "text", "text": "every hour", "marks": [{"type": "strong"}]}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Error 809"}]}]}}}}
    ticket = generic_ticket(issue, mapping)
    assert (ticket.source, ticket.ticket_id, ticket.subject, ticket.tags, ticket.language) == \
        ("generic", "SD-12", "VPN drops", ("vpn", "network"), "id")
    assert ticket.body == "It drops every hour\nError 809"


def test_generic_ticket_missing_fields_and_wrong_types():
    mapping = parse_webhook_map('{"subject": "/s", "body": "/b", "ticket_id": "/id"}')
    assert generic_ticket({"b": "only a body"}, mapping).ticket_id is None
    with pytest.raises(EmptyTicket):
        generic_ticket({"other": 1}, mapping)
    with pytest.raises(InvalidPayload) as caught:
        generic_ticket({"s": ["a list"]}, mapping)
    assert 'subject (at "/s") must be a string' in caught.value.message
    with pytest.raises(InvalidPayload):
        generic_ticket({"s": "x", "id": {"nested": 1}}, mapping)


# ---- the replay cache ------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_replay_cache_answers_from_the_first_result_until_it_expires():
    clock, calls = Clock(), []
    cache = ReplayCache(300, clock=clock)

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert cache.answer(("zendesk", "1"), compute) == ({"n": 1}, False)
    clock.now += 299
    assert cache.answer(("zendesk", "1"), compute) == ({"n": 1}, True)
    assert cache.answer(("freshdesk", "1"), compute) == ({"n": 2}, False)  # another helpdesk's ticket 1
    clock.now += 2
    assert cache.answer(("zendesk", "1"), compute) == ({"n": 3}, False)
    assert cache.answer(None, compute) == ({"n": 4}, False) and cache.answer(None, compute) == ({"n": 5}, False)


def test_replay_cache_is_bounded_and_forgets_failures():
    cache = ReplayCache(300, max_entries=3, clock=Clock())
    for n in range(5):
        cache.answer(n, lambda: n)
    assert len(cache) == 3 and cache.answer(0, lambda: "again") == ("again", False)

    def boom():
        raise RuntimeError("index went away")

    with pytest.raises(RuntimeError):
        cache.answer("t", boom)
    assert cache.answer("t", lambda: "ok") == ("ok", False)


def test_concurrent_deliveries_of_one_ticket_compute_once():
    cache, started, release, calls = ReplayCache(300), threading.Event(), threading.Event(), []

    def slow():
        calls.append(1)
        started.set()
        assert release.wait(10)
        return "first"

    results = []
    first = threading.Thread(target=lambda: results.append(cache.answer("t", slow)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(cache.answer("t", slow)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert calls == [1] and sorted(results) == [("first", False), ("first", True)]
