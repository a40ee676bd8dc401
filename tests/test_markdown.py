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
