"""GET /healthz: the index version in service, its counts and the model."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Index version, counts and model")
def healthz(request: Request):
    state = request.app.state.kb
    if state.searcher is None:
        error = state.load_error
        return JSONResponse({"status": "no_index", "model": state.encoder.model_id,
                             "error": {"code": error.code, "message": error.message} if error else None},
                            status_code=503)
    return state.searcher.health()
