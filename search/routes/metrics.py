"""GET /metrics: the service's operations metrics in the Prometheus text format (analytics or admin scope)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from search.metrics import CONTENT_TYPE
from search.schemas import API_ERRORS, error_responses

router = APIRouter(tags=["operations"])

TEXT = {"description": "Every series in the Prometheus text format (version 0.0.4): request counts and latency per "
                       "route template and status, the index in service, builds, watch events, the analytics queue "
                       "and write-back; with `kb serve --workers N`, counted over every worker.",
        "content": {"text/plain": {"schema": {"type": "string"}}}}


# response_class=Response (no media type of its own): the 200 is the text declared here, errors stay JSON models
@router.get("/metrics", summary="Operations metrics for Prometheus", response_class=Response,
            responses={200: TEXT, **error_responses(*API_ERRORS)})
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)
