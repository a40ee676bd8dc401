"""Build jobs: one incremental build at a time in a background thread, with progress and outcome by job id."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from kb.errors import Conflict, KBError, NotFound

log = logging.getLogger("kb.jobs")

Progress = Callable[[str, int, int], None]  # (stage, done, total)
BuildFn = Callable[[Progress], object]  # runs one build, returns a BuildReport


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Job:
    """One build: queued -> running -> succeeded | failed."""

    id: str
    trigger: str  # "api" | "watch" | "start"
    state: str = "queued"
    stage: str = ""
    done: int = 0
    total: int = 0
    created: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    report: object | None = None
    error: dict | None = None
    seconds: float | None = None  # how long it ran, once finished (for /metrics)

    def to_dict(self) -> dict:
        report = self.report
        return {"id": self.id, "trigger": self.trigger, "state": self.state,
                "progress": {"stage": self.stage, "done": self.done, "total": self.total},
                "created": self.created, "started": self.started, "finished": self.finished,
                "report": report.to_dict() if report is not None else None, "error": self.error}


class BuildJobs:
    """Runs `build` in a worker thread, never two at once; `on_built(report)` runs after each success.

    `start()` refuses while a build runs (Conflict); `request()` (file watching) instead queues exactly
    one follow-up build, so that changes made during a build are never lost. Each of `listeners` is called with
    every finished job (succeeded or failed), before `wait()` returns.
    """

    def __init__(self, build: BuildFn, on_built: Callable[[object], None] | None = None, keep: int = 100):
        self._build, self._on_built, self._keep = build, on_built, keep
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._running: Job | None = None
        self._again: str | None = None  # trigger of a queued follow-up build
        self._idle = threading.Event()
        self._idle.set()
        self.listeners: list[Callable[[Job], None]] = []

    @property
    def running(self) -> Job | None:
        return self._running

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no build job {job_id!r} (jobs are kept in memory since the service started)")
        return job

    def start(self, trigger: str = "api") -> Job:
        """Start a build now, or raise Conflict naming the build that is running."""
        with self._lock:
            if self._running is not None:
                raise Conflict(f"build job {self._running.id} is already running; poll "
                               f"/api/admin/jobs/{self._running.id} and try again when it has finished")
            return self._launch(trigger)

    def request(self, trigger: str = "watch") -> Job | None:
        """Start a build, or make sure one more runs after the current one; returns the job started, if any."""
        with self._lock:
            if self._running is not None:
                self._again = trigger
                return None
            return self._launch(trigger)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no build runs or is queued (tests, shutdown)."""
        return self._idle.wait(timeout)

    def _launch(self, trigger: str) -> Job:
        job = Job(id=time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3), trigger=trigger)
        self._jobs[job.id] = job
        while len(self._jobs) > self._keep:
            self._jobs.pop(next(iter(self._jobs)))
        self._running = job
        self._idle.clear()
        threading.Thread(target=self._run, args=(job,), name=f"build-{job.id}", daemon=True).start()
        return job

    def _progress(self, job: Job) -> Progress:
        def update(stage: str, done: int, total: int) -> None:
            job.stage, job.done, job.total = stage, done, total
        return update

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", _now()
        began = time.perf_counter()
        try:
            job.report = self._build(self._progress(job))
            if self._on_built is not None:
                self._on_built(job.report)
            job.state = "succeeded"
        except KBError as exc:
            job.state, job.error = "failed", {"code": exc.code, "message": exc.message}
            log.error("build job %s failed: %s", job.id, exc.message)
        except Exception as exc:  # noqa: BLE001 - a failed build must not kill the worker or the service
            job.state, job.error = "failed", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            log.exception("build job %s failed", job.id)
        finally:
            job.finished, job.seconds = _now(), time.perf_counter() - began
            for listener in self.listeners:
                try:
                    listener(job)
                except Exception:  # noqa: BLE001 - an observer must not stop the next build
                    log.exception("listener of build job %s failed", job.id)
            with self._lock:
                self._running = None
                again, self._again = self._again, None
                if again is not None:
                    self._launch(again)
                else:
                    self._idle.set()
