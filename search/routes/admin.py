"""Admin API: POST /api/admin/reindex starts an incremental build; GET /api/admin/jobs/{id} reports it."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from search.auth import Principal, caller
from search.schemas import API_ERRORS, JobResponse, ReindexResponse, error_responses

router = APIRouter(prefix="/api/admin", tags=["admin"])


def require_admin(request: Request) -> Principal:
    """The caller, who holds the admin scope: the app-wide `authorize` dependency has checked it (an admin
    key, or KB_ADMIN_TOKEN as a bearer token; open on loopback when neither keys nor the token are set)."""
    return caller(request)


Admin = Annotated[Principal, Depends(require_admin)]


@router.post("/reindex", status_code=202, summary="Start an incremental build of the content folder",
             response_model=ReindexResponse, responses=error_responses(409, *API_ERRORS))
def reindex(request: Request, who: Admin) -> dict:
    """Returns the job at once (202); 409 while another build runs. The new version is swapped in when done."""
    job = request.app.state.kb.jobs.start("api")
    request.app.state.auth.audit.record(who.actor, "admin.reindex", job.id)
    return {"job": job.to_dict(), "status_url": f"/api/admin/jobs/{job.id}"}


@router.get("/jobs/{job_id}", summary="Progress and outcome of a build job", response_model=JobResponse,
            responses=error_responses(404, *API_ERRORS))
def job_status(request: Request, job_id: str, _: Admin) -> dict:
    return request.app.state.kb.jobs.get(job_id).to_dict()
