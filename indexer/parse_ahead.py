"""Articles parsed and chunked ahead of a full build's encoder, by a worker process beside it."""
from __future__ import annotations

import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from indexer.chunking import split_article
from indexer.parse import parse_article
from kb.articles import Article, Passage, Problem
from kb.sentences import markable

log = logging.getLogger("kb.build")

FILES_PER_MESSAGE = 32  # files the worker parses between two messages back
MESSAGES_AHEAD = 32  # messages held for the build before the worker waits: a bound on memory
# How long the build waits for the worker's next message before it parses those files itself: the worker runs
# at the lowest priority, so on a machine busy with other work it may get next to no CPU.
PATIENCE_SECONDS = 1.0
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder that holds `indexer`, for the worker
WORKER_COMMAND = (sys.executable, "-m", "indexer.parse_ahead")
_DONE = object()


@dataclass(frozen=True)
class Parsed:
    """One article file parsed: the article (None when it failed to parse), its problems, its passages (none for a
    draft or a failed file) and each passage's markable sentences (kb.sentences.markable, for the index)."""

    article: Article | None
    problems: list[Problem]
    passages: tuple[Passage, ...] = ()
    sentences: tuple[tuple[tuple[int, int], ...], ...] = ()


def parse_file(path: Path, content_root: Path, max_words: int, min_words: int) -> Parsed:
    """Parse one file and, when it is a publishable article, cut it into passages and find their markable
    sentences."""
    article, problems = parse_article(path, content_root)
    if article is None or article.status == "draft":
        return Parsed(article, problems)
    passages = tuple(split_article(article, max_words, min_words))
    return Parsed(article, problems, passages, tuple(markable(p.text) for p in passages))


class WorkerFailed(Exception):
    """The worker process could not start, or ended before delivering every file."""


class ParsedFiles:
    """Every file of `paths` parsed, in order, once each. With `ahead`, a worker process (`python -m
    indexer.parse_ahead`, started at once) parses up to MESSAGES_AHEAD x FILES_PER_MESSAGE files before they are
    asked for, at the lowest priority, so the parsing runs on what the caller's encoder leaves of the CPU (a thread
    would not do: parsing holds the GIL that the encoder's calls need between operations). Files the worker has
    not delivered when asked for (it got no CPU for PATIENCE_SECONDS, or it failed) are parsed in this process,
    and what it sends for them later is dropped. Close it (or exhaust it) to stop the worker."""

    def __init__(self, paths: list[Path], content_root: Path, max_words: int, min_words: int, *, ahead: bool):
        self.paths, self.content_root, self.max_words, self.min_words = paths, content_root, max_words, min_words
        self.per_message = FILES_PER_MESSAGE
        self._worker: subprocess.Popen | None = None
        self._messages: queue.Queue = queue.Queue(MESSAGES_AHEAD)
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        if ahead and paths:
            try:
                self._start()
            except WorkerFailed as exc:
                log.warning("no parsing worker (%s): parsing in the build's process", exc)
                self.close()

    @property
    def ahead(self) -> bool:
        """True while a worker is parsing ahead."""
        return self._worker is not None

    def _start(self) -> None:
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, (PACKAGE_ROOT, os.environ.get("PYTHONPATH"))))}
        try:
            self._worker = subprocess.Popen(WORKER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            pickle.dump((self.per_message, self.content_root, self.max_words, self.min_words, self.paths),
                        self._worker.stdin, pickle.HIGHEST_PROTOCOL)
            self._worker.stdin.close()
        except OSError as exc:
            raise WorkerFailed(str(exc)) from exc
        self._reader = threading.Thread(target=_read, args=(self._worker.stdout, self._messages, self._stop),
                                         name="kb-parse-ahead", daemon=True)
        self._reader.start()

    def __iter__(self) -> Iterator[Parsed]:
        done = 0  # messages' worth of files yielded: files [0, done * per_message)
        total = -(-len(self.paths) // self.per_message)
        patient = True
        try:
            while self._worker is not None and done < total:
                try:
                    message = self._messages.get(timeout=PATIENCE_SECONDS if patient else 0)
                except queue.Empty:  # the worker is behind: these files are parsed here
                    yield from self._parse_here(done)
                    done, patient = done + 1, False
                    continue
                if message is _DONE or isinstance(message, BaseException):
                    raise WorkerFailed(f"{type(message).__name__}: {message}" if message is not _DONE else
                                       f"it exited with status {self._exit_status()}")
                index, parsed = message
                if index < done:  # parsed here already
                    continue
                yield from parsed
                done, patient = done + 1, True
        except WorkerFailed as exc:
            log.warning("the parsing worker stopped (%s); parsing the remaining files in the build's process", exc)
        finally:
            self.close()
        for index in range(done, total):
            yield from self._parse_here(index)

    def _exit_status(self) -> int | str:
        try:
            return self._worker.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its output ended, yet it runs on
            return "unknown"

    def _parse_here(self, index: int) -> Iterator[Parsed]:
        for path in self.paths[index * self.per_message:(index + 1) * self.per_message]:
            yield parse_file(path, self.content_root, self.max_words, self.min_words)

    def close(self) -> None:
        """Stop the worker (if any) and its reader thread."""
        self._stop.set()
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        if self._reader is not None and self._reader.is_alive():
            self._reader.join()
        worker.stdout.close()


def _read(stream: BinaryIO, messages: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: the worker's messages into the bounded queue, then _DONE (or the error that ended them)."""
    try:
        while not stop.is_set():
            try:
                message = pickle.load(stream)
            except EOFError:
                break
            _put(messages, message, stop)
        _put(messages, _DONE, stop)
    except Exception as exc:  # a damaged message: the build parses the rest itself
        _put(messages, exc, stop)


def _put(messages: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            messages.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def lower_priority() -> None:
    """The worker at the lowest priority (nice 19): it takes the CPU the encoder's threads leave. (The idle
    scheduling class, measured beside it, slowed the encoder as much and may starve the worker on a busy machine.)"""
    try:
        os.nice(19 - os.nice(0))
    except (AttributeError, OSError):  # not permitted, or not on this system: the build's own priority
        pass


def main() -> None:
    """The worker: reads (files per message, content root, max words, min words, paths) from stdin, writes
    (message index, [Parsed]) for each run of files in turn."""
    lower_priority()
    per_message, content_root, max_words, min_words, paths = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer
    try:
        for index, start in enumerate(range(0, len(paths), per_message)):
            parsed = [parse_file(path, content_root, max_words, min_words)
                      for path in paths[start:start + per_message]]
            pickle.dump((index, parsed), out, pickle.HIGHEST_PROTOCOL)
            out.flush()
    except BrokenPipeError:  # the build is gone (killed, or it stopped reading): nothing to say on its stderr
        os._exit(0)


if __name__ == "__main__":  # run as the module itself, so what it pickles is indexer.parse_ahead.Parsed
    from indexer import parse_ahead

    parse_ahead.main()
