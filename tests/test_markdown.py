"""Markdown rendering: links between articles point at their pages; other links are left alone."""
import pytest

from indexer.markdown import article_link, render_html


@pytest.mark.parametrize("href, expected", [
    ("sign-in-loop.md", "/articles/Teams/teams-sign-in/sign-in-loop"),
    ("./sign-in-loop.md#fix", "/articles/Teams/teams-sign-in/sign-in-loop#fix"),
    ("../meetings/camera.md", "/articles/Teams/meetings/camera"),
    ("~/Outlook/Client/a.md", "/articles/Outlook/Client/a"),
    ("../../../../outside.md", None),
    ("https://learn.microsoft.com/x.md", None),
    ("/powershell/module/x.md", None),
    ("media/picture.png", None),
    ("#resolution", None),
])
def test_article_link(href, expected):
    assert article_link(href, "Teams/teams-sign-in/resolve-sign-in-errors", "/articles") == expected


def test_rendered_article_links_to_other_article_pages():
    body = "See [the loop](sign-in-loop.md#fix), [docs](https://example.com/a.md) and [below](#more).\n"
    html = render_html(body, "Teams/teams-sign-in/resolve-sign-in-errors", "/kb/articles")
    assert 'href="/kb/articles/Teams/teams-sign-in/sign-in-loop#fix"' in html
    assert 'href="https://example.com/a.md"' in html and 'href="#more"' in html
    assert 'href="sign-in-loop.md#fix"' in render_html(body)  # no article: links as written


def test_code_lines_are_found_by_blocks_alone_in_lists_quotes_and_tables():
    from indexer.markdown import code_line_indexes, remove_docfx

    lines = ["Intro with `:::inline:::` code.",             # 0: a code span is not a fence
             "",
             "1. Step one:",                                 # 2
             "",
             "   ```powershell",                             # 4: a fence inside a list item
             "   <!-- kept -->",                             # 5
             "   ```",                                       # 6
             "",
             "> ```",                                        # 8: a fence inside a quote
             "> :::zone-end:::",                             # 9
             "> ```",                                        # 10
             "",
             "| a | b |",                                    # 12: a table
             "|---|---|",
             "| ``` | x |",                                  # 14: backticks in a cell open no fence
             "",
             ":::image type=\"icon\" source=\"s.png\":::",  # 16
             "~~~",                                          # 17
             "<!-- kept too -->",                            # 18
             "~~~"]
    assert code_line_indexes(lines) == {4, 5, 6, 8, 9, 10, 17, 18, 19}
    cleaned = remove_docfx(lines)
    assert len(cleaned) == len(lines)
    assert cleaned[5] == "   <!-- kept -->" and cleaned[9] == "> :::zone-end:::" and cleaned[18] == "<!-- kept too -->"
    assert cleaned[16] == ""
