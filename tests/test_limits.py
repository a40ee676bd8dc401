"""Bodies over KB_MAX_BODY_BYTES are 413 before they are read; JSON with lone surrogates is 400 and the keep-alive
connection survives it (in-process, then against a real `kb serve`)."""
import json
import socket
import time

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.errors import BadRequest
from kb.settings import load_settings
from search.app import create_app
from search.limits import lone_surrogate

ARTICLE = "Teams/teams-microphone-not-working"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from tests.conftest import FIXTURE_CONTENT, TinyEncoder

    root = tmp_path_factory.mktemp("limits")
    build_index(load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=root / "index"), TinyEncoder(),
                progress=False)
    return root / "index"


@pytest.fixture
def client(index_dir, tmp_path, tiny_encoder):
    settings = load_settings({}, index_dir=index_dir, feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "u.sqlite",
                             analytics_db=tmp_path / "a.sqlite", webhook_db=tmp_path / "w.sqlite",
                             reload_poll_seconds=0, max_body_bytes=4096, webhook_max_bytes=8192)
    with TestClient(create_app(settings, encoder=tiny_encoder), raise_server_exceptions=False) as client:
        yield client


# ---- lone surrogates -----------------------------------------------------------------------------
@pytest.mark.parametrize("body, where", [
    (b'{"body": "outlook \\ud800 password"}', "$.body"),
    (b'{"subject": "ok", "tags": ["a", "\\uDFFF"]}', "$.tags[1]"),
    (b'{"body": "ok", "\\ud83d": 1}', "a key in $"),
    (b'{"a": {"b": [{"c": "x\\ud800\\ud800y"}]}}', "$.a.b[0].c"),
    (b'{"body": "\\ude00\\ud83d"}', "$.body"),  # a pair in the wrong order is two lone ones
    (b'{"body": "\xed\xa0\x80"}', "$.body"),  # a surrogate's bytes in UTF-8 form: json.loads lets them through
    ('{"body": "\\ud800"}'.encode("utf-16"), "$.body"),
])
def test_lone_surrogates_are_found_and_named(body, where):
    assert lone_surrogate(body) == where


@pytest.mark.parametrize("body", [
    b'{"body": "emoji \\ud83d\\ude00 escaped as a pair"}', '{"body": "emoji 😀 as UTF-8"}'.encode(),
    b'{"body": "a backslash then text: \\\\ud800"}', b'{"body": "no escapes"}', b'{not json \\ud800',
    b'[' * 100_000 + b'"\\ud800"' + b']' * 100_000,  # too deep to parse: the route says it is malformed
])
def test_valid_text_and_non_json_pass(body):
    assert lone_surrogate(body) is None


@pytest.mark.parametrize("path, body", [
    ("/api/suggest", '{"body": "outlook \\ud800 password"}'),
    ("/api/feedback", f'{{"query": "\\ud800", "article_id": "{ARTICLE}", "helpful": true}}'),
    ("/api/feedback", '{"query": "x", "article_id": "\\udc00", "helpful": true}'),
    ("/api/events", f'{{"kind": "open", "article_id": "{ARTICLE}", "source": "page", "answer_id": "\\ud800"}}'),
    ("/api/webhooks/generic", '{"subject": "\\ud800", "body": "outlook"}'),
])
def test_json_with_a_lone_surrogate_is_400_malformed_json(client, path, body):
    response = client.post(path, content=body.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "malformed_json" and "lone UTF-16 surrogate" in error["message"]
    assert response.headers.get("connection") != "close"
    assert client.get("/healthz").status_code == 200


def test_a_pair_of_surrogates_is_text_and_is_answered(client):
    response = client.post("/api/suggest", content=b'{"body": "outlook \\ud83d\\ude00 password"}', headers=JSON)
    assert response.status_code == 200 and "\U0001F600" in response.json()["query"]["text"]


def test_form_posts_are_not_read_as_json(client):
    response = client.post("/suggest", data={"subject": "outlook", "body": "\\ud800 is text here"},
                           headers={"accept": "text/html"})
    assert response.status_code == 200


# ---- body size -----------------------------------------------------------------------------------
def test_a_declared_length_over_the_limit_is_413_before_reading(client):
    body = json.dumps({"body": "outlook " * 600}).encode()
    assert len(body) > 4096
    response = client.post("/api/suggest", content=body, headers=JSON)
    assert response.status_code == 413 and response.headers["connection"] == "close"
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and "4096-byte limit (KB_MAX_BODY_BYTES)" in error["message"]
    assert f"of {len(body)} bytes" in error["message"]


def test_a_chunked_body_is_counted(client):
    """No Content-Length: counted as it arrives (that it is refused before the end: the real-server test below)."""
    response = client.post("/api/suggest", content=(b"x" * 1000 for _ in range(100)), headers=JSON)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert "content-length" not in response.request.headers


def test_a_body_at_the_limit_is_read(client):
    body = json.dumps({"body": "outlook password"}).encode()
    body = body[:-1] + b" " * (4096 - len(body)) + b"}"
    assert len(body) == 4096
    assert client.post("/api/suggest", content=body, headers=JSON).status_code == 200


def test_webhooks_have_their_own_limit(client):
    body = json.dumps({"subject": "outlook password", "body": "x" * 5000}).encode()
    assert 4096 < len(body) < 8192
    assert client.post("/api/webhooks/generic", content=body, headers=JSON).status_code == 200
    response = client.post("/api/webhooks/generic", content=b"{" + b" " * 9000 + b"}", headers=JSON)
    assert response.status_code == 413 and "KB_WEBHOOK_MAX_BYTES" in response.json()["error"]["message"]


def test_a_browser_form_over_the_limit_gets_a_page(client):
    response = client.post("/suggest", data={"body": "x" * 5000}, headers={"accept": "text/html"})
    assert response.status_code == 413 and response.headers["content-type"].startswith("text/html")


def test_the_limit_must_be_positive():
    with pytest.raises(BadRequest, match="KB_MAX_BODY_BYTES"):
        load_settings({"KB_MAX_BODY_BYTES": "0"})
    assert load_settings({}).max_body_bytes == 1_048_576


# ---- against a real server: what happens to the connection ---------------------------------------
def post(port: int, path: str, body: bytes, length: int | None = None) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


def response_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without answering"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def server(real_index, tmp_path_factory):
    from tests.conftest import running_server

    with running_server(real_index.index_dir, tmp_path_factory.mktemp("limits-server")) as (_, port):
        yield port


@pytest.mark.model
def test_a_lone_surrogate_keeps_the_keep_alive_connection(server):
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        for body in (b'{"subject": "\\ud800", "body": "outlook asks for my password"}',
                     f'{{"query": "\\udfff", "article_id": "{ARTICLE}", "helpful": true}}'.encode()):
            sock.sendall(post(server, "/api/feedback" if b"query" in body else "/api/suggest", body))
            status, headers, text = response_of(sock)
            assert status == 400 and json.loads(text)["error"]["code"] == "malformed_json"
            assert headers.get("connection") != "close"
        sock.sendall(post(server, "/api/suggest", b'{"body": "outlook keeps asking for my password"}'))
        status, _, text = response_of(sock)  # the same connection still answers
        assert status == 200 and json.loads(text)["answers"]


@pytest.mark.model
def test_a_huge_declared_body_is_refused_at_once_and_the_connection_closed(server):
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(post(server, "/api/suggest", b'{"body": "', length=2**30))  # 1 GiB announced, 10 bytes sent
        status, headers, text = response_of(sock)
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(text)["error"]["code"] == "payload_too_large"
        assert time.perf_counter() - started < 5
        assert sock.recv(1) == b""  # closed: the rest of the body is never read


@pytest.mark.model
def test_a_chunked_body_is_refused_once_past_the_limit(server):
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(f"POST /api/suggest HTTP/1.1\r\nHost: 127.0.0.1:{server}\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"x" * 65536
        sent = 0
        try:
            while sent < 64 * 2**20:  # at most 64 MiB; refused after about 1 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 16 * 2**20
        try:
            status, headers, _ = response_of(sock)
        except ConnectionResetError:  # the server closed while data was in flight: Linux may reset first
            return
        assert status == 413 and headers["connection"] == "close"
