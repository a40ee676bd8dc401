"""The connection to one Milvus: calls bounded in time, an engine out of reach raised as IndexUnavailable (said once in
the log, once again when it answers), collections loaded again after the server restarted."""
from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from kb.errors import IndexUnavailable

log = logging.getLogger("kb.index")

TIMEOUT = 10.0  # seconds a call waits for Milvus' answer (build steps excepted): KB_MILVUS_TIMEOUT's default
LOCAL = frozenset({"create_schema", "prepare_index_params"})  # made by the client alone: no timeout to pass
UNBOUNDED = LOCAL | frozenset({"insert", "upsert", "delete", "flush", "create_collection", "drop_collection",
                               "create_alias", "alter_alias", "create_index"})  # a build's steps
# A version's collections loaded when it is opened (a service starting or taking a new version, a build reading its
# base) wait at most this long, or the call's timeout when longer: a large collection takes its time to load, but a
# load that never finishes must not hold a replica's start or its swaps for ever (pymilvus waits without end when
# given no timeout). One that runs out is IndexUnavailable; the next try (the start wait, the next poll) asks again.
OPEN_LOAD_SECONDS = 60.0
NOT_LOADED = 101  # Milvus' code for a collection that is not loaded: a restarted milvus-lite loads none again
LOAD_ATTEMPTS = 3  # loads of a collection found not loaded before a call gives up (right after a restart milvus-lite
#                   once answered "released" to a call made just after its load had returned, when two ran at once)
FAIL_FAST_SECONDS = 1.0  # after a call found the engine out of reach, calls fail at once for this long


def shown(uri: str) -> str:
    """A URI as messages show it: without a user name or password."""
    parts = urlsplit(uri)
    if not parts.scheme or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def out_of_reach(exc: BaseException) -> str | None:
    """Why a failed call never had an answer (refused, reset, no answer in time, no connection), or None when Milvus
    answered with an error (a bad request: not an engine out of reach). Reads the whole chain of causes."""
    import grpc
    from pymilvus.client.types import Status
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    pending, visited = [exc], set()
    while pending:
        seen = pending.pop(0)
        if seen is None or id(seen) in visited:  # pymilvus raises `e from e`: the chain can loop
            continue
        visited.add(id(seen))
        if isinstance(seen, grpc.RpcError) and seen.code() in (grpc.StatusCode.UNAVAILABLE,
                                                                 grpc.StatusCode.DEADLINE_EXCEEDED):
            details = (seen.details() or "").splitlines()
            return f"{seen.code().name.lower()}: {details[0] if details else ''}".rstrip(": ")
        if isinstance(seen, (ConnectError, MilvusUnavailableException)) or \
                (isinstance(seen, MilvusException) and seen.code == Status.CONNECT_FAILED):
            return "no connection"
        if isinstance(seen, grpc.FutureTimeoutError):
            return "no connection in time"
        pending += [seen.__cause__, seen.__context__]
    return None


class Connection:
    """A MilvusClient for `uri`, made on first use (a service starts while Milvus is out of reach), whose calls
    (`connection.search(...)`, as on the client) wait at most `timeout` seconds (a load at least OPEN_LOAD_SECONDS),
    build steps excepted. A call that gets no answer raises IndexUnavailable (503); for FAIL_FAST_SECONDS after, calls
    raise it at once, so that one request waits the timeout rather than every call of every request; then the next
    call tries again."""

    def __init__(self, uri: str, timeout: float):
        self.uri, self.timeout = uri, timeout
        self._client = None
        self._guard = threading.Lock()
        self._loading = threading.Lock()  # held while a collection found not loaded is loaded again
        self.down: str | None = None  # why the last call got no answer; None when it did
        self._down_at = 0.0

    def __repr__(self) -> str:
        return f"Connection({shown(self.uri)!r})"

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)

    def call(self, name: str, *args, **kwargs):
        """client.<name>(*args, **kwargs), bounded and guarded; a collection found not loaded is loaded again."""
        from pymilvus.exceptions import MilvusException

        down = self.down
        if down is not None and time.monotonic() - self._down_at < FAIL_FAST_SECONDS:
            raise self._unavailable(down)
        if name not in UNBOUNDED and self.timeout > 0:
            kwargs.setdefault("timeout", max(self.timeout, OPEN_LOAD_SECONDS) if name == "load_collection"
                              else self.timeout)
        try:
            client = self._connected()
            for attempt in range(LOAD_ATTEMPTS + 1):
                try:
                    result = getattr(client, name)(*args, **kwargs)
                    break
                except MilvusException as exc:
                    if exc.code != NOT_LOADED or not args or not isinstance(args[0], str):
                        raise
                    if attempt == LOAD_ATTEMPTS:  # loaded and still not: the engine cannot serve it now (503)
                        raise self._unavailable(f"collection {args[0]} is not loaded") from None
                    self._load(client, args[0])
        except IndexUnavailable:
            raise
        except Exception as exc:
            why = out_of_reach(exc)
            if why is None and name == "load_collection" and isinstance(exc, MilvusException) and args:
                raise self._unavailable(f"collection {args[0]} did not load: {exc.message}") from None
            if why is None:
                raise
            raise self._lost(why) from None
        if self.down is not None:
            self._reached()
        return result

    def _load(self, client, collection: str) -> None:
        """Load a collection a call found not loaded (Milvus restarted), within the timeout: pymilvus waits for a load
        without end when given none (seen: a search after a restart hung past 120 s). The calls of one request at
        once (search/signals.py) load in turn; a load that does not finish in time is a 503, and the next request
        asks again."""
        from pymilvus.exceptions import MilvusException

        bound = self.timeout if self.timeout > 0 else None
        if not self._loading.acquire(timeout=-1 if bound is None else bound):
            raise self._unavailable(f"collection {collection} is being loaded")
        try:
            client.load_collection(collection, timeout=bound)
        except MilvusException as exc:
            if out_of_reach(exc) is not None:
                raise
            raise self._unavailable(f"collection {collection} did not load: {exc.message}") from None
        finally:
            self._loading.release()

    def _connected(self):
        with self._guard:
            if self._client is None:
                from pymilvus import MilvusClient

                # pymilvus logs each failed call with its traceback; this connection says an outage once instead
                for name in ("pymilvus.decorators", "pymilvus.client.connection_manager"):
                    logging.getLogger(name).setLevel(logging.CRITICAL)
                self._client = MilvusClient(self.uri, timeout=self.timeout or None)
            return self._client

    def _unavailable(self, why: str) -> IndexUnavailable:
        return IndexUnavailable(f"the index engine (Milvus at {shown(self.uri)}) does not answer ({why})")

    def _lost(self, why: str) -> IndexUnavailable:
        with self._guard:
            first, self.down, self._down_at = self.down is None, why, time.monotonic()
        error = self._unavailable(why)
        if first:
            log.error("%s", error.message)
        return error

    def _reached(self) -> None:
        with self._guard:
            was, self.down = self.down, None
        if was is not None:
            log.warning("the index engine (Milvus at %s) answers again", shown(self.uri))
