"""search/access_log.py: access log lines carry paths without query strings, in a real `kb serve` too."""
import logging
import re

import httpx
import pytest

from search.access_log import ACCESS_LOGGER, PathOnly, install_path_only
from tests.conftest import running_server

SECRET_WORDS = "zebracorn budi@example.com"


def access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", 200), None)


def test_the_filter_keeps_the_path_and_drops_the_query():
    record = access_record("/api/search?q=zebracorn&k=5")
    assert PathOnly().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5000 - "GET /api/search HTTP/1.1" 200'
    untouched = access_record("/healthz")
    PathOnly().filter(untouched)
    assert untouched.getMessage() == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    other = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("a?b",), None)
    PathOnly().filter(other)
    assert other.getMessage() == "plain a?b"  # records in other shapes pass as they are


def test_installing_twice_adds_one_filter():
    install_path_only()
    install_path_only()
    assert sum(isinstance(f, PathOnly) for f in logging.getLogger(ACCESS_LOGGER).filters) == 1


@pytest.mark.model
@pytest.mark.parametrize("args", [("--no-watch",), ("--no-watch", "--workers", "2")], ids=["one", "workers"])
def test_a_real_kb_serve_logs_no_query_strings(real_index, tmp_path, args):
    with running_server(real_index.index_dir, tmp_path, {"KB_LOG_LEVEL": "info"}, args=args) as (base, _):
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(2 if len(args) > 1 else 1):  # with two workers, fresh connections may reach either
                assert client.get("/", params={"q": SECRET_WORDS}).status_code == 200
                assert client.get("/api/search", params={"q": SECRET_WORDS, "k": 3}).status_code == 200
                assert client.get("/articles/Outlook/outlook-password-prompt",
                                  params={"from": "0123456789abcdef", "pos": 1}).status_code == 200
                assert client.get("/api/search", params={"q": ""}).status_code == 400
    log = (tmp_path / "server.log").read_text()
    lines = [line for line in log.splitlines() if '"GET ' in line]
    assert any('"GET /api/search HTTP/1.1" 200' in line for line in lines), log
    assert any('"GET /api/search HTTP/1.1" 400' in line for line in lines), log
    assert any('"GET /articles/Outlook/outlook-password-prompt HTTP/1.1" 200' in line for line in lines), log
    assert any(re.search(r'"GET / HTTP/1.1" 200', line) for line in lines), log
    for secret in ("zebracorn", "budi", "example.com", "0123456789abcdef", "q=", "?"):
        assert secret not in "\n".join(lines), log
    assert "zebracorn" not in log
