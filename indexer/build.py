"""Build an index version from the content folder: incremental by default, embedding cache, progress bars."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from indexer import failures
from indexer.cache import EmbeddingCache, hash_text
from indexer.parse import discover
from indexer.parse_ahead import Parsed, ParsedFiles
from kb.articles import Article, Problem
from kb.errors import ContentError, IndexDamaged, IndexMismatch, KBError
from kb.embedder import TextEncoder
from kb.index import ArticleRecord, IndexBackend, IndexReader, IndexWriter, PassageRecord, backend_for
from kb.settings import Settings

log = logging.getLogger("kb.build")
Progress = Callable[[str, int, int], None]
BATCH_PASSAGES = 4096  # passages parsed, embedded and written per batch of a build: what its memory holds
# A full build of at least this many files parses them in a worker process, ahead of the encoder (indexer.parse_ahead);
# below it, starting the worker (a new interpreter, ~0.3 s) costs about what the parsing would.
PARSE_AHEAD_MIN_FILES = 500


def _ignore_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class BuildReport:
    """What a build did; printed by `kb index` and returned by the admin API."""

    build_id: str | None = None  # None when nothing changed and no version was written
    articles: int = 0
    passages: int = 0
    parsed: int = 0  # articles parsed this time (new or changed)
    reused: int = 0  # articles carried over unchanged from the previous version
    deleted: int = 0
    drafts: int = 0
    embedded: int = 0  # passages sent to the model (the rest came from the cache)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def summary(self) -> str:
        what = f"version {self.build_id}" if self.build_id else "no changes; index unchanged"
        return (f"{what}: {self.articles} articles, {self.passages} passages ({self.parsed} parsed, "
                f"{self.reused} unchanged, {self.deleted} removed, {self.drafts} drafts skipped, "
                f"{self.embedded} passages embedded) in {self.seconds:.1f}s; "
                f"{len(self.errors)} errors, {len(self.problems) - len(self.errors)} warnings")

    def to_dict(self, max_problems: int = 200) -> dict:
        """JSON form for the admin API: counts, then at most `max_problems` problems."""
        return {"build_id": self.build_id, "articles": self.articles, "passages": self.passages,
                "parsed": self.parsed, "reused": self.reused, "deleted": self.deleted, "drafts": self.drafts,
                "embedded": self.embedded, "seconds": round(self.seconds, 3), "errors": len(self.errors),
                "warnings": len(self.problems) - len(self.errors), "summary": self.summary(),
                "problems": [{"path": p.path, "line": p.line, "severity": p.severity, "message": p.message}
                             for p in self.problems[:max_problems]]}


@dataclass
class _Previous:
    """The version in service, as far as an incremental build needs it: what each article was built from."""

    version: IndexReader
    articles: dict[str, tuple[list[str], str, int]]  # id -> (include paths, source hash, passages)


def settings_fingerprint(settings: Settings, encoder: TextEncoder) -> dict:
    """Settings that change what gets indexed: a version built with others is rebuilt, not reused."""
    return {"model": encoder.model_id, "passage_max_words": settings.passage_max_words,
            "passage_min_words": settings.passage_min_words,
            "title_vectors": 1}  # articles' titles embedded (search/signals.py TitleSignal): older versions rebuilt


# path -> ((mtime ns, ctime ns, size, inode), sha256 of the bytes). Builds in one long-lived process
# (`kb serve --watch`, `kb watch`) re-read only files whose stat changed; `kb index` starts empty.
_digests: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}


def file_digest(path: str) -> bytes:
    """sha256 of a file's bytes, re-read only when its stat changed since the last call."""
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    hit = _digests.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).digest()
    _digests[path] = (key, digest)
    return digest


def hash_source(path: Path, content_root: Path, includes: list[str]) -> str:
    """Hash of the article file plus the include files it used last time."""
    digest = hashlib.sha256(file_digest(str(path)))
    for rel in includes:
        digest.update(rel.encode())
        try:
            digest.update(file_digest(os.path.join(content_root, rel)))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            digest.update(b"<missing>")
    return digest.hexdigest()


def _load_previous(backend: IndexBackend, settings: Settings, encoder: TextEncoder) -> _Previous | None:
    try:
        version = backend.open(model_id=encoder.model_id)
    except KBError as exc:
        if isinstance(exc, (IndexMismatch, IndexDamaged)):  # a damaged version is repaired by a full build
            log.warning("previous index not reusable (%s); building from scratch", exc.message)
        return None
    if version.manifest.get("settings") != settings_fingerprint(settings, encoder):
        version.close()
        return None
    counts = Counter(version.passage_articles())
    articles = {a.id: (list(a.includes), a.source_hash, counts.get(a.id, 0)) for a in version.articles()}
    return _Previous(version, articles)


def build_index(settings: Settings, encoder: TextEncoder, *, full: bool = False, strict: bool = False,
                progress: bool = True, on_progress: Progress | None = None) -> BuildReport:
    """Index `settings.content_dir` into a new version of `settings.index_dir` and switch to it.

    `progress` shows tqdm bars; `on_progress(stage, done, total)` (stages scanning, embedding, writing)
    feeds the admin API's job status. A build that fails leaves its record in the index folder for /healthz
    (indexer/failures.py) and no half-written folder; a full disk is a DiskFull naming the folder.
    """
    started = time.perf_counter()
    content_root = settings.content_dir
    if not content_root.is_dir():
        raise ContentError(f"content folder {content_root} does not exist")
    backend = backend_for(settings)
    with backend.lock():
        try:
            with failures.disk_full_named(settings.index_dir, "building an index version"):
                report = _build_locked(backend, settings, encoder, full, strict, progress,
                                       on_progress or _ignore_progress)
        except Exception as exc:
            with contextlib.suppress(OSError):
                backend.remove_leftovers()  # a half-written version gives its space back
            failures.record(settings.index_dir, exc)
            raise
        failures.clear(settings.index_dir)
    report.seconds = time.perf_counter() - started
    return report


def _build_locked(backend: IndexBackend, settings: Settings, encoder: TextEncoder, full: bool, strict: bool,
                  progress: bool, on_progress: Progress) -> BuildReport:
    """The build, under the build lock; the previous version's files are closed when it ends."""
    report = BuildReport()
    backend.remove_leftovers()
    previous = None if full else _load_previous(backend, settings, encoder)
    try:
        _build_from(backend, settings, encoder, previous, strict, progress, on_progress, report)
    finally:
        if previous is not None:
            previous.version.close()
    return report


@dataclass
class _Changed:
    """A file to parse: new, or changed since the previous version (only its path is kept until its batch)."""

    path: Path
    rel: str
    article_id: str
    had_version: bool  # the previous version has this article (a file that no longer parses keeps it)


def _build_from(backend: IndexBackend, settings: Settings, encoder: TextEncoder, previous: _Previous | None,
                strict: bool, progress: bool, on_progress: Progress, report: BuildReport) -> None:
    """Scan the content folder against the previous version, then write a new version if anything changed.

    A full build (no previous version) streams: parse, chunk, embed and write in batches, so memory holds one batch.
    An incremental one parses its changed files first, as they decide whether a version is written at all.
    """
    old_articles = previous.articles if previous else {}
    files = discover(settings.content_dir)
    kept, changed = _scan(settings.content_dir, files, old_articles, report, progress, on_progress)
    if previous is None:
        with contextlib.closing(_parse(settings, changed, ahead=len(changed) >= PARSE_AHEAD_MIN_FILES)) as parsed:
            if parsed.ahead:  # the model loads now (asked its dimension), while the worker parses the first files
                _ = encoder.dim
            report.build_id = _write(backend, settings, encoder, None, kept,
                                     _publishable(settings, changed, parsed, kept, report), len(changed), strict,
                                     report, progress, on_progress)
    else:
        fresh = list(_publishable(settings, changed, _parse(settings, changed), kept, report))
        _check(settings, kept, len(fresh), strict, report)
        report.deleted = len(set(old_articles) - kept - {a.article_id for a, _, _ in fresh})
        if not fresh and not report.deleted:
            report.reused, report.articles = len(kept), len(kept)
            report.passages = sum(old_articles[a][2] for a in kept)
            return
        report.build_id = _write(backend, settings, encoder, previous, kept, iter(fresh), len(fresh), strict,
                                 report, progress, on_progress)
    backend.prune(settings.keep_versions)


def _scan(content_root: Path, files: list[Path], old_articles: dict, report: BuildReport, progress: bool,
          on_progress: Progress) -> tuple[set[str], list[_Changed]]:
    """Ids carried over unchanged from the previous version (by hash), and the files to parse."""
    root_prefix = os.path.join(content_root, "")  # discover() joins onto the root exactly as given
    kept: set[str] = set()
    changed: list[_Changed] = []
    seen_ids: dict[str, str] = {}
    for n, path in enumerate(tqdm(files, desc="files", unit="file", disable=not progress or not old_articles)):
        if n % 200 == 0:
            on_progress("scanning", n, len(files))
        rel = str(path)[len(root_prefix):] if str(path).startswith(root_prefix) else \
            path.relative_to(content_root).as_posix()
        article_id = rel[:-3]
        if article_id.lower() in seen_ids:
            report.problems.append(Problem(rel, 0, f"duplicate article id: differs only in case from "
                                                   f"{seen_ids[article_id.lower()]}"))
            continue
        seen_ids[article_id.lower()] = rel
        old = old_articles.get(article_id)
        if old is not None and old[1] == hash_source(path, content_root, old[0]):
            kept.add(article_id)
            continue
        changed.append(_Changed(path, rel, article_id, old is not None))
    on_progress("scanning", len(files), len(files))
    return kept, changed


def _parse(settings: Settings, changed: list[_Changed], *, ahead: bool = False) -> ParsedFiles:
    """The changed files parsed and chunked in order (`ahead`: by a worker process, see indexer.parse_ahead)."""
    return ParsedFiles([item.path for item in changed], settings.content_dir, settings.passage_max_words,
                       settings.passage_min_words, ahead=ahead)


def _publishable(settings: Settings, changed: list[_Changed], parsed: Iterable[Parsed], kept: set[str],
                 report: BuildReport) -> Iterator[tuple[Article, str, Parsed]]:
    """Publishable articles with their source hash and what parsing found; problems and drafts counted, and an
    article that no longer parses added to `kept` (its previous version stays)."""
    for item, result in zip(changed, parsed):
        article = result.article
        report.problems.extend(result.problems)
        if article is None:
            if item.had_version:
                report.problems.append(Problem(item.rel, 0, "kept the previously indexed version of this article",
                                               "warning"))
                kept.add(item.article_id)
            continue
        if article.status == "draft":
            report.drafts += 1
            continue
        yield article, hash_source(item.path, settings.content_dir, list(article.includes)), result


def _check(settings: Settings, kept: set[str], fresh: int, strict: bool, report: BuildReport) -> None:
    """Fail before anything is switched to: content errors under --strict, or nothing to publish."""
    if strict and report.errors:
        raise ContentError(f"{len(report.errors)} content errors (--strict): " +
                           "; ".join(str(p) for p in report.errors[:5]))
    if not kept and not fresh:
        raise ContentError(f"no publishable articles found in {settings.content_dir}")


def _write(backend: IndexBackend, settings: Settings, encoder: TextEncoder, previous: _Previous | None,
           kept: set[str], fresh: Iterator[tuple[Article, str, Parsed]], to_parse: int, strict: bool,
           report: BuildReport, progress: bool, on_progress: Progress) -> str:
    """Embed and write the fresh articles in batches of about BATCH_PASSAGES passages, then commit the version:
    from scratch, or as a patch of the previous one. The version is opened at the first batch (or at the end: a
    build that only deletes), so a build with nothing to publish never asks the encoder for its dimension; a failed
    check discards it. Progress: a bar of passages written (a batch's new embeddings as they come), and
    ("embedding", articles parsed, articles to parse) per batch, then ("writing", 0, passages) before the commit."""
    build_id = backend.new_name()
    # The previous version knows the dimension: asking the encoder would load the model even when every passage
    # text is already in the cache (deletions, front-matter-only edits).
    dim = (lambda: previous.version.manifest["dim"]) if previous else (lambda: encoder.dim)
    remove = set(previous.articles) - kept if previous else set()
    hashes: list[str] = [aid + previous.articles[aid][1] for aid in kept] if previous else []
    writer: IndexWriter | None = None
    cache: EmbeddingCache | None = None
    batch: list[tuple[ArticleRecord, Parsed]] = []
    parsed = size = passages = 0
    try:
        with tqdm(desc="passages", unit="psg", disable=not progress) as bar:
            on_progress("embedding", 0, to_parse)
            for article, source_hash, parsed_file in fresh:
                batch.append((ArticleRecord.of(article, source_hash), parsed_file))
                hashes.append(article.article_id + source_hash)
                parsed += 1
                size += len(parsed_file.passages)
                if size >= BATCH_PASSAGES:
                    if strict and report.errors:  # the build will fail: stop embedding, go on finding errors
                        batch, size = [], 0
                        continue
                    if writer is None:
                        writer, cache = _open(backend, settings, encoder, build_id, dim(), previous, remove)
                    passages += _flush(settings, encoder, cache, writer, batch, report, bar.update)
                    batch, size = [], 0
                    on_progress("embedding", parsed, to_parse)
                    bar.set_postfix(articles=parsed, refresh=False)
            _check(settings, kept, parsed, strict, report)
            if writer is None:
                writer, cache = _open(backend, settings, encoder, build_id, dim(), previous, remove)
            passages += _flush(settings, encoder, cache, writer, batch, report, bar.update)
            bar.set_postfix(articles=parsed, refresh=False)
            on_progress("embedding", to_parse, to_parse)
        report.parsed, report.reused = parsed, len(kept)
        manifest = {"model": encoder.model_id, "dim": writer.dim, "normalised": True,
                    "content_dir": str(settings.content_dir.resolve()),
                    "content_hash": hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest(),
                    "settings": settings_fingerprint(settings, encoder), "library_versions": _library_versions()}
        on_progress("writing", 0, passages)
        writer.commit(manifest)
    finally:
        if writer is not None and not writer.committed:
            writer.abort()
        if cache is not None:
            cache.close()
    report.articles = len(hashes)
    report.passages = passages + (sum(previous.articles[a][2] for a in kept) if previous else 0)
    return build_id


def _open(backend: IndexBackend, settings: Settings, encoder: TextEncoder, build_id: str, dim: int,
          previous: _Previous | None, remove: set[str]) -> tuple[IndexWriter, EmbeddingCache]:
    """The new version's writer (on the previous version when there is one) and the embedding cache."""
    writer = backend.writer(build_id, dim, base=previous.version if previous else None, remove=remove)
    return writer, EmbeddingCache(settings.index_dir, encoder.model_id, dim)


def _flush(settings: Settings, encoder: TextEncoder, cache: EmbeddingCache, writer: IndexWriter,
           batch: list[tuple[ArticleRecord, Parsed]], report: BuildReport,
           advance: Callable[[int], object]) -> int:
    """Embed one batch's passages (the cache first) and add them to the version; returns how many. `advance(n)`:
    n more passages embedded, or written from the cache."""
    passages = [p for _, parsed in batch for p in parsed.passages]
    if not batch:
        return 0

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode_passages(texts, batch_size=settings.batch_size)

    vectors, embedded = cache.embed([p.embed_text() for p in passages], encode, progress=advance)
    report.embedded += embedded
    sentences = [s for _, parsed in batch for s in parsed.sentences]
    writer.add(with_title_vectors([record for record, _ in batch], cache, encode),
               [PassageRecord.of(p, hash_text(p.embed_text()), s) for p, s in zip(passages, sentences)],
               vectors if len(passages) else np.zeros((0, writer.dim), np.float32))
    advance(len(passages) - embedded)
    return len(passages)


def with_title_vectors(articles: list[ArticleRecord], cache: EmbeddingCache,
                       encode: Callable[[list[str]], np.ndarray]) -> list[ArticleRecord]:
    """The articles with their titles' embeddings (the cache first; an article without a title gets none)."""
    titled = [a for a in articles if a.title.strip()]
    vectors, _ = cache.embed([a.title for a in titled], encode)
    found = {a.id: v for a, v in zip(titled, vectors)}
    return [replace(a, title_vector=np.asarray(found[a.id], dtype="<f4").tobytes()) if a.id in found else a
            for a in articles]


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("sentence-transformers", "torch", "faiss-cpu", "markdown-it-py", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
