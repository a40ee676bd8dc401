"""Failed builds: a full disk named by its folder, and the record of the last failure in the index folder."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from kb.errors import DiskFull, KBError

log = logging.getLogger("kb.build")
RECORD = "build-failed.json"  # in the index folder; never a version (versions are folders)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_TEXTS = tuple(os.strerror(code) for code in FULL_ERRNOS)  # how FAISS's C++ errors say it


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT as Python (OSError), SQLite (SQLITE_FULL) and FAISS (RuntimeError text) report them."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in FULL_TEXTS)


@contextlib.contextmanager
def disk_full_named(folder: Path, what: str) -> Iterator[None]:
    """Turn a full disk under `folder` into DiskFull: which folder, how much room is left, what to do."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, KBError) or not is_disk_full(exc):
            raise
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        raise DiskFull(f"no space left on the device of {folder.resolve()} while {what} ({free}): free some space "
                       f"there or set KB_INDEX_DIR to a folder with room; the version in service is unchanged") \
            from exc


def record(index_dir: Path, exc: BaseException) -> None:
    """Write what failed where /healthz (this process's or another's) reads it; best effort on a full disk."""
    error = {"code": exc.code, "message": exc.message} if isinstance(exc, KBError) else \
        {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
    body = {"finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "pid": os.getpid(),
            "error": error}
    tmp = index_dir / f".tmp-{RECORD}-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, index_dir / RECORD)
    except OSError as write_error:
        log.error("could not record the failed build in %s: %s", index_dir, write_error)
        with contextlib.suppress(OSError):
            tmp.unlink()


def clear(index_dir: Path) -> None:
    """A build succeeded: the last failure is history."""
    with contextlib.suppress(FileNotFoundError):
        (index_dir / RECORD).unlink()


def read(index_dir: Path) -> dict | None:
    """The last failure's record, or None when the last build succeeded (or none failed)."""
    try:
        body = json.loads((index_dir / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"finished": None, "error": {"code": "internal_error", "message": f"{RECORD} unreadable: {exc}"}}
    return body if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
