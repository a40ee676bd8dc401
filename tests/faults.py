"""Disk faults for the side-store tests: a read-only file or folder (read-only bind mount) and a small disk (tmpfs).

Root ignores file modes, so as root a read-only place is a read-only bind mount, as an operator's read-only volume
is; other users get chmod, which SQLite meets the same way. A full disk is a tmpfs of a megabyte filled to its last
byte, which needs root (mount); where mounting is impossible the tests that need it are skipped and say why.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

ROOT = os.geteuid() == 0


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True)


def _unmount(path: Path) -> None:
    """Unmount `path`, lazily if something still holds a file in it (the server under test, a store)."""
    if _run("umount", str(path)).returncode != 0:
        _run("umount", "-l", str(path))


class ReadOnly:
    """`path` made read-only; `release()` makes it writable again (the recovery the tests check)."""

    def __init__(self, path: Path):
        self.path, self.mounted, self.mode = Path(path), False, None
        if ROOT:
            bind = _run("mount", "--bind", str(self.path), str(self.path))
            if bind.returncode != 0:
                pytest.skip(f"cannot make {self.path} read-only: mount --bind failed ({bind.stderr.strip()})")
            self.mounted = True
            remount = _run("mount", "-o", "remount,bind,ro", str(self.path))
            if remount.returncode != 0:
                self.close()
                pytest.skip(f"cannot remount {self.path} read-only ({remount.stderr.strip()})")
        else:
            self.mode = stat.S_IMODE(self.path.stat().st_mode)
            self.path.chmod(0o555 if self.path.is_dir() else 0o444)

    def release(self) -> None:
        if self.mounted:
            result = _run("mount", "-o", "remount,bind,rw", str(self.path))
            assert result.returncode == 0, result.stderr
        elif self.mode is not None:
            self.path.chmod(self.mode)

    def close(self) -> None:
        if self.mounted:
            _unmount(self.path)
            self.mounted = False
        elif self.mode is not None:
            self.path.chmod(self.mode)
            self.mode = None


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[ReadOnly]:
    """`path` (a file or a folder) read-only inside the block, writable again after it."""
    fault = ReadOnly(path)
    try:
        yield fault
    finally:
        fault.close()


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """`folder` on its own tmpfs of `size` inside the block (skipped where mounting is impossible)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not ROOT:
        pytest.skip("a full disk needs a tmpfs, and mounting one needs root")
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {folder}: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        _unmount(folder)


def fill(folder: Path) -> Path:
    """Fill the disk of `folder` to its last byte with one file; returns it (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 512, 1):  # big blocks first, then whatever fits
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
