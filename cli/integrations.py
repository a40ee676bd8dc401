"""`kb integrations zendesk-app`: writes a Zendesk Support app (ZAF v2) that shows the widget in the ticket sidebar."""
from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from kb.errors import BadRequest
from kb.settings import Settings

ZAF_SDK = "https://static.zdassets.com/zendesk_app_framework_sdk/2.0/zaf_sdk.min.js"  # Zendesk's documented SDK URL
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("integrations", help="write helpdesk integrations (a Zendesk app for the ticket sidebar)")
    p.set_defaults(content_dir=None, index_dir=None)  # no index or content involved
    kinds = p.add_subparsers(dest="integration", required=True)
    z = kinds.add_parser("zendesk-app", help="write a private Zendesk Support app showing KB Search's widget in "
                         "the ticket sidebar, ready to zip and upload",
                         description="Writes manifest.json, assets/ and translations/ of a Zendesk Apps framework "
                                     "v2 app: it frames URL/widget in the ticket sidebar, sends it the ticket "
                                     "(subject, description, tags, id) by postMessage, inserts chosen answers "
                                     "into the reply and tags the ticket when an article is linked.")
    z.add_argument("--url", required=True, help="base URL of this service as agents' browsers reach it "
                   "(https://kb.example.com, or with a path prefix: https://example.com/kb)")
    z.add_argument("--out", type=Path, default=Path("zendesk-app"), help="folder to write (default ./zendesk-app)")


def validate_url(url: str) -> str:
    """The service's base URL without a trailing slash; BadRequest (exit code 2) for anything else."""
    url = url.strip()
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
            or parts.password or parts.query or parts.fragment or any(c in url for c in "\"'<>\\ \t\n"):
        raise BadRequest(f"--url must be an http(s) URL such as https://kb.example.com (no query, fragment or "
                         f"credentials), got {url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def manifest(url: str) -> dict:
    return {
        "name": "KB Search",
        "author": {"name": "KB Search", "email": "", "url": url},
        "defaultLocale": "en",
        "private": True,
        "location": {"support": {"ticket_sidebar": {"url": "assets/iframe.html", "flexible": True}}},
        "version": "1.0.0",
        "frameworkVersion": "2.0",
        # kb_api_key is deliberately not `secure`: secure settings are only usable through Zendesk's server-side
        # request proxy and never reach the browser, but the widget calls KB Search from the agent's browser.
        # So every agent who can open the app can read it: give it a key with the scopes suggest and feedback only.
        "parameters": [
            {"name": "kb_url", "type": "url", "required": True, "secure": False, "default": url},
            {"name": "kb_api_key", "type": "text", "required": False, "secure": False},
        ],
    }


TRANSLATIONS = {
    "app": {
        "name": "KB Search",
        "short_description": "Knowledge-base answers for the ticket in the sidebar.",
        "long_description": "Shows KB Search's suggested articles for the open ticket; insert an answer into the "
                            "reply, copy its link, mark it helpful, or tag the ticket with it.",
        "installation_instructions": "Set the KB Search URL; add an API key with the scopes suggest and feedback "
                                     "if the service requires keys. Set KB_FRAME_ANCESTORS on the service.",
        "parameters": {
            "kb_url": {"label": "KB Search URL",
                       "helpText": "Base URL of the KB Search service as agents' browsers reach it."},
            "kb_api_key": {"label": "API key (visible to agents)",
                           "helpText": "Needed when the service requires API keys. It is sent from each agent's "
                                       "browser, so agents can read it: use a key with the scopes suggest and "
                                       "feedback only."},
        },
    },
}

IFRAME_HTML = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<link rel="stylesheet" href="main.css">
</head>
<body>
<iframe id="kb-widget" title="KB Search" data-kb-url="__KB_URL_HTML__" allow="clipboard-write"></iframe>
<script src="__ZAF_SDK__"></script>
<script src="main.js"></script>
</body>
</html>
"""

MAIN_CSS = """html, body { margin: 0; padding: 0; }
#kb-widget { display: block; width: 100%; height: 560px; border: 0; }
"""

MAIN_JS = """/* KB Search for Zendesk: frames KB Search's widget in the ticket sidebar and passes the ticket to it. */
(function () {
  "use strict";
  var DEFAULT_KB_URL = __KB_URL_JS__;  // kb integrations zendesk-app --url; the kb_url setting overrides it
  var client = ZAFClient.init();
  var frame = document.getElementById("kb-widget");
  var kbOrigin = null, apiKey = "", ready = false, timer = null;

  client.invoke("resize", { width: "100%", height: "580px" });

  // The ticket goes to the widget by postMessage, to its origin only: never in a URL.
  function sendTicket() {
    if (!ready) return;
    client.get(["ticket.id", "ticket.subject", "ticket.description", "ticket.tags"]).then(function (data) {
      var message = { type: "kb:ticket", ticket_id: data["ticket.id"], subject: data["ticket.subject"] || "",
                      body: data["ticket.description"] || "", tags: data["ticket.tags"] || [] };
      if (apiKey) message.key = apiKey;
      frame.contentWindow.postMessage(message, kbOrigin);
    });
  }

  function sendSoon() {  // the subject changes with every keystroke
    clearTimeout(timer);
    timer = setTimeout(sendTicket, 600);
  }

  function tag(articleId) {
    return ("kb_" + String(articleId).toLowerCase().replace(/[^a-z0-9]+/g, "_")).slice(0, 80);
  }

  window.addEventListener("message", function (event) {
    if (event.source !== frame.contentWindow || event.origin !== kbOrigin) return;
    var message = event.data || {};
    if (message.type === "kb:ready") {
      ready = true;
      sendTicket();
    } else if (message.type === "kb:insert" && typeof message.text === "string") {
      client.invoke("ticket.editor.insert", message.text);
    } else if (message.type === "kb:link" && message.article_id) {
      client.invoke("ticket.tags.add", ["kb_linked", tag(message.article_id)]);
    }
  });

  client.on("ticket.subject.changed", sendSoon);
  client.on("ticket.description.changed", sendSoon);

  client.metadata().then(function (metadata) {
    var settings = metadata.settings || {};
    var kbUrl = String(settings.kb_url || DEFAULT_KB_URL).replace(/\\/+$/, "");
    kbOrigin = new URL(kbUrl).origin;
    apiKey = settings.kb_api_key || "";
    return client.get("currentUser.locale").then(function (data) {
      var locale = data["currentUser.locale"];
      frame.src = kbUrl + "/widget" + (locale ? "?lang=" + encodeURIComponent(locale) : "");
    });
  });
})();
"""


def write_zendesk_app(url: str, out: Path) -> list[Path]:
    """Write the app folder for the service at `url` into `out`; returns the files written."""
    files = {
        "manifest.json": json.dumps(manifest(url), indent=2) + "\n",
        "translations/en.json": json.dumps(TRANSLATIONS, indent=2) + "\n",
        "assets/iframe.html": IFRAME_HTML.replace("__KB_URL_HTML__", html.escape(url)).replace("__ZAF_SDK__", ZAF_SDK),
        "assets/main.js": MAIN_JS.replace("__KB_URL_JS__", json.dumps(url)),
        "assets/main.css": MAIN_CSS,
    }
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = validate_url(args.url)
    written = write_zendesk_app(url, args.out)
    host = urlsplit(url).hostname or ""
    if url.startswith("http:") and host not in LOOPBACK:
        print(f"kb integrations: warning: {url} is not https: Zendesk pages are, and browsers block http frames "
              "in them", file=sys.stderr)
    print(f"wrote a Zendesk app for {url} into {args.out}/: " + ", ".join(str(p.relative_to(args.out))
                                                                        for p in written))
    print("next:\n"
          "  1. on the service, allow Zendesk to frame the widget (every ancestor is checked: your Zendesk and the\n"
          "     app's own iframe, which Zendesk serves from <app id>.apps.zdusercontent.com):\n"
          "     KB_FRAME_ANCESTORS='https://<subdomain>.zendesk.com https://*.apps.zdusercontent.com'\n"
          f"  2. zip the folder's contents (or run `zcli apps:package {args.out}`) and upload it as a private app:\n"
          "     Admin Center > Apps and integrations > Zendesk Support apps > Upload private app\n"
          "  3. if the service requires API keys, set kb_api_key to a key with the scopes suggest and feedback only:\n"
          "     it is sent from each agent's browser, so agents can read it")
    return 0
