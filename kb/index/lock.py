"""Index locks: the build lock (one build at a time per index, an exclusive flock on `.lock` in the index folder) and
whether a lease (a shared flock a reader holds on a file) is held."""
from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator

from kb.errors import Conflict


@contextlib.contextmanager
def build_lock(index_dir: Path, where: str | None = None) -> Iterator[None]:
    """Exclusive lock so that only one build writes the index of `index_dir` at a time; Conflict names `where`
    (default: the folder) when another build holds it."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another build is already running {where or f'in {index_dir}'}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def held(path: Path) -> bool:
    """Whether any process (this one included) holds a lock on the file at `path`; False when it does not exist."""
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
