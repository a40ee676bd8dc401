"""Tests for indexer.parse: discovery, front matter, DocFX quirks, sections, anchors and safe HTML."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from indexer.parse import discover, parse_article, render_html, slugify
from kb.articles import Article, Problem

FIXTURES = Path(__file__).parent / "fixtures"
CONTENT = FIXTURES / "content"
BROKEN = FIXTURES / "broken"
HEADING_ID_RE = re.compile(r'<h[1-6] id="([^"]*)"')


def parse_content(rel: str) -> Article:
    """Parse a fixture article that must parse without problems."""
    article, problems = parse_article(CONTENT / rel, CONTENT)
    assert problems == []
    assert article is not None
    return article


def parse_text(tmp_path: Path, markdown: str, name: str = "article.md") -> tuple[Article | None, list[Problem]]:
    """Write markdown into tmp_path/name and parse it with tmp_path as content root."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown, encoding="utf-8")
    return parse_article(path, tmp_path)


def section(article: Article, anchor: str):
    """The section with the given anchor."""
    return next(s for s in article.sections if s.anchor == anchor)


def all_text(article: Article) -> str:
    """All section text of an article."""
    return "\n\n".join(s.text for s in article.sections)


# --- discover ---------------------------------------------------------------------------------


def test_discover_lists_articles_and_skips_fragments():
    found = [p.relative_to(CONTENT).as_posix() for p in discover(CONTENT)]
    assert found == [
        "Exchange/ndr-5-7-124.md",
        "OneDrive/onedrive-sync-stuck.md",
        "Outlook/outlook-password-prompt.md",
        "Outlook/send-receive-error-0x8004010f.md",
        "Teams/teams-microphone-not-working.md",
        "drafts/upcoming-feature.md",
        "id/reset-kata-sandi-outlook.md",
        "id/teams-kamera-tidak-berfungsi.md",
        "internal/escalation-policy.md",
    ]


def test_discover_skip_rules(tmp_path):
    for rel in (
        "a.md", "README.md", "SOURCE.md", "toc.md", "sub/README.md", "sub/TOC.md", "sub/Includes/x.md",
        "sub/deep/includes/more/y.md", ".hidden/z.md", "sub/.draft.md", "notes.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("# x\n", encoding="utf-8")
    assert [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path)] == ["a.md", "sub/README.md"]


def test_discover_refuses_symbolic_links_out_of_the_content_folder(tmp_path, caplog):
    """A link to a system file is not an article (includes refuse the same targets); links inside are kept."""
    root, outside = tmp_path / "content", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n", encoding="utf-8")
    (outside / "folder").mkdir()
    (outside / "folder" / "deep.md").write_text("# Deep\n", encoding="utf-8")
    (root / "a.md").write_text("# A\n", encoding="utf-8")
    (root / "sub" / "passwd.md").symlink_to("/etc/passwd")
    (root / "sub" / "secret.md").symlink_to(outside / "secret.md")
    (root / "sub" / "chain.md").symlink_to(root / "sub" / "secret.md")  # inside, but on to the outside
    (root / "sub" / "alias.md").symlink_to(root / "a.md")  # another name for an article inside: kept
    (root / "linked").symlink_to(outside / "folder", target_is_directory=True)  # never entered
    with caplog.at_level("WARNING", logger="kb.parse"):
        found = [p.relative_to(root).as_posix() for p in discover(root)]
    assert found == ["a.md", "sub/alias.md"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 3 and all("outside the content folder" in m and "not indexed" in m for m in warned)
    assert {m.split(" is a symbolic link")[0] for m in warned} == {str(root / "sub" / n) for n in
                                                                   ("passwd.md", "secret.md", "chain.md")}


# --- broken files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("bad-yaml.md", 5, "invalid YAML front matter"),
        ("latin1.md", 5, "not valid UTF-8"),
        ("empty.md", 1, "empty file"),
        ("no-title-no-h1.md", 1, "no title"),
    ],
)
def test_broken_file_gives_error(name, line, fragment):
    article, problems = parse_article(BROKEN / name, BROKEN)
    assert article is None
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 1
    assert errors[0].path == name
    assert errors[0].line == line
    assert fragment in errors[0].message


def test_whitespace_only_file_is_empty(tmp_path):
    article, problems = parse_text(tmp_path, "  \n\n\t\n")
    assert article is None and problems[0].message == "empty file"


def test_front_matter_that_is_not_a_mapping(tmp_path):
    article, problems = parse_text(tmp_path, "---\n- a\n- b\n---\n# Title\n")
    assert article is None
    assert "not a mapping" in problems[0].message


def test_unclosed_front_matter(tmp_path):
    article, problems = parse_text(tmp_path, "---\ntitle: x\n\n# Title\n")
    assert article is None
    assert problems[0].line == 1 and "closing" in problems[0].message


def test_yaml_error_line_counts_the_front_matter_offset(tmp_path):
    article, problems = parse_text(tmp_path, "---\ntitle: ok\nsummary: ok\nbad: [1, 2\n---\n")
    assert article is None
    assert problems[0].line == 5  # yaml notices the problem at the closing line of the front matter


def test_no_title_falls_back_to_h1_with_warning():
    article, problems = parse_article(BROKEN / "no-title.md", BROKEN)
    assert article is not None
    assert article.title == "Title taken from the first heading"
    assert problems == [Problem("no-title.md", 6, "no title in front matter; using the first H1", "warning")]
    assert "Title taken" not in all_text(article)
    assert [s.heading_path for s in article.sections] == [(), ("Details",)]


def test_missing_include_warns_with_line_and_drops_directive():
    article, problems = parse_article(BROKEN / "missing-include.md", BROKEN)
    assert article is not None
    assert problems == [
        Problem("missing-include.md", 9, "include not found: includes/does-not-exist.md", "warning")
    ]
    assert "[!INCLUDE" not in article.body and article.includes == ()
    assert "First paragraph before the include.\n\nLast paragraph after the include." in all_text(article)


def test_include_outside_content_root_is_refused():
    article, problems = parse_article(BROKEN / "escape-include.md", BROKEN)
    assert article is not None
    assert len(problems) == 1
    assert problems[0].line == 7 and problems[0].severity == "warning"
    assert "outside the content root" in problems[0].message
    assert "root:" not in article.body and article.includes == ()


def test_parse_article_never_raises_on_garbage(tmp_path):
    path = tmp_path / "garbage.md"
    path.write_bytes(bytes(range(256)) * 4)
    article, problems = parse_article(path, tmp_path)
    assert article is None and problems[0].severity == "error"


# --- fields -----------------------------------------------------------------------------------


def test_fixture_front_matter_fields():
    article = parse_content("id/reset-kata-sandi-outlook.md")
    assert article.article_id == "id/reset-kata-sandi-outlook"
    assert article.path == "id/reset-kata-sandi-outlook.md"
    assert article.title == "Cara mengatur ulang kata sandi akun Microsoft 365 untuk Outlook"
    assert article.language == "id" and article.product == "Outlook"
    assert article.tags[:2] == ("kata sandi", "reset password")
    assert (article.audience, article.status, article.owner, article.reviewed) == (
        "public", "published", "support-id", "2024-03-18",
    )
    assert parse_content("drafts/upcoming-feature.md").status == "draft"
    assert parse_content("internal/escalation-policy.md").audience == "internal"
    assert parse_content("Outlook/send-receive-error-0x8004010f.md").tags[0] == "0x8004010F"


CORPUS_HEADER = """---
title: Can't add and verify a domain in hybrid
description: Fixes an issue that prevents you from verifying a domain.
author: cloud-writer
ms.author: meerak
ms.date: 03/31/2022
ms.search.keywords: domain, hybrid,  verification
ms.custom:
  - sap:Hybrid
  - CSSTroubleshoot
appliesto:
  - Exchange Online
---
# Can't add and verify a domain in hybrid

Intro.
"""


def test_corpus_like_front_matter_fallbacks(tmp_path):
    article, problems = parse_text(tmp_path, CORPUS_HEADER, "Exchange/Hybrid/cannot-verify.md")
    assert problems == []
    assert article.summary == "Fixes an issue that prevents you from verifying a domain."
    assert article.owner == "cloud-writer"
    assert article.reviewed == "2022-03-31"
    assert article.tags == ("domain", "hybrid", "verification")
    assert article.product == "Exchange"
    assert (article.language, article.audience, article.status) == ("en", "public", "published")
    assert article.extra == {
        "ms.author": "meerak",
        "ms.custom": ["sap:Hybrid", "CSSTroubleshoot"],
        "appliesto": ["Exchange Online"],
    }


def test_product_is_empty_at_top_level_and_extra_is_json_safe(tmp_path):
    text = "---\ntitle: T\nreviewed: 2024-01-05\ncreated: 2023-12-01\nnested: {when: 2023-01-02T10:00:00}\n---\nx\n"
    article, problems = parse_text(tmp_path, text)
    assert problems == [] and article.product == "" and article.reviewed == "2024-01-05"
    assert article.extra == {"created": "2023-12-01", "nested": {"when": "2023-01-02T10:00:00"}}
    json.dumps(article.extra)


def test_invalid_field_values_warn_and_fall_back(tmp_path):
    text = (
        "---\ntitle: T\nlanguage: English (US)\naudience: everyone\nstatus: retired\nreviewed: someday\n"
        "tags: one, two,, one\n---\nBody.\n"
    )
    article, problems = parse_text(tmp_path, text)
    assert (article.language, article.audience, article.status, article.reviewed) == ("en", "public", "published", "")
    assert article.tags == ("one", "two")
    assert [(p.line, p.severity) for p in problems] == [(3, "warning"), (4, "warning"), (5, "warning"), (6, "warning")]
    assert "language" in problems[0].message and "reviewed" in problems[3].message


def test_docfx_audience_means_public_without_warning(tmp_path):
    article, problems = parse_text(tmp_path, "---\ntitle: T\naudience: ITPro\n---\nBody.\n")
    assert problems == [] and article.audience == "public"


def test_language_codes_are_lowercased(tmp_path):
    article, problems = parse_text(tmp_path, "---\ntitle: T\nlanguage: pt-BR\n---\nBody.\n")
    assert problems == [] and article.language == "pt-br"


# --- includes, DocFX syntax, callouts ----------------------------------------------------------


def test_include_is_inlined_and_recorded():
    article = parse_content("Outlook/send-receive-error-0x8004010f.md")
    assert article.includes == ("includes/registry-alert.md",)
    text = section(article, "step-2-reset-the-data-file-location").text
    assert text.startswith("Important: Follow the steps in this section carefully.")
    assert "Serious problems might occur" in article.body and "[!INCLUDE" not in article.body


def test_image_and_comment_are_dropped():
    article = parse_content("Outlook/send-receive-error-0x8004010f.md")
    assert ":::image" not in article.body and "<!--" not in article.body
    text = all_text(article)
    assert ":::" not in text and "Reviewer note" not in text and "Screenshot" not in text


def test_note_callout_text_kept_without_marker():
    article = parse_content("Outlook/send-receive-error-0x8004010f.md")
    text = section(article, "step-1-download-a-fresh-copy-of-the-offline-address-book").text
    assert "Note: Downloading the full offline address book can take several minutes" in text
    assert "[!NOTE]" not in all_text(article)


def test_links_reduced_to_text_and_code_kept():
    article = parse_content("Outlook/outlook-password-prompt.md")
    more = section(article, "more-information").text
    assert "see How modern authentication works for Office client apps." in more
    assert "https://" not in more and "](" not in more
    method1 = section(article, "method-1-remove-cached-passwords-from-credential-manager").text
    assert "- Exit Outlook.\n- Open Control Panel, and then select Credential Manager." in method1
    assert "contains MicrosoftOffice16_Data or msteams" in method1
    assert "**" not in all_text(article)


def test_table_and_code_text_kept():
    article = parse_content("Teams/teams-microphone-not-working.md")
    table = section(article, "check-the-device-settings-in-teams").text
    assert "Device name | Meaning | Recommended action" in table
    assert "Headset Microphone (Jabra) | USB or Bluetooth headset | Preferred for meetings" in table
    logs = section(article, "collect-diagnostic-logs").text
    assert 'Get-PnpDevice -Class AudioEndpoint | Where-Object Status -ne "OK"' in logs
    ndr = section(parse_content("Exchange/ndr-5-7-124.md"), "symptoms").text
    assert "550 5.7.124 RESOLVER.RST.SenderNotAllowed" in ndr


def test_includes_inline_in_quotes_lists_and_nested(tmp_path):
    (tmp_path / "includes").mkdir()
    (tmp_path / "includes/product.md").write_text("---\nms.service: x\n---\nContoso Desk\n", encoding="utf-8")
    (tmp_path / "includes/steps.md").write_text(
        "First included line.\nSecond line for [!INCLUDE[p](product.md)].\n", encoding="utf-8"
    )
    text = (
        "---\ntitle: T\n---\n"
        "Welcome to [!INCLUDE[product](includes/product.md)] help.\n\n"
        "> [!TIP]\n> [!INCLUDE [steps](includes/steps.md)]\n\n"
        "1. Open [!INCLUDE[product](includes/product.md)].\n"
        "1. [!include[steps](./includes/steps.md)]\n\n"
        "## Later\n\nEnd.\n"
    )
    article, problems = parse_text(tmp_path, text)
    assert problems == []
    assert article.includes == ("includes/product.md", "includes/steps.md")
    intro = article.sections[0].text
    assert intro.startswith("Welcome to Contoso Desk help.")
    assert "Tip: First included line. Second line for Contoso Desk." in intro
    assert "- Open Contoso Desk.\n- First included line. Second line for Contoso Desk." in intro
    assert section(article, "later").line == 12  # file line, not line in the expanded body


def test_include_depth_is_limited(tmp_path):
    for n in range(1, 6):
        (tmp_path / f"inc{n}.md").write_text(f"level {n} [!INCLUDE[x](inc{n + 1}.md)]\n", encoding="utf-8")
    (tmp_path / "inc6.md").write_text("bottom\n", encoding="utf-8")
    article, problems = parse_text(tmp_path, "---\ntitle: T\n---\nstart [!INCLUDE[x](../inc1.md)]\n", "a/art.md")
    assert article.sections[0].text == "start level 1 level 2 level 3"
    assert article.includes == ("inc1.md", "inc2.md", "inc3.md")
    assert [(p.path, p.line, p.severity) for p in problems] == [("inc3.md", 1, "warning")]
    assert "deeper than 3" in problems[0].message


def test_docfx_directives_and_html(tmp_path):
    text = (
        "---\ntitle: T\n---\n"
        "Press <kbd>Alt</kbd>+<kbd>Q</kbd> and run `Get-Mailbox <identity>` for <MailboxName>.\n\n"
        'Choose the :::image type="icon" source="s.png" border="false"::: icon'
        ' and *:::no-loc text="GUID":::*.\n\n'
        ':::image type="complex" source="c.png" alt-text="Diagram":::\n   Long description of the diagram.\n'
        ":::image-end:::\n\n"
        ":::zone pivot=\"windows\"\n\nWindows steps.\n\n:::zone-end:::\n\n"
        "<!--\nhidden comment\nover lines\n-->\n\n"
        "> [!div class=\"nextstepaction\"]\n> [Download the tool](https://aka.ms/x)\n\n"
        "```xml\n<!-- comment in code is code -->\n<add key=\"a\" />\n```\n"
    )
    article, problems = parse_text(tmp_path, text)
    assert problems == []
    blocks = article.sections[0].text.split("\n\n")
    assert blocks == [
        "Press Alt+Q and run Get-Mailbox <identity> for <MailboxName>.",
        "Choose the icon and GUID.",
        "Windows steps.",
        "Download the tool",
        '<!-- comment in code is code -->\n<add key="a" />',
    ]
    assert "hidden comment" not in article.body and ":::" not in article.body
    assert "[!div" not in render_html(article.body)


# --- sections and anchors ---------------------------------------------------------------------


def test_sections_heading_paths_lines_and_skipped_empty_sections(tmp_path):
    text = (
        "---\ntitle: Title\n---\n"  # lines 1-3
        "# Title\n\n"  # line 4
        "Intro text.\n\n"  # line 6
        "## Resolution\n\n"  # line 8: empty, skipped
        "### Method 1\n\nDo this.\n\n"  # line 10
        "#### Detail\n\nMore.\n\n"  # line 14
        "### Method 1\n\nAgain.\n\n"  # line 18
        "# Appendix\n\nLate H1.\n"  # line 22
    )
    article, problems = parse_text(tmp_path, text)
    assert problems == []
    got = [(s.heading_path, s.anchor, s.line, s.text) for s in article.sections]
    assert got == [
        ((), "", 6, "Intro text."),
        (("Resolution", "Method 1"), "method-1", 10, "Do this."),
        (("Resolution", "Method 1", "Detail"), "detail", 14, "More."),
        (("Resolution", "Method 1"), "method-1-1", 18, "Again."),
        (("Appendix",), "appendix", 22, "Late H1."),
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Method 1: Remove cached passwords", "method-1-remove-cached-passwords"),
        ("NDR 550 5.7.124 (sender)", "ndr-550-57124-sender"),
        ("Outlook's  \"Need Password\" prompt", "outlooks--need-password-prompt"),
        ("Periksa pengaturan perangkat", "periksa-pengaturan-perangkat"),
        ("Café & crème_brûlée", "café--crème_brûlée"),
        ("Ошибка входа", "ошибка-входа"),
        ("???", "section"),
    ],
)
def test_slugify(heading, slug):
    assert slugify(heading) == slug


def test_fixture_anchors_match_rendered_heading_ids():
    for path in discover(CONTENT):
        article, _ = parse_article(path, CONTENT)
        ids = HEADING_ID_RE.findall(render_html(article.body))
        assert len(ids) == len(set(ids))
        anchors = [s.anchor for s in article.sections if s.anchor]
        assert anchors and set(anchors) <= set(ids), path


def test_duplicate_and_tricky_headings_match_rendered_ids(tmp_path):
    text = (
        "---\ntitle: Setup\n---\n# Setup\n\n## Setup\n\na\n\n## Use `Set-Mailbox` <b>now</b>\n\nb\n\n"
        "## [Linked heading](x.md)\n\nc\n\n## Setup\n\nd\n\n## Setup-1\n\ne\n\n## Kamera *tidak* berfungsi\n\nf\n"
    )
    article, _ = parse_text(tmp_path, text)
    anchors = [s.anchor for s in article.sections]
    assert anchors == [
        "setup-1", "use-set-mailbox-now", "linked-heading", "setup-2", "setup-1-1", "kamera-tidak-berfungsi",
    ]
    assert HEADING_ID_RE.findall(render_html(article.body)) == ["setup", *anchors]


# --- HTML rendering ---------------------------------------------------------------------------


def test_hostile_markdown_is_not_rendered_as_html():
    article, _ = parse_article(BROKEN / "hostile.md", BROKEN)
    html = render_html(article.body)
    assert "<script" not in html.lower()
    assert not re.search(r"<[a-z][^>]*\son\w+\s*=", html, re.IGNORECASE)  # no event handler attribute
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://support.example.com/help"]
    assert "help</a>" in html


@pytest.mark.parametrize(
    "link",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](&#x6A;avascript:alert(1))",
        "[x](java&#9;script:alert(1))",
        "[x](%6Aavascript:alert(1))",
        "[x]( vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "<javascript:alert(1)>",
        "[x][r]\n\n[r]: JAVASCRIPT:alert(1)",
        "![x](javascript:alert(1))",
    ],
)
def test_unsafe_link_schemes_are_neutralised(link):
    html = render_html(link)
    assert "href=" not in html and "src=" not in html


def test_render_html_keeps_ordinary_markup():
    html = render_html("## Steps\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[ok](https://example.com/?a=1&b=2)\n")
    assert '<h2 id="steps">Steps</h2>' in html
    assert "<table>" in html and "<td>1</td>" in html
    assert '<a href="https://example.com/?a=1&amp;b=2">ok</a>' in html


def test_callouts_render_as_divs():
    html = render_html(
        "> [!NOTE]\n> Keep this text.\n\n> [!warning]\n> Careful.\n\n"
        '> [!div class="nextstepaction"]\n> [Next](next.md)\n'
    )
    assert '<div class="callout callout-note">' in html and "Keep this text." in html
    assert '<div class="callout callout-warning">' in html
    assert "[!" not in html and '<a href="next.md">Next</a>' in html


def test_callout_markers_inside_quotes_become_labels(tmp_path):
    text = (
        "---\ntitle: T\n---\n"
        "> [!TIP]\n> Post the deposit as one entry.\n> [!NOTE]  \n> You can post only balanced deposits.\n\n"
        "> [!Video https://www.youtube.com/embed/x]\n\n"
        "Before.\n\n<!--\nHidden steps:\n\n```\nSource = Hidden()\n```\n-->\n\nAfter.\n"
    )
    article, problems = parse_text(tmp_path, text)
    assert problems == []
    assert article.sections[0].text == (
        "Tip: Post the deposit as one entry. Note: You can post only balanced deposits.\n\nBefore.\n\nAfter."
    )
    assert "youtube" not in render_html(article.body)
