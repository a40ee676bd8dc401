"""Content watching: wait until a burst of article changes settles (watchfiles), then report the changed paths."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

import watchfiles

log = logging.getLogger("kb.watch")

CONTENT_SUFFIXES = (".md", ".markdown")


def is_content_file(path: str) -> bool:
    """Markdown files that are not hidden and not editor temp files ('.#x.md', 'x.md~', '.x.md.swp')."""
    name = Path(path).name
    return name.endswith(CONTENT_SUFFIXES) and not name.startswith((".", "#", "~"))


def content_filter(change: watchfiles.Change, path: str) -> bool:
    """Articles, and folders that appear (moved in with their articles, or made and written to at once: inotify
    reports no file a new folder held before its own watch was added, so the folder is the only sign)."""
    return is_content_file(path) or (change == watchfiles.Change.added and not Path(path).name.startswith(".")
                                     and os.path.isdir(path))


def watch_content(content_dir: Path, on_change: Callable[[set[str]], None], quiet_ms: int,
                  stop: threading.Event) -> None:
    """Call `on_change(paths)` after each burst of changes, once no file has changed for `quiet_ms`; until `stop`.

    watchfiles uses inotify here; `step` is the quiet time, `debounce` caps how long one burst may grow.
    """
    for changes in watchfiles.watch(content_dir, watch_filter=content_filter, step=max(quiet_ms, 1),
                                    debounce=max(1600, 10 * quiet_ms), stop_event=stop, rust_timeout=500,
                                    yield_on_timeout=False, raise_interrupt=False):
        paths = {path for _, path in changes}
        log.info("%d content file(s) changed, e.g. %s", len(paths), next(iter(paths)))
        on_change(paths)


class ContentWatcher:
    """`watch_content` in a daemon thread, for `kb serve --watch`; counts the bursts (`events`) and files it saw."""

    def __init__(self, content_dir: Path, on_change: Callable[[set[str]], None], quiet_ms: int):
        self.content_dir, self.on_change, self.quiet_ms = content_dir, on_change, quiet_ms
        self.events = self.files = 0  # read by /metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="content-watcher", daemon=True)
        self._thread.start()
        log.info("watching %s for changes", self.content_dir)

    def _run(self) -> None:
        try:
            watch_content(self.content_dir, self._changed, self.quiet_ms, self._stop)
        except Exception:  # noqa: BLE001 - the service goes on answering from the current version
            log.exception("content watcher stopped; restart the service to watch again")

    def _changed(self, paths: set[str]) -> None:
        self.events += 1
        self.files += len(paths)
        self.on_change(paths)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
