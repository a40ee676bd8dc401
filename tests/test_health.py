"""Content health checks (`kb check`): every kind of finding on small hand-written folders, with true negatives."""
import datetime as dt
import os
import textwrap
from pathlib import Path

import pytest

from indexer.build import build_index
from indexer.health import check_content
from indexer.health_report import KINDS, format_report
from kb.settings import load_settings
from kb.usage import UsageLog

TODAY = dt.date(2024, 10, 24)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def article(title: str, body: str, reviewed: str = "2024-10-01", status: str = "published",
            extra: str = "owner: kb") -> str:
    """An article: front matter on lines 1-6 (title on line 2, reviewed 3, status 4), body from line 7."""
    return f"---\ntitle: {title}\nreviewed: {reviewed}\nstatus: {status}\n{extra}\n---\n" \
           + textwrap.dedent(body).lstrip("\n")


def settings_for(tmp_path: Path, content: Path, **extra):
    return load_settings({}, content_dir=content, index_dir=tmp_path / "no-index",
                         usage_db=tmp_path / "usage.sqlite", **extra)


def by_kind(report, kind: str) -> list:
    return [f for f in report.findings if f.kind == kind]


@pytest.fixture
def links_kb(tmp_path) -> Path:
    root = tmp_path / "content"
    write(root, "Outlook/other.md", article("Other article", """
        # Other article

        ## Steps

        Do the steps.

        <a name="custom-anchor"></a>Text with an explicit anchor.
        """))
    write(root, "includes/note.md", """
        > [!NOTE]
        > See [the other article](../Outlook/other.md#steps) and [nothing](../Outlook/nothing.md).
        """)
    write(root, "Outlook/good.md", article("Good article", """
        # Good article

        ## Fix it

        Jump to [this section](#fix-it), [steps](other.md#steps), [anchor](other.md#custom-anchor),
        [root](~/Outlook/other.md), [no extension](other), [the include](../includes/note.md),
        [web](https://example.com/x.md), [site](/office/troubleshoot/x), [mail](mailto:a@example.com),
        [up and out](../../elsewhere/x.md), [tab](#tab/windows).

        [!INCLUDE[note](../includes/note.md)]

        ```
        [in code](missing-in-code.md)
        ```

        <!-- [in a comment](missing-in-comment.md) -->
        """))
    write(root, "Outlook/broken.md", article("Broken article", """
        # Broken article

        ## Links

        First line of a paragraph,
        then a [missing page](missing.md) on the second line,
        and [a bad anchor](other.md#nope) on the third.

        | Column | Link |
        |---|---|
        | row | [case](Other.md) |

        See [here](#nowhere) and the [reference][ref].

        [!INCLUDE[gone](../includes/gone.md)]

        [ref]: missing-ref.md
        """))
    return root


def test_links_anchors_and_includes(tmp_path, links_kb):
    report = check_content(settings_for(tmp_path, links_kb), today=TODAY)
    found = {(f.kind, f.path, f.line) for f in report.findings if f.kind not in ("stale",)}
    assert ("broken_link", "Outlook/broken.md", 12) in found  # the second line of the paragraph
    assert ("broken_anchor", "Outlook/broken.md", 13) in found  # the third line
    assert ("link_case", "Outlook/broken.md", 17) in found  # a table row
    assert ("broken_anchor", "Outlook/broken.md", 19) in found  # #nowhere
    assert ("broken_link", "Outlook/broken.md", 23) in found  # reference-style: the definition line
    assert ("missing_include", "Outlook/broken.md", 21) in found
    # links in an include resolve from the include's folder; its broken one is reported once, on the include
    assert ("broken_link", "includes/note.md", 2) in found
    assert [f.path for f in report.findings].count("includes/note.md") == 1
    # true negatives: every link of good.md is valid, external, or not checkable
    assert not [f for f in report.findings if f.path in ("Outlook/good.md", "Outlook/other.md") and f.kind != "stale"]
    assert report.errors == 6 and report.counts["link_case"] == 1
    case = by_kind(report, "link_case")[0]
    assert case.severity == "warning" and case.related == "Outlook/other.md"
    note = " ".join(report.notes)
    assert "2 external" in note and "1 site-absolute" in note and "1 pointing outside" in note


def test_links_to_other_files_are_checked_for_existence_only_when_the_folder_has_such_files(tmp_path):
    root = tmp_path / "content"
    write(root, "a.md", article("A", "![shot](media/shot.png) [guide](files/guide.pdf) ![gone](media/gone.png)\n"))
    report = check_content(settings_for(tmp_path, root), today=TODAY)
    assert not by_kind(report, "broken_link") and any("3 links to non-Markdown files" in n for n in report.notes)
    (root / "media").mkdir()
    (root / "media" / "shot.png").write_bytes(b"png")
    report = check_content(settings_for(tmp_path, root), today=TODAY)
    assert [f.message for f in by_kind(report, "broken_link")] == [
        "files/guide.pdf: link target not found (files/guide.pdf)", "media/gone.png: image not found (media/gone.png)"]


def test_front_matter_problems(tmp_path):
    root = tmp_path / "content"
    write(root, "typo.md", article("Typo", "Text.\n", status="publishd"))
    write(root, "bad-yaml.md", "---\ntitle: [unclosed\n---\nText.\n")
    write(root, "h1-only.md", "# Title from H1\n\nText.\n")
    write(root, "fine.md", article("Fine", "Text.\n"))
    report = check_content(settings_for(tmp_path, root), today=TODAY)
    found = {f.path: f for f in by_kind(report, "front_matter")}
    assert found["typo.md"].severity == "error" and "invalid status" in found["typo.md"].message
    assert found["typo.md"].line == 4
    assert found["bad-yaml.md"].severity == "error"
    assert found["h1-only.md"].severity == "warning"  # the title falls back to the H1: kept as a warning
    assert "fine.md" not in found


def test_empty_sections(tmp_path):
    root = tmp_path / "content"
    write(root, "a.md", article("A", """
        # A

        ## Empty

        ## Only a comment

        <!-- nothing here yet -->

        ## Parent

        ### Child with text

        Text.

        ## Tabs

        ## [Windows](#tab/windows)

        Tab text.

        ## [!INCLUDE[banner](includes/banner.md)]

        ## Last
        """))
    write(root, "includes/banner.md", "Start a free trial!\n")
    report = check_content(settings_for(tmp_path, root), today=TODAY)
    assert [(f.line, f.message) for f in by_kind(report, "empty_section")] == [
        (9, 'heading "Empty" has no text under it'),
        (11, 'heading "Only a comment" has no text under it'),
        (29, 'heading "Last" has no text under it')]
    assert all(f.severity == "warning" for f in by_kind(report, "empty_section"))


def test_duplicate_titles_same_language_only(tmp_path):
    root = tmp_path / "content"
    write(root, "a.md", article("Reset your password", "Text.\n"))
    write(root, "b.md", article("reset  your PASSWORD", "Text.\n"))
    write(root, "id/c.md", article("Reset your password", "Teks.\n", extra="language: id"))
    write(root, "d.md", article("Reset your PIN", "Text.\n"))
    report = check_content(settings_for(tmp_path, root), today=TODAY)
    assert sorted((f.path, f.related, f.line) for f in by_kind(report, "duplicate_title")) == [
        ("a.md", "b.md", 2), ("b.md", "a.md", 2)]


def test_review_dates_and_drafts(tmp_path):
    root = tmp_path / "content"
    write(root, "fresh.md", article("Fresh", "Text.\n", reviewed="2024-10-01"))
    write(root, "limit.md", article("At the limit", "Text.\n", reviewed=str(TODAY - dt.timedelta(days=180))))
    write(root, "stale.md", article("Stale", "Text.\n", reviewed="2023-01-02"))
    write(root, "ms-date.md", "---\ntitle: Docs date\nms.date: 01/02/2023\n---\nText.\n")
    write(root, "never.md", "---\ntitle: Never\n---\nText.\n")
    write(root, "draft-old.md", article("Old draft", "Text.\n", reviewed="2024-08-01", status="draft"))
    write(root, "draft-new.md", article("New draft", "Text.\n", reviewed="2024-10-20", status="draft"))
    undated = write(root, "draft-undated.md", "---\ntitle: Undated draft\nstatus: draft\n---\nText.\n")
    old = dt.datetime(2024, 1, 1).timestamp()
    os.utime(undated, (old, old))
    report = check_content(settings_for(tmp_path, root), today=TODAY)
    assert sorted((f.path, f.line) for f in by_kind(report, "stale")) == [("ms-date.md", 3), ("stale.md", 3)]
    assert "661 days ago (limit 180)" in {f.path: f for f in by_kind(report, "stale")}["stale.md"].message
    assert [f.path for f in by_kind(report, "not_reviewed")] == ["never.md"]
    drafts = {f.path: f.message for f in by_kind(report, "old_draft")}
    assert set(drafts) == {"draft-old.md", "draft-undated.md"}
    assert "last reviewed 2024-08-01: 84 days ago" in drafts["draft-old.md"]
    assert "file unchanged since 2024-01-01" in drafts["draft-undated.md"]
    shorter = check_content(settings_for(tmp_path, root, stale_days=1000, draft_max_age_days=100), today=TODAY)
    assert not by_kind(shorter, "stale") and [f.path for f in by_kind(shorter, "old_draft")] == ["draft-undated.md"]


@pytest.fixture
def indexed_kb(tmp_path, tiny_encoder):
    root = tmp_path / "content"
    text = ("Outlook asks for the password again and again after the mailbox moved to Exchange Online. Remove the "
            "saved credentials in Credential Manager, turn on modern authentication for the tenant, then restart "
            "Outlook and sign in once with the full email address and the new password.\n")
    write(root, "Outlook/prompt.md", article("Password prompt", text))
    write(root, "Outlook/prompt-copy.md", article("Password prompts again", text))
    write(root, "Teams/camera.md", article("Camera is black", "The Teams camera shows a black picture in calls.\n"))
    write(root, "Teams/draft.md", article("Draft", "The Teams camera shows a black picture in calls.\n",
                                          status="draft"))
    settings = load_settings({}, content_dir=root, index_dir=tmp_path / "index", usage_db=tmp_path / "usage.sqlite")
    build_index(settings, tiny_encoder, progress=False)
    return settings


def test_near_duplicates_from_the_index(indexed_kb):
    report = check_content(indexed_kb, today=TODAY)
    pairs = by_kind(report, "near_duplicate")
    assert [(f.path, f.related) for f in pairs] == [("Outlook/prompt.md", "Outlook/prompt-copy.md")]
    assert float(pairs[0].message.split()[0]) >= 0.95 and report.index_version
    stricter = check_content(load_settings({}, content_dir=indexed_kb.content_dir, index_dir=indexed_kb.index_dir,
                                           near_duplicate_threshold=1.01), today=TODAY)
    assert not by_kind(stricter, "near_duplicate")


def test_without_an_index_near_duplicates_are_skipped_with_a_note(tmp_path, indexed_kb):
    report = check_content(settings_for(tmp_path, indexed_kb.content_dir), today=TODAY)
    assert not by_kind(report, "near_duplicate") and report.index_version is None
    assert any(n.startswith("near-duplicates not checked: no index") for n in report.notes)


def test_never_returned_only_once_the_usage_log_has_data(indexed_kb, tmp_path):
    usage = UsageLog(tmp_path / "usage.sqlite")
    report = check_content(indexed_kb, usage=usage, today=TODAY)
    assert not by_kind(report, "never_returned") and any("no searches recorded" in n for n in report.notes)
    assert not (tmp_path / "usage.sqlite").exists()  # checking never creates the log
    usage.record(["Outlook/prompt", "Outlook/prompt"])
    started = dt.date.fromisoformat(usage.since())
    report = check_content(indexed_kb, usage=usage, today=started + dt.timedelta(days=6))
    assert not by_kind(report, "never_returned") and any("less than 7 days" in n for n in report.notes)
    report = check_content(indexed_kb, usage=usage, today=started + dt.timedelta(days=7))
    # drafts are not searchable, so they are not reported
    assert sorted(f.path for f in by_kind(report, "never_returned")) == ["Outlook/prompt-copy.md", "Teams/camera.md"]
    usage.close()


def test_report_json_text_and_counts(tmp_path, links_kb):
    report = check_content(settings_for(tmp_path, links_kb), today=TODAY)
    data = report.to_dict()
    assert list(data["counts"]) == list(KINDS) and data["errors"] == report.errors == 6
    assert data["articles"] == 3 and data["files"] == 4 and set(data["seconds"]) >= {"parse", "links"}
    assert data["findings"][0]["severity"] == "error"  # errors first
    text = format_report(report, links_kb)
    assert f"{(links_kb / 'Outlook/broken.md').as_posix()}:12: error: broken_link: missing.md" in text
    assert "6 errors, 1 warning\n" in text and "warning: link_case" in text
    quiet = format_report(report, errors_only=True)
    assert "warning: link_case" not in quiet and "6 errors, 1 warning\n" in quiet


def test_missing_content_folder_is_a_usage_error(tmp_path):
    from kb.errors import BadRequest

    with pytest.raises(BadRequest):
        check_content(settings_for(tmp_path, tmp_path / "nothing"))


def test_a_broken_link_names_the_file_it_probably_moved_to(tmp_path):
    root = tmp_path / "content"
    write(root, "Outlook/deployment/a.md", article("A", "See [install](install.md) and [gone](gone.md).\n"))
    write(root, "Outlook/installation/install.md", article("Install", "Text.\n"))
    found = {f.message: f.related for f in by_kind(check_content(settings_for(tmp_path, root), today=TODAY),
                                                   "broken_link")}
    assert found == {"install.md: link target not found (Outlook/deployment/install.md); a file of that name is at "
                     "Outlook/installation/install.md": "Outlook/installation/install.md",
                     "gone.md: link target not found (Outlook/deployment/gone.md)": ""}
