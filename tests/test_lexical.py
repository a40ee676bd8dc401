"""Lexical arm: term extraction, typed queries, BM25 and exact-code search on a real index version."""
import numpy as np
import pytest

from kb.index import ArticleRecord, PassageRecord, PhraseQuery, open_backend
from kb.index.faiss_sqlite.fts import match_expression, phrase_expression
from search.lexical import RARE_CODE_PASSAGES, code_query, code_weight, extract_terms, search_codes, search_lexical


def version(index_dir, rows):
    """An index version of one passage per (title, heading, body), key = position."""
    backend = open_backend(index_dir)
    articles = [ArticleRecord(f"a{i}", f"a{i}.md", title) for i, (title, _, _) in enumerate(rows)]
    passages = [PassageRecord(f"a{i}#", f"a{i}", (heading,) if heading else (), "", body)
                for i, (_, heading, body) in enumerate(rows)]
    vectors = np.eye(4, dtype=np.float32)[np.arange(len(rows)) % 4]
    backend.write(backend.new_name(), articles, passages, vectors, {"model": "test/tiny", "dim": 4})
    return backend.open()


@pytest.fixture
def db(tmp_path):
    return version(tmp_path, [
        ("Outlook password prompt", "Resolution", "Outlook keeps prompting for a password after the update."),
        ("Error 0x8004010F", "Symptoms", "Send/receive fails with error 0x8004010F in Outlook."),
        ("NDR 5.7.124", "Cause", "Delivery failed with 550 5.7.124 because the sender is not allowed."),
        ("Teams camera", "Solusi", "Kamera Teams tidak berfungsi setelah pembaruan driver.")])


def test_terms_drop_stop_words_in_both_languages():
    assert extract_terms("Hi, my Outlook keeps asking for the password") == ["outlook", "keeps", "asking", "password"]
    assert extract_terms("saya tidak bisa membuka kamera di Teams") == ["membuka", "kamera", "teams"]


def test_hostile_text_is_quoted_not_parsed(db):
    text = 'foo" OR bar* NEAR(x) title:y outlook'
    assert match_expression(extract_terms(text)) == '"foo" OR "bar" OR "near" OR "title" OR "outlook"'
    assert 0 in search_lexical(db, text, 10)  # FTS5 syntax in the text is searched as words, not parsed


def test_bm25_ranks_matching_passage_first(db):
    scores = search_lexical(db, "outlook password prompt", 10)
    assert max(scores, key=scores.get) == 0 and all(s > 0 for s in scores.values())


def test_stemming_matches_word_forms(db):
    assert 0 in search_lexical(db, "prompts", 10)


def test_query_of_only_stop_words_finds_nothing(db):
    assert search_lexical(db, "the and of", 10) == {}


def test_exact_codes_match_as_phrases(db):
    assert search_codes(db, ["5.7.124"]) == {2: 1}
    assert search_codes(db, ["0x8004010F"]) == {1: 1}
    assert search_codes(db, ["5.7.1"]) == {}
    assert code_query("5.7.124") == PhraseQuery((("5", "7", "124"),))
    assert phrase_expression(code_query("5.7.124")) == '"5 7 124"'


def test_error_numbers_match_with_or_without_the_word_code(tmp_path):
    conn = version(tmp_path, [
        ("Install fails", "", "Setup stops with error code 30088-4 and rolls back."),
        ("Sign-in", "", "You receive error 30088-4 when you sign in."),
        ("Other", "", "Error handling in code 30088 of the sample."),
        ("Other", "", "The 30088-4 value is unrelated to any error in this sentence at all."),
    ])
    assert phrase_expression(code_query("error 30088")) == 'NEAR("error" "30088", 2)'
    assert search_codes(conn, ["error 30088-4"]) == {0: 1, 1: 1}
    assert search_codes(conn, ["error 30088"]) == {0: 1, 1: 1}  # not key 2: three words between "error" and 30088


def test_common_codes_weigh_less_than_rare_ones():
    assert code_weight(1, 10_000) == code_weight(RARE_CODE_PASSAGES, 10_000) == 1.0
    assert 0 < code_weight(500, 10_000) < code_weight(50, 10_000) < 1.0
    assert code_weight(10_000, 10_000) == 0.0
    assert code_weight(3, 3) == 1.0  # a tiny knowledge base: every match counts


def test_common_terms_are_pruned_but_some_always_remain():
    from search.lexical import prune_terms
    df = {"outlook": 9000, "error": 7000, "0x8004010f": 3, "profile": 400}
    assert prune_terms(["outlook", "error", "0x8004010f", "profile"], df, 10000) == ["0x8004010f", "profile"]
    assert prune_terms(["outlook", "error"], df, 10000, min_terms=3) == ["outlook", "error"]
    assert prune_terms(["outlook", "error", "profile"], df, 10000, max_terms=1) == ["profile"]  # the studies' cap
    assert prune_terms(["a1", "b2"], {}, 0) == ["a1", "b2"]


def test_words_no_passage_has_do_not_crowd_out_the_rest():
    """An Indonesian ticket's 40 own words, none in the knowledge base, then its English rendering: every word of
    the rendering stays in the query (a cap of the 32 rarest kept only the ticket's own words)."""
    from search.lexical import prune_terms
    own = [f"kata{n}" for n in range(40)]
    rendering = ["outlook", "password", "prompt", "profile"]
    df = {"outlook": 900, "password": 300, "prompt": 200, "profile": 400}
    assert prune_terms(own + rendering, df, 10000)[-4:] == rendering


def test_small_knowledge_bases_keep_every_term():
    from search.lexical import prune_terms
    df = {"gmail": 300, "filter": 20}
    assert prune_terms(["gmail", "filter"], df, 700) == ["gmail", "filter"]
