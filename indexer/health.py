"""Content health for writers: check_content() runs every content check over a folder into a HealthReport."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from typing import Iterator

from indexer.health_report import KINDS, Finding, HealthReport, plural
from indexer.links import Link
from indexer.markdown import resolve
from indexer.scan import INCLUDE_PROBLEM, FileScan, Inventory, scan_all, take_inventory
from kb.database import side_database
from kb.errors import BadRequest, KBError
from kb.settings import Settings
from kb.index import IndexReader, backend_for
from kb.usage import UsageLog

# Parser warnings that mean a front matter value is invalid (the indexer falls back to a default): errors here.
INVALID_VALUE = ("invalid status", "invalid audience", "invalid language", "unreadable date")


def parse_findings(scans: list[FileScan]) -> list[Finding]:
    """Problems parse_article reported: includes that cannot be used, front matter and file problems."""
    found = []
    for scan in scans:
        for p in scan.problems:
            if p.message.startswith(INCLUDE_PROBLEM):
                found.append(Finding("missing_include", "error", p.path, p.line, p.message))
            else:
                severity = "error" if p.message.startswith(INVALID_VALUE) else p.severity
                found.append(Finding("front_matter", severity, p.path, p.line, p.message))
    return found


def link_findings(scans: list[FileScan], inventory: Inventory, notes: list[str]) -> list[Finding]:
    """Broken links, links differing only in case, and anchors that no heading of the target has."""
    by_rel = {scan.rel: scan for scan in scans}
    users: dict[str, set[str]] = {}  # include -> anchors of the articles that include it
    for scan in scans:
        for inc in scan.includes:
            users.setdefault(inc, set()).update(scan.anchors)
    skipped = {"external": 0, "site": 0, "outside": 0, "other": 0}
    found = []
    for scan in scans:
        for link in scan.outline.links if scan.outline else ():
            target = resolve(link.target.replace("\\", "/"), scan.rel)
            if target.kind in ("external", "site", "outside"):
                skipped[target.kind] += 1
                continue
            fragment = "" if target.fragment.startswith("tab/") else target.fragment  # DocFX tab syntax
            if target.kind == "page":
                page = scan.anchors | users.get(scan.rel, set())
                if fragment and fragment not in page:
                    found.append(Finding("broken_anchor", "error", scan.rel, link.line,
                                         f"#{fragment}: no heading or anchor with this id in this file"))
                continue
            path = existing(target.path, inventory)
            if path is None:
                extension = os.path.splitext(target.path)[1].lower()
                if extension not in ("", ".md") and not inventory.other_files:
                    skipped["other"] += 1
                    continue
                found.append(missing(scan.rel, link, target.path, inventory))
            elif fragment and path in by_rel and fragment not in by_rel[path].anchors:
                found.append(Finding("broken_anchor", "error", scan.rel, link.line,
                                     f"{link.target}: {path} has no heading or anchor #{fragment}", related=path))
    notes.append(f"links not checked: {skipped['external']} external (http, https, mailto, ...), {skipped['site']} "
                 f"site-absolute (/...), {skipped['outside']} pointing outside the content folder")
    if skipped["other"]:
        notes.append(f"{plural(skipped['other'], 'link')} to non-Markdown files (images, downloads) not checked: "
                     "the content folder holds no such files (a text-only copy?)")
    return found


def existing(path: str, inventory: Inventory) -> str | None:
    """The content path a link target names if it exists (a file, a folder, or a page written without .md)."""
    if path == "" or path in inventory.dirs:
        return path
    if path in inventory.stamps:
        return path
    return path + ".md" if path + ".md" in inventory.stamps else None


def missing(source: str, link: Link, path: str, inventory: Inventory) -> Finding:
    """A link whose target does not exist: a link_case warning when only the case differs, else broken_link."""
    what = "image" if link.image else "link target"
    actual = inventory.lower.get(path.lower()) or inventory.lower.get(path.lower() + ".md")
    if actual:
        return Finding("link_case", "warning", source, link.line, f"{link.target}: {what} differs in case from "
                       f"{actual} (breaks on case-sensitive servers and in article ids)", related=actual)
    moved = inventory.named(path.rsplit("/", 1)[-1]) or inventory.named(path.rsplit("/", 1)[-1] + ".md")
    hint = f"; a file of that name is at {moved[0]}" if len(moved) == 1 else ""
    return Finding("broken_link", "error", source, link.line, f"{link.target}: {what} not found ({path}){hint}",
                   related=moved[0] if len(moved) == 1 else "")


def section_findings(scans: list[FileScan]) -> list[Finding]:
    found = []
    for scan in scans:
        if scan.is_article and scan.outline:
            for heading in scan.outline.empty:
                found.append(Finding("empty_section", "warning", scan.rel, heading.line,
                                     f"heading \"{heading.text}\" has no text under it"))
    return found


def title_findings(scans: list[FileScan]) -> list[Finding]:
    """Articles sharing a title (case and spacing ignored) in the same language: each one is reported."""
    groups: dict[tuple[str, str], list[FileScan]] = {}
    for scan in scans:
        if scan.article_id:
            groups.setdefault((scan.language, " ".join(scan.title.casefold().split())), []).append(scan)
    found = []
    for members in groups.values():
        for scan in members if len(members) > 1 else ():
            others = [m.rel for m in members if m is not scan]
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            found.append(Finding("duplicate_title", "warning", scan.rel, scan.title_line,
                                 f"title \"{scan.title}\" is also used by {', '.join(others[:3])}{more}",
                                 related=others[0]))
    return found


def review_findings(scans: list[FileScan], settings: Settings, today: dt.date) -> list[Finding]:
    """Published articles not reviewed for stale_days (or never), drafts older than draft_max_age_days."""
    found = []
    for scan in scans:
        if not scan.article_id:
            continue
        reviewed = dt.date.fromisoformat(scan.reviewed) if scan.reviewed else None
        if scan.status == "draft":
            since = reviewed or dt.datetime.fromtimestamp(scan.stamp[0] / 1e9).date()
            age = (today - since).days
            if age > settings.draft_max_age_days:
                basis = f"last reviewed {since}" if reviewed else f"file unchanged since {since}"
                found.append(Finding("old_draft", "warning", scan.rel, scan.reviewed_line if reviewed else 0,
                                     f"draft, {basis}: {age} days ago (limit {settings.draft_max_age_days})"))
        elif reviewed is None:
            found.append(Finding("not_reviewed", "warning", scan.rel, 0,
                                 "no review date in front matter (reviewed or ms.date)"))
        elif (today - reviewed).days > settings.stale_days:
            found.append(Finding("stale", "warning", scan.rel, scan.reviewed_line, f"last reviewed {reviewed}: "
                                 f"{(today - reviewed).days} days ago (limit {settings.stale_days})"))
    return found


def duplicate_findings(scans: list[FileScan], index: IndexReader, threshold: float) -> list[Finding]:
    from indexer.similarity import near_duplicates

    paths = {scan.article_id: scan.rel for scan in scans if scan.article_id and scan.status == "published"}
    return [Finding("near_duplicate", "warning", paths[a], 0, f"{cosine:.3f} cosine similarity with {paths[b]}",
                    related=paths[b]) for a, b, cosine in near_duplicates(index, threshold, paths)]


def usage_findings(scans: list[FileScan], usage: UsageLog, indexed: set[str] | None) -> list[Finding]:
    """Published (and indexed, when an index is known) articles that no search has returned."""
    returned, since = usage.returned(), usage.since()
    return [Finding("never_returned", "warning", scan.rel, 0, f"no search has returned this article since "
                    f"{since} (usage log)") for scan in scans
            if scan.article_id and scan.status == "published" and scan.article_id not in returned
            and (indexed is None or scan.article_id in indexed)]


def open_index(settings: Settings) -> IndexReader:
    """The current index version, whatever model built it (only its vectors are compared)."""
    backend = backend_for(settings)
    if backend.current() is None:
        raise KBError(f"no index in {settings.index_dir}")
    return backend.open(model_id=None)


@contextlib.contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def check_content(settings: Settings, *, index: IndexReader | None = None, usage: UsageLog | None = None,
                  today: dt.date | None = None, progress: bool = False, workers: int = 1,
                  cache: dict | None = None) -> HealthReport:
    """Run every content check over settings.content_dir.

    `index`: the version whose vectors find near-duplicates (default: the current one in settings.index_dir,
    skipped with a note when there is none); `usage`: the log of returned articles (default: the usage store
    when it exists); `workers` > 1 parses in that many processes; `cache` (rel -> FileScan, updated in
    place) lets a long-running caller re-parse only the files that changed.
    """
    root = settings.content_dir
    if not root.is_dir():
        raise BadRequest(f"content folder {root} does not exist")
    today = today or dt.date.today()
    report = HealthReport(str(root), today.isoformat())
    with timed(report.seconds, "parse"):
        inventory = take_inventory(root)
        scans = scan_all(root, inventory, cache, workers, progress)
    report.files, report.articles = len(scans), sum(scan.is_article for scan in scans)
    with timed(report.seconds, "parse"):
        report.findings += parse_findings(scans)
    with timed(report.seconds, "links"):
        report.findings += link_findings(scans, inventory, report.notes)
    with timed(report.seconds, "sections"):
        report.findings += section_findings(scans)
    with timed(report.seconds, "titles"):
        report.findings += title_findings(scans)
    with timed(report.seconds, "review"):
        report.findings += review_findings(scans, settings, today)
    indexed = None
    with timed(report.seconds, "near_duplicates"):
        if index is None:
            try:
                index = open_index(settings)
            except KBError as exc:
                report.notes.append(f"near-duplicates not checked: {exc.message} (run `kb index`)")
        if index is not None:
            report.index_version = index.build_id
            indexed = {a.id for a in index.articles()}
            report.findings += duplicate_findings(scans, index, settings.near_duplicate_threshold)
    with timed(report.seconds, "usage"):
        log = usage or UsageLog(side_database(settings, "usage"))
        try:
            since = log.since() if log.has_data() else None
            if since is None:
                report.notes.append(f"never-returned articles not checked: no searches recorded yet in {log.path}")
            elif (today - dt.date.fromisoformat(since)).days < settings.usage_min_days:
                report.notes.append(f"never-returned articles not checked yet: the usage log starts on {since}, "
                                    f"less than {settings.usage_min_days} days before {today.isoformat()}")
            else:
                report.findings += usage_findings(scans, log, indexed)
        finally:
            if usage is None:
                log.close()
    report.findings = dedupe(report.findings)
    return report


def dedupe(findings: list[Finding]) -> list[Finding]:
    """Findings without repeats (an include's problem is reported once, not once per article), sorted."""
    order = {kind: n for n, kind in enumerate(KINDS)}
    unique = dict.fromkeys(findings)
    return sorted(unique, key=lambda f: (f.severity != "error", order.get(f.kind, 99), f.path, f.line, f.message))
