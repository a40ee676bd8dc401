"""Related articles: nearest articles by embedding (real model on the fixture index; tiny vectors for the plumbing)."""
from __future__ import annotations


import numpy as np
import pytest

from kb.errors import ArticleNotFound, BadRequest
from kb.index import ArticleRecord, PassageRecord, open_backend
from search.related import article_vectors, related_articles


@pytest.mark.model
def test_outlook_article_relates_to_outlook_before_teams(searcher):
    related = related_articles(searcher, "Outlook/outlook-password-prompt", k=7)
    ids = [r["id"] for r in related]
    assert "Outlook/outlook-password-prompt" not in ids and len(ids) == 7  # 8 indexed articles minus itself
    outlook = [i for i, a in enumerate(ids) if searcher.articles[a]["product"] == "Outlook"]
    teams = [i for i, a in enumerate(ids) if searcher.articles[a]["product"] == "Teams"]
    assert outlook and teams and max(outlook) < min(teams)
    assert ids[0] == "Outlook/send-receive-error-0x8004010f"
    scores = [r["score"] for r in related]
    assert scores == sorted(scores, reverse=True)
    first = related[0]
    assert set(first) == {"id", "title", "summary", "url", "score"}
    assert first["url"] == searcher.url(first["id"]) and first["title"] and first["summary"]


@pytest.mark.model
def test_k_limits_the_list(searcher):
    assert len(related_articles(searcher, "Teams/teams-microphone-not-working", k=2)) == 2
    assert related_articles(searcher, "Teams/teams-microphone-not-working", k=0) == []


@pytest.mark.model
def test_cached_per_searcher(searcher):
    assert article_vectors(searcher) is article_vectors(searcher)
    assert len(article_vectors(searcher).ids) == len(searcher.articles)


@pytest.mark.model
@pytest.mark.parametrize("article_id, error", [
    ("Outlook/no-such-article", ArticleNotFound),
    ("../etc/passwd", BadRequest),
    ("/Outlook/outlook-password-prompt", BadRequest),
    ("", BadRequest),
])
def test_unknown_or_invalid_ids_raise(searcher, article_id, error):
    with pytest.raises(error):
        related_articles(searcher, article_id)


class SmallSearcher:
    """The attributes related_articles reads, over a real index version of hand-made 3-d vectors."""

    def __init__(self, index_dir, rows: list[tuple[str, list[float]]], extra_articles: tuple[str, ...] = ()):
        vectors = np.array([v for _, v in rows], dtype=np.float32)
        ids = list(dict.fromkeys([*(a for a, _ in rows), *extra_articles]))
        backend = open_backend(index_dir)
        backend.write(backend.new_name(), [ArticleRecord(a, f"{a}.md", a.upper(), summary=f"about {a}") for a in ids],
                      [PassageRecord(f"{a}#{i}", a, (), "", f"text {i}") for i, (a, _) in enumerate(rows)],
                      vectors / np.linalg.norm(vectors, axis=1, keepdims=True), {"model": "test/3d", "dim": 3})
        self.version = backend.open()
        self.row_article = self.version.passage_articles()
        self.articles = {a.id: {"title": a.title, "summary": a.summary} for a in self.version.articles()}

    def url(self, article_id: str) -> str:
        return f"/articles/{article_id}"


def test_max_passage_ranks_a_long_article_with_one_matching_section(tmp_path):
    fake = SmallSearcher(tmp_path, [
        ("me", [1, 0, 0]), ("me", [1, 0.2, 0]),
        ("long", [0, 0, 1]), ("long", [0, 1, 0]), ("long", [0.98, 0.1, 0]),  # one section on this topic
        ("near", [0.8, 0.6, 0]),
        ("far", [0, 0, 1]),
    ], extra_articles=("no-passages",))
    related = related_articles(fake, "me", k=10)
    assert [r["id"] for r in related] == ["long", "near", "far", "no-passages"][:3]
    assert related[0] == {"id": "long", "title": "LONG", "summary": "about long", "url": "/articles/long",
                          "score": pytest.approx(related[0]["score"])}
    assert related[0]["score"] > 0.99 and related[2]["score"] < 0.01
    assert related_articles(fake, "no-passages") == []  # indexed metadata but no vector: nothing to compare


def test_single_article_index_has_no_related(tmp_path):
    assert related_articles(SmallSearcher(tmp_path, [("only", [1, 0, 0])]), "only") == []
