"""Admin API: POST /api/admin/reindex starts an incremental build; GET /api/admin/jobs/{id} reports it."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from kb.errors import Unauthorized

router = APIRouter(prefix="/api/admin", tags=["admin"])


def require_admin(request: Request) -> None:
    """With KB_ADMIN_TOKEN set, callers must send `Authorization: Bearer <token>`."""
    token = request.app.state.kb.settings.admin_token
    if not token:
        return
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("admin endpoints need the header `Authorization: Bearer <KB_ADMIN_TOKEN>`")


Admin = Annotated[None, Depends(require_admin)]


@router.post("/reindex", status_code=202, summary="Start an incremental build of the content folder")
def reindex(request: Request, _: Admin) -> dict:
    """Returns the job at once (202); 409 while another build runs. The new version is swapped in when done."""
    job = request.app.state.kb.jobs.start("api")
    return {"job": job.to_dict(), "status_url": f"/api/admin/jobs/{job.id}"}


@router.get("/jobs/{job_id}", summary="Progress and outcome of a build job")
def job_status(request: Request, job_id: str, _: Admin) -> dict:
    return request.app.state.kb.jobs.get(job_id).to_dict()
