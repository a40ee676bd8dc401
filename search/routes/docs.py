"""API documentation pages: Swagger UI (/docs) and ReDoc (/redoc) from vendored assets, no CDN, no inline script."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from search.routes.pages import TEMPLATES

router = APIRouter(include_in_schema=False)


def docs_page(request: Request, ui: str, name: str) -> HTMLResponse:
    """FastAPI's docs pages (create_app turns its own off) with their scripts served by this service from
    search/web/static/vendor: they work without internet and under a CSP that allows only same-origin scripts."""
    root = request.scope.get("root_path", "").rstrip("/")
    context = {"ui": ui, "title": f"{request.app.title} - {name}", "root": root,
               "openapi_url": root + request.app.openapi_url}
    return TEMPLATES.TemplateResponse(request, "api_docs.html", context)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return docs_page(request, "swagger", "Swagger UI")


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return docs_page(request, "redoc", "ReDoc")
