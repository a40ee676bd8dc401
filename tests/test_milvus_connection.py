"""kb/index/milvus/connection.py: which failures mean Milvus is out of reach, URIs without credentials in messages,
one bounded wait then failing fast, and recovery (with a real `milvus-lite server`: tests/milvus_server.py)."""
from __future__ import annotations

import logging

import pytest

from kb.errors import IndexUnavailable
from tests.conftest import wait_until
from tests.test_index_contract import needs_engine


@pytest.fixture(autouse=True)
def milvus_extra():
    needs_engine("milvus")


def test_out_of_reach_reads_the_whole_chain_of_causes():
    import grpc
    from pymilvus.client.types import Status
    from pymilvus.exceptions import MilvusException

    from kb.index.milvus.connection import out_of_reach

    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "failed to connect to all addresses\nmore"

    class Invalid(Refused):
        def code(self):
            return grpc.StatusCode.INVALID_ARGUMENT

    looped = MilvusException(code=Status.UNEXPECTED_ERROR, message="retry ran out")
    looped.__cause__ = looped  # pymilvus raises `e from e`
    looped.__context__ = Refused()
    assert out_of_reach(looped) == "unavailable: failed to connect to all addresses"
    assert out_of_reach(MilvusException(code=Status.CONNECT_FAILED, message="Fail connecting")) == "no connection"
    assert out_of_reach(MilvusException(code=1100, message="cannot parse expression")) is None  # an answer: a bug
    assert out_of_reach(Invalid()) is None
    assert out_of_reach(ValueError("x")) is None


def test_messages_show_no_credentials():
    from kb.index.milvus.connection import shown

    assert shown("https://root:s3cret@milvus.example:19530") == "https://milvus.example:19530"
    assert shown("http://127.0.0.1:19530") == "http://127.0.0.1:19530"
    assert shown("/srv/index/milvus.db") == "/srv/index/milvus.db"


def test_one_bounded_wait_then_fail_fast_then_recover(tmp_path, caplog):
    """Nothing listens: the first call raises IndexUnavailable, later calls within FAIL_FAST_SECONDS raise it
    without calling Milvus; once a server listens there, a call after the window reaches it and the log says the
    loss and the recovery once each."""
    from kb.index.milvus import connection
    from tests.milvus_server import MilvusLiteServer

    server = MilvusLiteServer(tmp_path / "data", tmp_path / "milvus.log")
    conn = connection.Connection(server.uri, timeout=5)
    with caplog.at_level(logging.INFO, logger="kb.index"):
        with pytest.raises(IndexUnavailable, match=r"the index engine \(Milvus at http://127\.0\.0\.1:\d+\) does "
                                                   r"not answer"):
            conn.list_collections()
        tried = []
        conn._connected = lambda: tried.append(1)  # a call that tried would show here
        with pytest.raises(IndexUnavailable):
            conn.list_collections()
        assert tried == [] and conn.down is not None
        del conn._connected
        def reached() -> bool:
            try:
                return conn.list_collections() == []
            except IndexUnavailable:
                return False

        try:
            server.start()
            wait_until(reached, 60, "the connection never reached the server", interval=connection.FAIL_FAST_SECONDS)
        finally:
            server.stop()
    assert conn.down is None
    said = [r.getMessage() for r in caplog.records if r.name == "kb.index"]
    assert len([m for m in said if "does not answer" in m]) == 1 and len([m for m in said if "answers again" in m]) == 1


def test_the_timeout_setting_reaches_the_connection(tmp_path):
    """KB_MILVUS_TIMEOUT travels from the settings through backend_for to the Connection; unset, it is TIMEOUT."""
    from kb.index import backend_for
    from kb.index.milvus.connection import TIMEOUT
    from kb.settings import load_settings

    assert load_settings({}).milvus_timeout == TIMEOUT
    uri = str(tmp_path / "milvus.db")
    given = load_settings({"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": uri, "KB_MILVUS_TIMEOUT": "2.5",
                           "KB_INDEX_DIR": str(tmp_path / "index")})
    assert backend_for(given).client.timeout == 2.5
    default = load_settings({"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": uri, "KB_INDEX_DIR": str(tmp_path)})
    assert backend_for(default).client.timeout == TIMEOUT


def test_a_short_timeout_bounds_a_call_to_a_frozen_server(tmp_path):
    """A server that accepts and never answers (SIGSTOP): with KB_MILVUS_TIMEOUT=1 a call raises IndexUnavailable
    (deadline exceeded) after about 1 s, well before the 10 s default; thawed, the backend answers again."""
    import time

    from kb.index import backend_for
    from kb.index.milvus.connection import FAIL_FAST_SECONDS, TIMEOUT
    from kb.settings import load_settings
    from tests.milvus_server import milvus_lite_server

    with milvus_lite_server(tmp_path / "milvus") as server:
        settings = load_settings({"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": server.uri, "KB_MILVUS_TIMEOUT": "1",
                                  "KB_INDEX_DIR": str(tmp_path / "index")})
        backend = backend_for(settings)
        assert backend.current() is None
        server.freeze()
        started = time.monotonic()
        with pytest.raises(IndexUnavailable, match="deadline_exceeded"):
            backend.current()
        took = time.monotonic() - started
        assert 0.9 <= took < TIMEOUT / 2, took
        server.thaw()
        time.sleep(FAIL_FAST_SECONDS)
        assert backend.current() is None


def test_start_wait_tries_again_with_a_bounded_backoff_and_only_for_an_engine_out_of_reach(caplog):
    """when_reached (kb/index/waiting.py): pauses of 1, 2, 4, then 5 s; the result once the engine answers; the last
    IndexUnavailable once the wait is spent (0: after one try); any other error (IndexNotFound, IndexMismatch) at
    once. One log line when the wait starts, one when the engine answered."""
    from kb.errors import IndexMismatch, IndexNotFound
    from kb.index.waiting import when_reached

    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    def engine(answers_after: int, error: Exception | None = None):
        tries = []

        def attempt():
            tries.append(now[0])
            if error is not None:
                raise error
            if len(tries) <= answers_after:
                raise IndexUnavailable(f"the index engine (Milvus at http://m:19530) does not answer (try {len(tries)})")
            return "opened"
        return attempt, tries

    with caplog.at_level(logging.INFO, logger="kb.index"):
        attempt, tries = engine(answers_after=5)
        assert when_reached(attempt, 120, sleep, lambda: now[0]) == "opened"
    assert slept == [1, 2, 4, 5, 5] and tries == [0, 1, 3, 7, 12, 17]
    said = [r.getMessage() for r in caplog.records if r.name == "kb.index"]
    assert said == ["the index engine (Milvus at http://m:19530) does not answer (try 1): waiting up to 120 s for it "
                    "(KB_MILVUS_START_WAIT)", "the index engine answered after 17.0 s of waiting: starting"]

    now[0], slept[:] = 0.0, []
    attempt, tries = engine(answers_after=99)
    with pytest.raises(IndexUnavailable, match=r"\(try 5\)"):
        when_reached(attempt, 10, sleep, lambda: now[0])
    assert slept == [1, 2, 4, 3] and now[0] == 10  # the last pause is cut to the wait left
    for wait in (0, 120):
        for error in (IndexNotFound("no index on http://m:19530"), IndexMismatch("built with another model")):
            attempt, tries = engine(answers_after=0, error=error)
            slept[:] = []
            with pytest.raises(type(error)):
                when_reached(attempt, wait, sleep, lambda: now[0])
            assert len(tries) == 1 and slept == []
    attempt, tries = engine(answers_after=1)
    with pytest.raises(IndexUnavailable, match=r"\(try 1\)"):
        when_reached(attempt, 0, sleep, lambda: now[0])
    assert len(tries) == 1


class NotLoadedClient:
    """A client whose collection answers "not loaded" (code 101) `failures` times, loaded again or not."""

    def __init__(self, failures: int, stuck: bool = False):
        self.failures, self.stuck, self.loads, self.searches = failures, stuck, 0, 0

    def search(self, collection, **kwargs):
        from pymilvus.exceptions import MilvusException

        self.searches += 1
        if self.searches <= self.failures:
            raise MilvusException(code=101, message=f"Collection '{collection}' is in state 'released'")
        return [["hit"]]

    def load_collection(self, collection, timeout=None, **kwargs):
        from pymilvus.exceptions import MilvusException

        assert timeout is not None, "a load without a timeout may wait for ever"
        self.loads += 1
        if self.stuck:  # pymilvus' own end of a load that never reaches 100%
            raise MilvusException(message=f"wait for loading collection timeout, collection: {collection}")


def connected(client, timeout: float = 5):
    from kb.index.milvus.connection import Connection

    connection = Connection("http://127.0.0.1:1", timeout=timeout)
    connection._client = client
    return connection


def test_a_collection_found_released_after_its_load_is_loaded_again():
    """Right after a restart, a request's two calls at once (search/signals.py) met a collection "released" just after
    a load had returned: the call loads and asks again, a bounded number of times."""
    client = NotLoadedClient(failures=2)
    assert connected(client).search("kb_v1", data=["x"]) == [["hit"]]
    assert client.loads == 2 and client.searches == 3


def test_a_collection_that_stays_unloaded_is_a_503_not_a_500():
    from kb.index.milvus.connection import LOAD_ATTEMPTS

    client = NotLoadedClient(failures=100)
    with pytest.raises(IndexUnavailable, match="kb_v1 is not loaded"):
        connected(client).search("kb_v1", data=["x"])
    assert client.loads == LOAD_ATTEMPTS and client.searches == LOAD_ATTEMPTS + 1


def test_a_load_that_does_not_finish_in_time_is_a_503_not_a_hang():
    """After a restart a search met its collection not loaded, and pymilvus' load, given no timeout, waited without
    end (a CI run: past the client's 120 s). The load gets the connection's timeout; when it runs out, a 503."""
    client = NotLoadedClient(failures=100, stuck=True)
    with pytest.raises(IndexUnavailable, match="kb_v1 did not load: wait for loading collection timeout"):
        connected(client).search("kb_v1", data=["x"])
    assert client.loads == 1 and client.searches == 1


def test_a_load_in_progress_is_waited_for_at_most_the_timeout():
    """Another request's load holds the loading lock: this one waits the timeout for it, then answers 503."""
    import threading
    import time

    client = NotLoadedClient(failures=100)
    connection = connected(client, timeout=0.2)
    outcome: list = []

    def search() -> None:
        started = time.monotonic()
        try:
            connection.search("kb_v1", data=["x"])
        except IndexUnavailable as exc:
            outcome.append((exc.message, time.monotonic() - started))

    connection._loading.acquire()  # another request's load that takes its time
    waiting = threading.Thread(target=search)
    waiting.start()
    waiting.join(timeout=5)
    connection._loading.release()
    waiting.join()
    assert outcome and "kb_v1 is being loaded" in outcome[0][0] and 0.2 <= outcome[0][1] < 5
    assert client.loads == 0


class StuckLoads:
    """A pymilvus client whose loads never finish: pymilvus ends a load given a timeout with its own error; given
    none it waits for ever (here: an error that says so, so that the old code fails rather than hangs)."""

    def __init__(self, client):
        self.client, self.loads = client, []

    def load_collection(self, collection, timeout=None, **kwargs):
        from pymilvus.exceptions import MilvusException

        self.loads.append((collection, timeout))
        if timeout is None:
            raise AssertionError(f"a load of {collection} without a timeout waits for ever")
        raise MilvusException(message=f"wait for loading collection timeout, collection: {collection}")

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_version_whose_collections_do_not_load_is_unavailable_at_open_not_a_hang(tmp_path):
    """A replica opening a version (at start, at a swap) loads its collections: a load that never finishes is a bounded
    wait and IndexUnavailable (the start wait and the next poll try again), not a replica stuck for ever."""
    from kb.index import open_backend
    from kb.index.milvus import MilvusBackend
    from kb.index.milvus.connection import OPEN_LOAD_SECONDS
    from tests.test_index_contract import ARTICLES, DIM, MODEL, PASSAGES, VECTORS

    backend = open_backend(tmp_path / "index", "milvus")
    name = backend.new_name()
    backend.write(name, ARTICLES, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM, "content_hash": "c"})
    connection = backend.client
    real = connection._connected()
    connection._client = stuck = StuckLoads(real)
    try:
        with pytest.raises(IndexUnavailable, match=f"collection kb_{name} did not load: wait for loading"):
            backend.open(model_id=MODEL)
        with pytest.raises(IndexUnavailable, match="did not load"):
            MilvusBackend(tmp_path / "index")  # the registry, loaded by every backend as it is made
        assert len(stuck.loads) == 2
        assert all(timeout == max(connection.timeout, OPEN_LOAD_SECONDS) for _, timeout in stuck.loads)
        assert connection.down is None  # Milvus answered: a load that does not finish is no engine out of reach
    finally:
        connection._client = real
    with backend.open(model_id=MODEL) as reader:  # loads that finish open the version as before
        assert reader.size == len(PASSAGES)
