"""Sign-in with a personal API key for agent pages: GET/POST /signin, POST /signout (a signed session cookie)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from kb.errors import KBError
from search.auth import SESSION_COOKIE, Authenticator
from search.routes.feedback import safe_path
from search.routes.pages import render

router = APIRouter(include_in_schema=False)


def secure_request(request: Request, auth: Authenticator) -> bool:
    """Served over HTTPS, directly or behind a trusted proxy that terminates TLS (X-Forwarded-Proto)."""
    if request.url.scheme == "https":
        return True
    return auth.trusted_peer(request) and request.headers.get("x-forwarded-proto", "").lower() == "https"


@router.get("/signin")
def signin_form(request: Request, next: str = "/") -> Response:
    return render(request, "signin.html", {"page": "signin", "next": safe_path(next, request) or "/"})


@router.post("/signin")
def signin(request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    auth: Authenticator = request.app.state.auth
    target = safe_path(next, request) or "/"
    try:
        api_key, cookie = auth.sign_in(key.strip())
    except KBError as exc:  # show the form again with the reason; the key typed is not echoed back
        return render(request, "signin.html", {"page": "signin", "next": target, "error": exc.message}, exc.status)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=auth.settings.session_hours * 3600, httponly=True,
                        samesite="lax", secure=secure_request(request, auth), path="/")
    return response


@router.post("/signout")
def signout(request: Request) -> Response:
    response = RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response
