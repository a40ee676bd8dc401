"""Versions: the index version in service: opened with its checks, swapped in, re-verified, released when replaced."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from indexer import failures
from kb import integrity
from kb.errors import IndexDamaged, IndexNotFound, IndexUnavailable, KBError
from kb.index import IndexBackend, IndexReader
from search.searcher import Searcher

log = logging.getLogger("kb.app")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Versions:
    """The searcher of the version in service, and what the service knows about the others.

    CURRENT names the version to serve. A version that fails its checks on open is never swapped in; it is
    remembered in `failed` (build id -> why) and reported by /healthz. A damaged one (IndexDamaged, or CURRENT
    itself unreadable) is reported too, and the service answers from a version that is intact: the one already
    in service, else the newest intact version older than the damaged one; with none, from nothing (503), never
    from damaged files. The version in service is read again against its checksums every `verify_seconds`.

    Requests `lease()` the searcher and release its version when they finish; a replaced version is retired and
    closes its files when its last request has released it.

    An index engine out of reach (IndexUnavailable: a Milvus server that does not answer) fails no version: it is
    kept in `unavailable` until a later look reaches the engine again, and the version in service stays.
    """

    def __init__(self, backend: IndexBackend, index_dir: Path, model_id: str,
                 make_searcher: Callable[[IndexReader], Searcher], verify_seconds: float = 0.0):
        self.backend, self.index_dir, self.model_id, self._make = backend, index_dir, model_id, make_searcher
        self.verify_seconds = verify_seconds
        self.searcher: Searcher | None = None
        self.load_error: KBError | None = None
        self.failed: dict[str, str] = {}  # build id -> why it was not put into service (or taken out of it)
        self.current: str | None = None  # what CURRENT named at the last look (None: no CURRENT, or unreadable)
        self.verified_at: str | None = None  # when the files in service last matched their checksums
        self.last_job_failure: dict | None = None  # the service's own last build, when it failed
        self.unavailable: IndexUnavailable | None = None  # the index engine did not answer at the last look
        self._lock = threading.Lock()
        self._next_verify = time.monotonic() + verify_seconds

    @property
    def serving(self) -> str | None:
        return self.searcher.version.build_id if self.searcher is not None else None

    # ---- requests ------------------------------------------------------------------------
    def lease(self) -> Searcher | None:
        """The searcher in service with its version acquired (the caller releases it), or None without one."""
        while True:
            searcher = self.searcher
            if searcher is None or searcher.version.acquire():
                return searcher
            # Closed between the read and the acquire: a newer version is in service now; take that one.

    # ---- following CURRENT ---------------------------------------------------------------
    def refresh(self) -> bool:
        """Swap in the version named by CURRENT if it is new and passes its checks; True when swapped."""
        with self._lock:
            try:
                swapped = self._refresh()
            except IndexUnavailable as exc:  # nothing learnt about any version: look again at the next poll
                self.unavailable = exc
                return False
            self.unavailable = None
            return swapped

    def _refresh(self) -> bool:
        """refresh() under the lock; IndexUnavailable goes up, before any version is refused for it."""
        try:
            build_id = self.current = self.backend.current()
        except IndexDamaged as exc:
            self.current = None
            if self.load_error is None or self.load_error.message != exc.message:
                log.error("%s", exc.message)
            return self._fall_back(exc, below=None)
        if build_id is None:
            if self.searcher is None and not isinstance(self.load_error, IndexNotFound):
                # Said by start_background, which knows whether one is being built.
                self.load_error = IndexNotFound(f"no index in {self.index_dir}: run `kb index --index-dir "
                                                f"{self.index_dir}` first")
            return False
        if build_id == self.serving or build_id in self.failed:
            return False
        try:
            searcher = self._open(build_id)
        except IndexUnavailable:
            raise
        except KBError as exc:
            self._refuse(build_id, exc)
            return self._fall_back(exc, below=build_id) if isinstance(exc, IndexDamaged) else False
        self._swap(searcher)
        self.load_error = None
        return True

    def verify(self, force: bool = False) -> bool:
        """Read the files in service again against their checksums when it is time (every `verify_seconds`);
        on damage, take the version out of service as `refresh` would. False when damage was found."""
        if not force and (self.verify_seconds <= 0 or time.monotonic() < self._next_verify):
            return True
        self._next_verify = time.monotonic() + self.verify_seconds
        with self._lock:
            searcher = self.searcher
            if searcher is None:
                return True
            try:
                if searcher.version.verify():
                    self.verified_at = _now()
                return True
            except IndexDamaged as exc:
                self._refuse(searcher.version.build_id, exc)
                self._fall_back(exc, below=searcher.version.build_id)
                return False

    def _open(self, build_id: str) -> Searcher:
        version = self.backend.open(build_id, self.model_id)
        try:
            return self._make(version)
        except KBError:
            version.close()
            raise
        except Exception as exc:  # noqa: BLE001 - files that pass their checks but do not load: never a crash
            version.close()
            log.exception("index version %s could not be loaded", build_id)
            raise integrity.damaged(self.index_dir / build_id, f"it could not be loaded ({type(exc).__name__}: {exc})") from None

    def _refuse(self, build_id: str, exc: KBError) -> None:
        self.failed[build_id] = exc.message
        self.load_error = exc
        if self.searcher is not None and self.serving != build_id:
            log.error("index version %s not put into service, still serving %s: %s", build_id, self.serving,
                      exc.message)
        else:
            log.error("index not loaded: %s", exc.message)

    def _fall_back(self, exc: KBError, below: str | None) -> bool:
        """After damage: keep an intact version in service, else swap in the newest intact one older than the
        damaged one (any, when CURRENT names none), else serve nothing. True when a version was swapped in."""
        repeated = self.load_error is not None and self.load_error.message == exc.message
        self.load_error = exc
        serving = self.serving
        if serving is not None and serving not in self.failed:
            return False
        for candidate in reversed(self.backend.list()):
            if candidate in self.failed or (below is not None and candidate >= below):
                continue
            try:
                searcher = self._open(candidate)
            except IndexUnavailable:
                raise
            except KBError as refused:
                self.failed[candidate] = refused.message
                log.error("index version %s not served either: %s", candidate, refused.message)
                continue
            self._swap(searcher)
            log.warning("answering from index version %s, the newest intact one, until `kb index` builds a new "
                        "one: %s", candidate, exc.message)
            return True
        if serving is not None:  # the version in service is the damaged one: no answers rather than wrong ones
            self._swap(None)
        if not repeated:
            log.error("no intact index version to serve in %s: %s", self.index_dir, exc.message)
        return False

    def _swap(self, searcher: Searcher | None) -> None:
        old, self.searcher = self.searcher, searcher
        if searcher is not None:
            self.verified_at = _now() if searcher.version.sealed else None
            if not searcher.version.sealed:
                log.warning("index version %s has no checksums (built before them): checked on open only as far as "
                            "its engine allows (SQLite's quick_check; Milvus: the passage count); `kb index --full` "
                            "writes one that has them", searcher.version.build_id)
            log.info("serving index version %s (%d passages)", searcher.version.build_id,
                     searcher.version.size)
        if old is not None:
            old.version.retire()  # closes its files once the requests still on it have finished

    # ---- what /healthz says --------------------------------------------------------------
    def note_job(self, job) -> None:
        """A build job of this service finished (BuildJobs listener)."""
        self.last_job_failure = {"job": job.id, "finished": job.finished, "error": job.error} \
            if job.state == "failed" else None

    def failed_build(self) -> dict | None:
        """The last build that failed, if no build succeeded since: recorded in the index folder by whichever
        process built (kb index, kb watch, this service), else this service's own job when the record could not
        be written (a full disk) and no version was built after it."""
        record = failures.read(self.index_dir)
        if record is not None:
            return {"finished": record.get("finished"), "error": record["error"]}
        job = self.last_job_failure
        created = self.searcher.version.manifest.get("created", "") if self.searcher is not None else ""
        if job is not None and (job["finished"] or "") > created:
            return {"finished": job["finished"], "error": job["error"]}
        return None

    def integrity(self) -> dict:
        version = self.searcher.version if self.searcher is not None else None
        return {"checksums": "verified" if version is not None and version.sealed else "absent",
                "verified_at": self.verified_at if version is not None else None,
                "current": self.current}
