"""Outline of one Markdown file: links with their file lines, anchors as the article page makes them, empty sections."""
import pytest

from indexer.links import is_media, outline
from indexer.markdown import resolve


def test_links_carry_the_file_line_they_are_written_on():
    body = ("# Title\n\nOne [a](a.md) and\ntwo [b](b.md), [a again](a.md).\n\n"
            "| x | y |\n|---|---|\n| [c](c.md) | ![pic](media/p.png) |\n\n"
            ':::image type="content" source="media/shot.png" alt-text="x":::\n\n[r][ref]\n\n[ref]: r.md\n')
    found = [(link.target, link.line, link.image) for link in outline(body, first_line=10).links]
    assert sorted(found, key=lambda x: (x[1], x[0])) == [
        ("a.md", 12, False), ("a.md", 13, False), ("b.md", 13, False), ("c.md", 17, False),
        ("media/p.png", 17, True), ("media/shot.png", 19, True), ("r.md", 23, False)]


def test_code_comments_and_include_directives_are_not_links():
    body = "```\n[x](code.md)\n```\n\n<!-- [y](comment.md) -->\n\n[!INCLUDE[z](includes/z.md)]\n\n`[w](inline.md)`\n"
    assert outline(body, 1).links == []


def test_anchors_are_heading_ids_and_explicit_html_anchors():
    body = ("# Title\n\n## Set up Outlook 2016!\n\ntext\n\n## Set up Outlook 2016!\n\n"
            "<a name=plain></a><span id=\"quoted\">\n")
    assert outline(body, 1).anchors == {"title", "set-up-outlook-2016", "set-up-outlook-2016-1", "plain", "quoted"}


def test_empty_sections_respect_heading_levels():
    body = "## A\n\n### A1\n\ntext\n\n## B\n\n### B1\n\n## C\n\ntext\n\n## D\n"
    assert [(h.text, h.line) for h in outline(body, 1).empty] == [("B", 7), ("B1", 9), ("D", 15)]


@pytest.mark.parametrize("target, kind, path, fragment", [
    ("https://example.com/a.md", "external", "", ""),
    ("mailto:someone@example.com", "external", "", ""),
    ("xref:Some.Uid", "external", "", ""),
    ("//cdn.example.com/x.png", "external", "", ""),
    ("/office/troubleshoot/x", "site", "/office/troubleshoot/x", ""),
    ("#steps", "page", "", "steps"),
    ("?view=x", "page", "", ""),
    ("other.md#steps", "file", "Outlook/other.md", "steps"),
    ("../Teams/x.md?tabs=a#b", "file", "Teams/x.md", "b"),
    ("~/Teams/x.md", "file", "Teams/x.md", ""),
    ("../../x.md", "outside", "../x.md", ""),
    ("./", "file", "Outlook", ""),
])
def test_resolve(target, kind, path, fragment):
    resolved = resolve(target, "Outlook/source.md")
    assert (resolved.kind, resolved.path, resolved.fragment) == (kind, path, fragment)


def test_media_by_extension():
    assert is_media("media/a.PNG") and is_media("v/clip.mp4") and not is_media("guide.pdf") and not is_media("a.md")
