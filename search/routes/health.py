"""GET /healthz: the index version in service, its counts, the model, versions refused or damaged, failed builds, an
index engine out of reach."""
from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from search.auth import caller
from search.schemas import HealthResponse, NoIndexResponse

router = APIRouter(tags=["health"])
HIDDEN = "details are in the service log (or send an API key)"


def without_details(reload: dict) -> dict:
    """The reload status an anonymous caller on the network may read: states and codes, no paths or messages."""
    error, build = reload["error"], reload["failed_build"]
    return {**reload, "watch_refused": HIDDEN if reload["watch_refused"] else None,
            "failed_versions": {build_id: HIDDEN for build_id in reload["failed_versions"]},
            "error": {"code": error["code"], "message": HIDDEN} if error else None,
            "failed_build": {**build, "error": {"code": build["error"]["code"], "message": HIDDEN}} if build else None}


@router.get("/healthz", summary="Index version, counts, model and reload status", response_model=HealthResponse,
            responses={503: {"model": NoIndexResponse, "description": "No index version is loaded, or the index "
                                                                      "engine does not answer."}})
def healthz(request: Request):
    state = request.app.state.kb
    unavailable = state.versions.unavailable  # the index engine (a Milvus server) did not answer at the last look
    error = unavailable or state.load_error
    reload = {"watching": state.watcher is not None, "watch_refused": state.watch_refused,
              "build_running": state.jobs.running.id if state.jobs.running else None,
              "failed_versions": dict(state.failed),
              "error": {"code": error.code, "message": error.message} if error else None,
              "failed_build": state.versions.failed_build()}  # the last build, when it failed (search/versions.py)
    if caller(request).kind == "anonymous":  # keys are required and none was sent: no server paths or messages
        reload = without_details(reload)
    searcher = state.searcher
    if searcher is None or unavailable is not None:  # nothing to answer from, or an engine that does not answer
        return JSONResponse({"status": "unavailable" if unavailable else "no_index", "model": state.encoder.model_id,
                             "index_version": searcher.version.build_id if searcher is not None else None,
                             "error": reload["error"], "reload": reload, "pid": os.getpid(),
                             "writeback": state.webhooks.status()}, status_code=503)
    # A version that failed its checks (a newer one, or the damaged one in service: an intact one answers), or a
    # failed build: still answering, but say so.
    degraded = error is not None or reload["failed_build"] is not None
    return {**searcher.health(), "status": "degraded" if degraded else "ok", "reload": reload,
            "integrity": state.versions.integrity(),
            "pid": os.getpid(),  # which worker answered (kb serve --workers N)
            "writeback": state.webhooks.status()}  # helpdesk write-back counters (search/routes/webhooks.py)
