"""BuildJobs: one build at a time, a second start is refused, watch requests queue one follow-up, failures recorded."""
import threading

import pytest

from indexer.jobs import BuildJobs
from kb.errors import Conflict, ContentError, NotFound


class Report:
    def __init__(self, n):
        self.n = n

    def to_dict(self):
        return {"n": self.n}


class GatedBuild:
    """A build that reports progress, then waits until the test opens the gate."""

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.runs = 0

    def __call__(self, progress):
        self.runs += 1
        progress("embedding", 3, 10)
        self.started.release()
        assert self.gate.wait(10)
        return Report(self.runs)


def test_second_start_is_refused_while_a_build_runs_and_progress_is_visible():
    build = GatedBuild()
    built = []
    jobs = BuildJobs(build, on_built=built.append)
    job = jobs.start("api")
    assert build.started.acquire(timeout=10)
    status = jobs.get(job.id).to_dict()
    assert status["state"] == "running" and status["progress"] == {"stage": "embedding", "done": 3, "total": 10}
    with pytest.raises(Conflict, match=job.id):
        jobs.start("api")
    build.gate.set()
    assert jobs.wait(10)
    done = jobs.get(job.id).to_dict()
    assert done["state"] == "succeeded" and done["report"] == {"n": 1} and done["finished"]
    assert [r.n for r in built] == [1] and jobs.running is None
    assert jobs.start("api").id != job.id  # free again


def test_watch_requests_during_a_build_run_exactly_one_more_build():
    build = GatedBuild()
    jobs = BuildJobs(build)
    first = jobs.request("watch")
    assert first is not None and build.started.acquire(timeout=10)
    assert jobs.request("watch") is None and jobs.request("watch") is None  # both folded into one follow-up
    build.gate.set()
    assert jobs.wait(10)
    assert build.runs == 2


def test_failed_build_is_recorded_with_its_error_and_the_worker_survives():
    def failing(progress):
        raise ContentError("no publishable articles found in /x")

    jobs = BuildJobs(failing)
    job = jobs.start()
    assert jobs.wait(10)
    assert job.state == "failed" and job.error == {"code": "content_error",
                                                   "message": "no publishable articles found in /x"}

    def crashing(progress):
        raise RuntimeError("disk on fire")

    jobs = BuildJobs(crashing)
    job = jobs.start()
    assert jobs.wait(10)
    assert job.state == "failed" and "disk on fire" in job.error["message"] and jobs.running is None


def test_unknown_job_is_not_found():
    with pytest.raises(NotFound):
        BuildJobs(lambda progress: Report(0)).get("nope")
