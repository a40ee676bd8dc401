"""GET /widget: the ticket-sidebar widget, a compact page for a helpdesk's iframe (ticket text by postMessage)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from search.routes.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/widget", response_class=HTMLResponse)
def widget(request: Request, subject: str = "", body: str = "", ticket_id: str = "") -> Response:
    """The widget shell; it holds no data until the host sends the ticket.

    The host frames it and posts `{type: "kb:ticket", subject, body, tags?, language?, ticket_id?, key?}`;
    only origins in KB_FRAME_ANCESTORS (rendered into `data-allowed-origins`) are listened to. `subject` and
    `body` as query parameters work too, but they put ticket text into URLs, browser history and access logs:
    postMessage is the way for helpdesk apps.
    """
    response = render(request, "widget.html", {
        "page": "widget", "subject": subject, "body": body, "ticket_id": ticket_id,
        "allowed_origins": " ".join(getattr(request.app.state, "frame_ancestors", ()))})
    response.headers["Cache-Control"] = "no-store"  # the page may carry ticket text (query parameters)
    return response
