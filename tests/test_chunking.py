"""Tests for indexer.chunking: bounded passages, paragraph/sentence/word splits, merges, stable ids."""
from __future__ import annotations

from pathlib import Path

import pytest

from indexer.chunking import split_article
from indexer.parse import discover, parse_article
from kb.articles import Article, Section

CONTENT = Path(__file__).parent / "fixtures" / "content"


def words(n: int, word: str = "word") -> str:
    """A text of n distinct-ish words (no sentence ends)."""
    return " ".join(f"{word}{i}" for i in range(n))


def sentences(count: int, length: int) -> str:
    """count sentences of length words each, ending with a period."""
    return " ".join(words(length, f"s{k}w") + "." for k in range(count))


def make_article(*sections: Section, article_id: str = "Outlook/test") -> Article:
    """An Article holding the given sections."""
    return Article(article_id=article_id, path=f"{article_id}.md", title="Test title", body="", sections=sections)


def sec(path: tuple[str, ...], text: str, anchor: str | None = None) -> Section:
    """A section whose anchor defaults to the slug-ish last heading."""
    if anchor is None:
        anchor = path[-1].lower().replace(" ", "-") if path else ""
    return Section(heading_path=path, anchor=anchor, text=text, line=1)


def count(text: str) -> int:
    return len(text.split())


def test_one_passage_per_section_when_short_enough():
    article = make_article(sec(("Symptoms",), words(60)), sec(("Cause",), words(180)))
    passages = split_article(article)
    assert [p.passage_id for p in passages] == ["Outlook/test#symptoms", "Outlook/test#cause"]
    assert passages[1].text == words(180)
    assert passages[0].title == "Test title" and passages[0].heading_path == ("Symptoms",)
    assert passages[0].anchor == "symptoms" and passages[0].article_id == "Outlook/test"
    assert passages[0].embed_text().startswith("Test title > Symptoms\n")


def test_long_section_is_split_on_paragraph_boundaries():
    paragraphs = [words(70, f"p{k}w") for k in range(5)]
    article = make_article(sec(("Resolution",), "\n\n".join(paragraphs)))
    passages = split_article(article, max_words=180)
    assert [count(p.text) for p in passages] == [140, 140, 70]
    assert [p.text.split("\n\n") for p in passages] == [paragraphs[0:2], paragraphs[2:4], paragraphs[4:5]]
    assert [p.passage_id for p in passages] == [
        "Outlook/test#resolution", "Outlook/test#resolution~1", "Outlook/test#resolution~2",
    ]
    assert {p.anchor for p in passages} == {"resolution"}


def test_long_paragraph_is_split_on_sentences():
    text = sentences(10, 30)  # 300 words in one paragraph
    passages = split_article(make_article(sec(("Cause",), text)), max_words=100)
    assert [count(p.text) for p in passages] == [90, 90, 90, 30]
    assert all(p.text.endswith(".") for p in passages)
    assert " ".join(p.text for p in passages) == text


def test_list_lines_count_as_sentence_boundaries():
    text = "\n".join(f"- step {i} " + words(20) for i in range(12))
    passages = split_article(make_article(sec(("Steps",), text)), max_words=100)
    assert all(count(p.text) <= 100 for p in passages)
    assert all(p.text.startswith("- step") for p in passages)
    assert "\n".join(p.text for p in passages) == text


def test_long_sentence_is_split_on_words():
    text = words(450)
    passages = split_article(make_article(sec(("Log",), text)), max_words=180)
    assert [count(p.text) for p in passages] == [180, 180, 90]
    assert " ".join(p.text for p in passages) == text


@pytest.mark.parametrize("max_words", [20, 50, 180])
def test_no_passage_exceeds_max_words(max_words):
    text = "\n\n".join([sentences(3, 70), words(10), "- a b c\n- " + words(90), sentences(2, 5)])
    passages = split_article(make_article(sec(("Mixed",), text), sec(("Tail",), words(300))), max_words=max_words)
    assert all(0 < count(p.text) <= max_words for p in passages)
    assert sum(count(p.text) for p in passages) == count(text) + 300


def test_tiny_section_merges_with_child_keeping_first_anchor():
    article = make_article(
        sec(("Resolution",), "Try these methods in order."),
        sec(("Resolution", "Method 1"), words(60)),
        sec(("Cause",), words(60)),
    )
    passages = split_article(article)
    assert [p.passage_id for p in passages] == ["Outlook/test#resolution", "Outlook/test#cause"]
    assert passages[0].text == f"Try these methods in order.\n\nMethod 1\n{words(60)}"
    assert passages[0].heading_path == ("Resolution",)


def test_intro_merges_with_first_section_and_siblings_chain():
    article = make_article(
        sec((), "Short intro."),
        sec(("A",), "Tiny a."),
        sec(("B",), "Tiny b."),
        sec(("C",), words(100)),
    )
    passages = split_article(article)
    assert len(passages) == 1
    assert passages[0].passage_id == "Outlook/test#" and passages[0].heading_path == ()
    assert passages[0].text.startswith("Short intro.\n\nA\nTiny a.\n\nB\nTiny b.\n\nC\nword0")


def test_no_merge_with_unrelated_section_or_when_too_long():
    article = make_article(
        sec(("A", "Deep"), "Tiny deep section."),
        sec(("B",), words(30)),  # not a child or sibling of ("A", "Deep")
        sec(("B", "Child"), words(175)),  # child, but the merge would exceed max_words
    )
    passages = split_article(article)
    assert [p.anchor for p in passages] == ["deep", "b", "child"]


def test_sections_of_min_words_or_more_are_not_merged():
    article = make_article(sec(("A",), words(40)), sec(("B",), words(10)))
    assert [p.anchor for p in split_article(article, min_words=40)] == ["a", "b"]


def test_empty_sections_give_no_passages():
    article = make_article(sec(("A",), words(50)), sec(("B",), "  \n\n "), sec(("C",), words(50)))
    passages = split_article(article)
    assert [p.anchor for p in passages] == ["a", "c"]
    assert all(p.text.strip() for p in passages)


def test_duplicate_anchors_get_unique_ids():
    article = make_article(
        sec(("Steps",), words(100), anchor="steps"),
        sec(("Steps",), words(300), anchor="steps"),
    )
    ids = [p.passage_id for p in split_article(article)]
    assert len(ids) == len(set(ids)) == 3
    assert ids[0] == "Outlook/test#steps"


def test_split_is_deterministic():
    article = make_article(sec((), "Intro."), sec(("A",), sentences(20, 17)), sec(("A", "B"), words(12)))
    assert split_article(article) == split_article(article)


def test_fixture_articles_split_within_bounds():
    for path in discover(CONTENT):
        article, _ = parse_article(path, CONTENT)
        passages = split_article(article)
        ids = [p.passage_id for p in passages]
        assert passages and len(ids) == len(set(ids)), path
        assert all(0 < count(p.text) <= 180 for p in passages)
        assert all(p.passage_id.startswith(f"{article.article_id}#") for p in passages)
        assert {p.anchor for p in passages} <= {s.anchor for s in article.sections}
