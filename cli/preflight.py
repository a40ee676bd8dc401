"""Checks `kb serve` makes before any slow work: its address is free, its index belongs to its content folder."""
from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from kb.errors import BadRequest, Conflict, KBError
from kb.index import IndexBackend, backend_for
from kb.index.waiting import when_reached
from kb.settings import Settings, load_settings


class PortInUse(Conflict):
    """Another process (often an earlier `kb serve`) listens on the address `kb serve` would bind."""

    code = "port_in_use"


class IndexOfOtherContent(Conflict):
    """The index folder holds the index of another content folder than the one `kb serve` was given."""

    code = "index_content_mismatch"


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Bind host:port the way uvicorn will (SO_REUSEADDR) and let go at once; a clear error if that fails."""
    where = address(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:
            raise BadRequest(f"cannot listen on {where}: unknown host {host!r} ({exc.strerror}): set another "
                             "address with --host or KB_HOST") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{where} is already in use (another kb serve?): stop it or choose another port "
                                "with --port or KB_PORT") from None
            if exc.errno == errno.EACCES:
                raise BadRequest(f"cannot listen on {where}: permission denied (ports below 1024 need privileges): "
                                 "choose another port with --port or KB_PORT") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise BadRequest(f"cannot listen on {where}: {host} is not an address of this machine: set "
                                 "another one with --host or KB_HOST") from None
            raise BadRequest(f"cannot listen on {where}: {exc.strerror} (--host/KB_HOST, --port/KB_PORT)") from None


def current_of(settings: Settings) -> tuple[IndexBackend, str | None]:
    """The settings' index backend and the version CURRENT names (IndexUnavailable: its engine does not answer)."""
    backend = backend_for(settings)
    return backend, backend.current()


def check_index_content(settings: Settings, content_given: bool) -> None:
    """Refuse to serve, for a content folder given explicitly, the index another content folder was built from.

    Without --content / KB_CONTENT_DIR the index is served whatever it was built from (the service then only
    declines to watch); an index without a version yet, or whose manifest is unreadable, is left to the service.
    An index engine out of reach (Milvus) is waited for, KB_MILVUS_START_WAIT seconds at most (kb/index/waiting.py).
    """
    backend, build_id = when_reached(lambda: current_of(settings), settings.milvus_start_wait)
    if not content_given or build_id is None:
        return
    try:
        built_from = backend.manifest(build_id).get("content_dir")
    except (OSError, ValueError):
        return
    here = str(settings.content_dir.resolve())
    if built_from and built_from != here:
        own = settings.index_dir.parent / f"index-{Path(here).name}"
        raise IndexOfOtherContent(
            f"the index in {settings.index_dir} was built from {built_from}, not from {here} (--content or "
            f"KB_CONTENT_DIR): give this content folder its own index folder with --index-dir or KB_INDEX_DIR, "
            f"e.g. --index-dir {own} (built on start while watching; with --no-watch run `kb index` with the "
            f"same --content and --index-dir first), or leave out --content to serve {built_from}")


def check_serve(settings: Settings, content_given: bool, insecure: bool = False) -> None:
    """Everything `kb serve` checks before it indexes or loads the model."""
    from search.auth import check_bind

    check_bind(settings, insecure)  # KB_AUTH=off on a network address needs --insecure
    check_index_content(settings, content_given)
    check_port(settings.host, settings.port)


def content_given(args_content_dir: str | None) -> bool:
    """Whether the content folder was chosen explicitly (flag or environment), not left at its default."""
    return args_content_dir is not None or bool(os.environ.get("KB_CONTENT_DIR"))


def main(argv: list[str] | None = None) -> int:
    """`python -m cli.preflight [kb serve flags]`, for scripts/serve.sh before `kb index`: exit 2 with the
    message `kb serve` would give, else print the content and index folders `kb serve` will use, one a line."""
    from cli.main import build_parser

    args = build_parser().parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = load_settings(content_dir=args.content_dir, index_dir=args.index_dir, host=args.host,
                                 port=args.port)
        check_serve(settings, content_given(args.content_dir), args.insecure)
    except KBError as exc:
        print(f"kb serve: error: {exc.message}", file=sys.stderr)
        return 2
    print(settings.content_dir)
    print(settings.index_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
