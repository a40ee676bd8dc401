"""`kb keys create|list|revoke`: API keys for helpdesk tools and agents, kept in KB_AUTH_DB."""
from __future__ import annotations

import argparse
import getpass
import json

from kb.audit import AuditLog
from kb.database import side_database
from kb.keys import SCOPES, KeyStore
from kb.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys (KB_AUTH_DB)",
                       description="API keys for helpdesk tools and agents. Scopes: " + ", ".join(SCOPES) + ".")
    keys = p.add_subparsers(dest="keys_command", required=True)
    c = keys.add_parser("create", help="create a key and print its secret once")
    c.add_argument("name", help="a name for the key: letters, digits, '.', '_', '-' (e.g. zendesk-prod)")
    c.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help=f"a scope the key grants, repeatable: {', '.join(SCOPES)}")
    c.add_argument("--expires-days", type=int, help="the key stops working after N days (default: never)")
    c.add_argument("--rate", help="at most N requests a minute, written N/min (default: unlimited)")
    c.add_argument("--json", action="store_true", help="print one JSON object: name, secret, scopes, expires")
    ls = keys.add_parser("list", help="list keys: name, scopes, created, expires, last used, requests")
    ls.add_argument("--all", action="store_true", help="include revoked keys")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    r = keys.add_parser("revoke", help="revoke a key at once (requests with it get 401)")
    r.add_argument("name")


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "cli:unknown"


def run(args: argparse.Namespace, settings: Settings) -> int:
    store, audit = KeyStore(side_database(settings, "keys")), AuditLog(side_database(settings, "audit"))
    try:
        if args.keys_command == "create":
            key, secret = store.create(args.name, args.scope, args.expires_days, args.rate)
            audit.record(actor(), "key.create", key.name, scopes=list(key.scopes), expires=key.expires,
                         rate_per_min=key.rate_per_min)
            if args.json:
                print(json.dumps({"name": key.name, "secret": secret, "scopes": list(key.scopes),
                                  "expires": key.expires}))
            else:
                print(f"created key {key.name!r}: scopes {' '.join(key.scopes)}; expires {key.expires or 'never'}; "
                      f"rate {f'{key.rate_per_min}/min' if key.rate_per_min else 'unlimited'}")
                print("the secret is shown once and cannot be recovered; keep it in your helpdesk's secret store:")
                print(secret)
        elif args.keys_command == "list":
            keys = store.list(include_revoked=args.all)
            if args.json:
                print(json.dumps([k.to_dict() for k in keys], indent=2))
            else:
                print_table(keys)
        else:
            key = store.revoke(args.name)
            audit.record(actor(), "key.revoke", key.name)
            print(f"revoked key {key.name!r}")
    finally:
        store.close()
        audit.close()
    return 0


def print_table(keys: list) -> None:
    if not keys:
        print("no keys (kb keys create NAME --scope SCOPE)")
        return
    rows = [("NAME", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "REQUESTS")]
    for k in keys:
        rows.append((k.name + (" (revoked)" if k.revoked else ""), ",".join(k.scopes), k.created,
                     k.expires or "never", k.last_used or "never", str(k.requests)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
