"""Access log without query strings: uvicorn's request lines keep the path, never `?q=...` (search words, tokens)."""
from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class PathOnly(logging.Filter):
    """Drops the query string from uvicorn's access records (`'%s - "%s %s HTTP/%s" %d'`: client, method,
    path with query, HTTP version, status) before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def install_path_only(name: str = ACCESS_LOGGER) -> None:
    """Put PathOnly on the access logger once (each worker process of `kb serve` runs this at start-up)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, PathOnly) for f in logger.filters):
        logger.addFilter(PathOnly())
