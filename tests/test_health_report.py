"""HealthReport: counts per kind, errors, JSON shape, and the text lines `kb check` prints."""
import json
from pathlib import Path

from indexer.health_report import KINDS, Finding, HealthReport, format_report


def report() -> HealthReport:
    return HealthReport("/kb", "2024-10-24", articles=3, files=4, seconds={"parse": 1.5, "links": 0.25},
                        notes=["near-duplicates not checked: no index"], findings=[
        Finding("broken_link", "error", "a.md", 12, "x.md: link target not found (x.md)"),
        Finding("broken_link", "error", "b.md", 3, "y.md: link target not found (y.md)"),
        Finding("stale", "warning", "a.md", 3, "last reviewed 2023-01-02: 661 days ago (limit 180)"),
        Finding("near_duplicate", "warning", "a.md", 0, "0.970 cosine similarity with b.md", related="b.md")])


def test_counts_errors_and_json():
    data = json.loads(json.dumps(report().to_dict()))
    assert list(data["counts"]) == list(KINDS)
    assert data["counts"]["broken_link"] == 2 and data["counts"]["front_matter"] == 0
    assert (data["errors"], data["warnings"], data["articles"]) == (2, 2, 3)
    assert data["findings"][3] == {"kind": "near_duplicate", "severity": "warning", "path": "a.md", "line": 0,
                                   "message": "0.970 cosine similarity with b.md", "related": "b.md"}


def test_text_has_a_line_per_finding_grouped_by_kind_then_a_summary():
    lines = format_report(report(), Path("/kb")).split("\n")
    assert lines[:3] == ["# broken_link: 2", "/kb/a.md:12: error: broken_link: x.md: link target not found (x.md)",
                         "/kb/b.md:3: error: broken_link: y.md: link target not found (y.md)"]
    assert "2 errors, 2 warnings" in lines and "note: near-duplicates not checked: no index" in lines
    assert "  broken_link      2" in lines and lines[-1] == "seconds: 1.8 (parse 1.50, links 0.25)"


def test_errors_only_keeps_the_counts():
    text = format_report(report(), errors_only=True)
    assert "warning:" not in text and "a.md:12: error" in text and "2 errors, 2 warnings" in text
    assert format_report(HealthReport("/kb", "2024-10-24")).count("0 errors, 0 warnings") == 1
