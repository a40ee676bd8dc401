"""Finding and HealthReport: what `kb check` found, as JSON for tools or as text lines for writers and CI."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("front_matter", "missing_include", "broken_link", "link_case", "broken_anchor", "empty_section",
         "duplicate_title", "near_duplicate", "stale", "not_reviewed", "old_draft", "never_returned")


@dataclass(frozen=True)
class Finding:
    """One problem in one file: what kind, how bad, where (file line), and the other file of a pair."""

    kind: str
    severity: str  # "error" | "warning"
    path: str  # content-relative
    line: int  # 1-based, 0 for the whole file
    message: str
    related: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.kind}: {self.message}"


@dataclass
class HealthReport:
    """All findings of one check run, with what was checked and how long each check took."""

    content_dir: str
    today: str
    findings: list[Finding] = field(default_factory=list)
    articles: int = 0  # article files checked
    files: int = 0  # Markdown files read: articles and includes
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # checks skipped or limited, and why
    index_version: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Findings per kind, every kind listed."""
        counts = dict.fromkeys(KINDS, 0)
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        return counts

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    def to_dict(self) -> dict:
        return {"content_dir": self.content_dir, "today": self.today, "index_version": self.index_version,
                "articles": self.articles, "files": self.files, "errors": self.errors, "warnings": self.warnings,
                "counts": self.counts, "seconds": self.seconds, "notes": self.notes,
                "findings": [asdict(f) for f in self.findings]}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_report(report: HealthReport, root: Path | None = None, errors_only: bool = False) -> str:
    """Text: one `path:line: severity: kind: message` line per finding (errors first, then by kind and path),
    a header line per kind, then counts per kind, notes and timings. Paths are prefixed with `root` if given."""
    lines: list[str] = []
    kind = None
    for finding in report.findings:
        if errors_only and finding.severity != "error":
            continue
        if finding.kind != kind:
            kind = finding.kind
            lines.append(f"# {kind}: {report.counts[kind]}")
        path = (root / finding.path).as_posix() if root is not None else finding.path
        lines.append(f"{path}:{finding.line}: {finding.severity}: {finding.kind}: {finding.message}")
    lines.append("")
    lines.append(f"checked {report.articles} articles ({report.files} Markdown files with includes) in "
                 f"{report.content_dir} on {report.today}; index version: {report.index_version or 'none'}")
    lines.append(f"{plural(report.errors, 'error')}, {plural(report.warnings, 'warning')}")
    width = max(len(k) for k in report.counts)
    lines.extend(f"  {k:<{width}}  {n}" for k, n in report.counts.items())
    lines.extend(f"note: {note}" for note in report.notes)
    total = sum(report.seconds.values())
    lines.append(f"seconds: {total:.1f} (" + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()) + ")")
    return "\n".join(lines)
