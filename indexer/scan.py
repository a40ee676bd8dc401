"""FileScan: what one content file contributes to the health checks; scanned in worker processes, cached by stamp."""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from indexer.links import Outline, has_headings, has_included_heading, heading_anchors, outline
from indexer.parse import decode, discover, key_line, links_outside, parse_article, split_front_matter

INCLUDE_PROBLEM = ("include ", "includes nested")  # parse_article messages about includes it could not use
PARALLEL_MIN_FILES = 200  # below this, starting worker processes costs more than it saves


@dataclass
class FileScan:
    """What one Markdown file (article or include) contributes to the checks; picklable for worker processes."""

    rel: str
    stamp: tuple[int, int]  # (mtime_ns, size) when scanned
    is_article: bool
    problems: list = field(default_factory=list)  # kb.articles.Problem
    outline: Outline | None = None
    anchors: set[str] = field(default_factory=set)  # of the article as shown: includes' headings too
    article_id: str = ""  # "" when not an article or it did not parse
    title: str = ""
    title_line: int = 1
    language: str = ""
    status: str = ""
    reviewed: str = ""
    reviewed_line: int = 1
    includes: tuple[str, ...] = ()
    include_stamps: tuple[tuple[str, tuple[int, int]], ...] = ()  # the includes as they were when scanned


@dataclass
class Inventory:
    """Every file under the content folder (hidden ones skipped): stamps, folders, case-insensitive names."""

    stamps: dict[str, tuple[int, int]]
    dirs: set[str]
    lower: dict[str, str]
    other_files: bool  # any non-Markdown file below the top level (media, downloads)?
    names: dict[str, list[str]] = field(default_factory=dict)  # lower-case file name -> paths

    def named(self, name: str) -> list[str]:
        """Files anywhere in the folder with this file name (case ignored): where a moved link target went."""
        return self.names.get(name.lower(), [])


def take_inventory(root: Path) -> Inventory:
    stamps: dict[str, tuple[int, int]] = {}
    dirs: set[str] = set()
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        dirs.update(prefix + d for d in subdirs)
        for name in names:
            if not name.startswith("."):
                with contextlib.suppress(OSError):
                    stat = os.stat(os.path.join(folder, name))
                    stamps[prefix + name] = (stat.st_mtime_ns, stat.st_size)
    other = any("/" in rel and not rel.lower().endswith(".md") for rel in stamps)
    names: dict[str, list[str]] = {}
    for rel in stamps:
        names.setdefault(rel.rsplit("/", 1)[-1].lower(), []).append(rel)
    return Inventory(stamps, dirs, {rel.lower(): rel for rel in [*stamps, *dirs]}, other, names)


def stamp_of(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file, (0, 0) when it is gone."""
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def included_headings(path: Path) -> bool:
    """Does an include file hold headings or HTML anchors (so that it adds anchors to articles)?"""
    return include_has_headings(str(path), stamp_of(path))


@functools.lru_cache(maxsize=4096)
def include_has_headings(path: str, stamp: tuple[int, int]) -> bool:
    """included_headings, remembered per file version (articles share a few includes)."""
    try:
        return has_headings(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return False


def scan_file(root: Path, rel: str, is_article: bool, stamp: tuple[int, int]) -> FileScan:
    """Parse one file (articles through parse_article) and outline its links, anchors and sections."""
    scan = FileScan(rel, stamp, is_article)
    path = root / rel
    article = None
    if is_article:
        article, scan.problems = parse_article(path, root)
    try:
        text, _, _ = decode(path.read_bytes())
        raw, lines, first = split_front_matter(text) if text is not None else (None, [], 1)
    except (OSError, ValueError):
        return scan  # unreadable or unclosed front matter: parse_article reported it
    scan.outline = outline("\n".join(lines), first)
    scan.anchors = set(scan.outline.anchors)
    if article is not None:
        scan.article_id, scan.title, scan.language = article.article_id, article.title, article.language
        scan.status, scan.reviewed, scan.includes = article.status, article.reviewed, article.includes
        scan.include_stamps = tuple((inc, stamp_of(root / inc)) for inc in article.includes)
        scan.title_line = key_line(raw or "", "title")
        scan.reviewed_line = key_line(raw or "", "reviewed" if "\nreviewed:" in f"\n{raw}" else "ms.date")
        if article.includes and (has_included_heading(text) or any(included_headings(root / inc)
                                                                    for inc in article.includes)):
            scan.anchors |= heading_anchors(article.body)
    return scan


def scan_job(job: tuple) -> FileScan:
    return scan_file(*job)


def scan_all(root: Path, inventory: Inventory, cache: dict | None, workers: int, progress: bool) -> list[FileScan]:
    """Scan every article and include file; reuse `cache` entries (rel -> FileScan) whose files did not change."""
    articles = {p.relative_to(root).as_posix() for p in discover(root)}
    real_root = Path(os.path.realpath(root))
    includes = {rel for rel in inventory.stamps if rel.lower().endswith(".md") and rel not in articles
                and "includes" in (part.lower() for part in rel.split("/")[:-1])
                and not links_outside(root / rel, real_root)}  # never read: includes of them are refused too
    scans, jobs = {}, []
    for rel in sorted(articles | includes):
        old = (cache or {}).get(rel)
        if old is not None and fresh(old, inventory):
            scans[rel] = old
        else:
            jobs.append((root, rel, rel in articles, inventory.stamps.get(rel, (0, 0))))
    bar = tqdm(total=len(jobs), desc="checking", unit="file", disable=not progress)
    if workers > 1 and len(jobs) >= PARALLEL_MIN_FILES:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for scan in pool.map(scan_job, jobs, chunksize=32):
                scans[scan.rel] = scan
                bar.update()
    else:
        for job in jobs:
            scans[job[1]] = scan_file(*job)
            bar.update()
    bar.close()
    if cache is not None:
        cache.clear()
        cache.update(scans)
    return [scans[rel] for rel in sorted(scans)]


def fresh(scan: FileScan, inventory: Inventory) -> bool:
    """Is a cached scan still right: same file, same includes, and no include that was missing?"""
    if inventory.stamps.get(scan.rel) != scan.stamp:
        return False
    if any(p.message.startswith(INCLUDE_PROBLEM) for p in scan.problems):
        return False
    return all(inventory.stamps.get(inc) == stamp for inc, stamp in scan.include_stamps)
