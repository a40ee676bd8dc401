"""Build an index version from the content folder: incremental by default, embedding cache, progress bars."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from indexer import failures
from indexer.cache import EmbeddingCache, hash_text
from indexer.chunking import split_article
from indexer.parse import discover, parse_article
from kb.articles import Article, Passage, Problem
from kb.errors import ContentError, IndexDamaged, IndexMismatch, KBError
from kb.embedder import TextEncoder
from kb.index import ArticleRecord, IndexBackend, IndexReader, PassageRecord, backend_for
from kb.settings import Settings

log = logging.getLogger("kb.build")
Progress = Callable[[str, int, int], None]


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
            "passage_min_words": settings.passage_min_words}


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


def _build_from(backend: IndexBackend, settings: Settings, encoder: TextEncoder, previous: _Previous | None,
                strict: bool, progress: bool, on_progress: Progress, report: BuildReport) -> None:
    """Scan the content folder against the previous version, then write a new version if anything changed."""
    content_root = settings.content_dir
    old_articles = previous.articles if previous else {}
    files = discover(content_root)
    root_prefix = os.path.join(content_root, "")  # discover() joins onto the root exactly as given
    kept: set[str] = set()  # ids of articles carried over unchanged from the previous version
    fresh: list[tuple[Article, str]] = []
    seen_ids: dict[str, str] = {}
    for n, path in enumerate(tqdm(files, desc="articles", unit="art", disable=not progress)):
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
        source_hash = hash_source(path, content_root, old[0] if old else [])
        if old is not None and old[1] == source_hash:
            kept.add(article_id)
            continue
        article, problems = parse_article(path, content_root)
        report.problems.extend(problems)
        if article is None:
            if old is not None:
                report.problems.append(Problem(rel, 0, "kept the previously indexed version of this article",
                                               "warning"))
                kept.add(article_id)
            continue
        if article.status == "draft":
            report.drafts += 1
            continue
        fresh.append((article, hash_source(path, content_root, list(article.includes))))
    if strict and report.errors:
        raise ContentError(f"{len(report.errors)} content errors (--strict): " +
                           "; ".join(str(p) for p in report.errors[:5]))
    if not kept and not fresh:
        raise ContentError(f"no publishable articles found in {content_root}")
    report.deleted = len(set(old_articles) - kept - {a.article_id for a, _ in fresh})
    report.reused, report.parsed = len(kept), len(fresh)
    if previous is not None and not fresh and not report.deleted:
        report.articles = len(kept)
        report.passages = sum(old_articles[a][2] for a in kept)
        return
    on_progress("scanning", len(files), len(files))
    report.build_id = _write(backend, settings, encoder, previous, kept, fresh, report, progress, on_progress)
    backend.prune(settings.keep_versions)


def _write(backend: IndexBackend, settings: Settings, encoder: TextEncoder, previous: _Previous | None,
           kept: set[str], fresh: list[tuple[Article, str]], report: BuildReport, progress: bool,
           on_progress: Progress) -> str:
    """Chunk and embed fresh articles and write the version: from scratch, or as a patch of the previous one."""
    article_records = [ArticleRecord.of(article, source_hash) for article, source_hash in fresh]
    new_passages = [passage for article, _ in fresh
                    for passage in split_article(article, settings.passage_max_words, settings.passage_min_words)]
    # The previous version knows the dimension: asking the encoder would load the model even when every
    # passage text is already in the cache (deletions, front-matter-only edits).
    dim = previous.version.manifest["dim"] if previous else encoder.dim
    vectors = _embed(settings, encoder, dim, new_passages, report, progress, on_progress)
    passage_records = [PassageRecord.of(p, hash_text(p.embed_text())) for p in new_passages]
    hashes = {a.id: a.source_hash for a in article_records}
    if previous is not None:
        hashes.update((aid, previous.articles[aid][1]) for aid in kept)
    content_hash = hashlib.sha256("".join(sorted(aid + h for aid, h in hashes.items())).encode()).hexdigest()
    manifest = {"model": encoder.model_id, "dim": dim, "normalised": True,
                "content_dir": str(settings.content_dir.resolve()), "content_hash": content_hash, "settings": settings_fingerprint(settings, encoder),
                "library_versions": _library_versions()}
    build_id = backend.new_name()
    on_progress("writing", 0, len(passage_records))
    backend.write(build_id, article_records, passage_records, vectors, manifest,
                  base=previous.version if previous else None,
                  remove=set(previous.articles) - kept if previous else set())
    report.articles = len(hashes)
    report.passages = len(passage_records) + (sum(previous.articles[a][2] for a in kept) if previous else 0)
    return build_id


def _embed(settings: Settings, encoder: TextEncoder, dim: int, passages: list[Passage], report: BuildReport,
           progress: bool, on_progress: Progress) -> np.ndarray:
    """Vectors of `passages`, from the embedding cache where it has them."""
    cache = EmbeddingCache(settings.index_dir, encoder.model_id, dim)
    try:
        with tqdm(total=len(passages), desc="passages", unit="psg", disable=not progress) as bar:
            def advance(n: int) -> None:
                bar.update(n)
                on_progress("embedding", bar.n, len(passages))

            on_progress("embedding", 0, len(passages))
            vectors, report.embedded = cache.embed(
                [p.embed_text() for p in passages],
                lambda texts: encoder.encode_passages(texts, batch_size=settings.batch_size),
                progress=advance)
            bar.update(len(passages) - bar.n)
    finally:
        cache.close()
    return vectors if len(passages) else np.zeros((0, dim), np.float32)


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("sentence-transformers", "torch", "faiss-cpu", "markdown-it-py", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
