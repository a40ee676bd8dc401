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


# ---- the postings budget of large knowledge bases (KB_LEXICAL_BUDGET, KB_LEXICAL_BUDGET_ABOVE) ----
BUDGET_DF = {"outlook": 2400, "mailbox": 1500, "profile": 900, "prompt": 300, "0x8004010f": 3, "password": 1200}
TICKET = ["outlook", "kata", "mailbox", "0x8004010f", "profile", "prompt", "password"]  # "kata": no passage has it


def test_budget_keeps_the_rarest_words_within_a_share_of_the_passages():
    from search.lexical import TermBudget, spend_budget
    budget = TermBudget(share=0.05, above=10_000)  # 0.05 x 24,000 passages = 1,200 postings
    kept = spend_budget(TICKET, BUDGET_DF, 24_000, budget)
    assert kept == ["kata", "0x8004010f", "profile", "prompt"]  # 3 + 300 + 900 = 1,203 > 1,200: the 3 rarest always
    assert spend_budget(TICKET, BUDGET_DF, 24_000, TermBudget(share=0.11, above=10_000)) == \
        ["kata", "0x8004010f", "profile", "prompt", "password"]  # 2,403 postings of 2,640; mailbox would make 3,903
    assert sum(BUDGET_DF.get(t, 0) for t in spend_budget(TICKET, BUDGET_DF, 24_000, TermBudget(0.2, 0))) <= 0.2 * 24_000


def test_budget_acts_only_above_its_size_and_is_the_same_rule_at_every_size():
    from search.lexical import TermBudget, spend_budget
    budget = TermBudget(share=0.05, above=30_000)
    assert spend_budget(TICKET, BUDGET_DF, 24_000, budget) == TICKET  # below the size: every word, as without it
    assert spend_budget(TICKET, BUDGET_DF, 24_000, None) == TICKET
    assert spend_budget(TICKET, BUDGET_DF, 24_000, TermBudget(share=0.0, above=0)) == TICKET  # share 0: no budget
    larger = {t: 16 * n for t, n in BUDGET_DF.items()}  # the same words' shares on a knowledge base 16 times larger
    assert spend_budget(TICKET, larger, 16 * 24_000, budget) == spend_budget(TICKET, BUDGET_DF, 24_000,
                                                                              TermBudget(share=0.05, above=0))


def test_budget_never_empties_a_query_and_spends_nothing_on_unknown_words():
    from search.lexical import TermBudget, spend_budget
    tight = TermBudget(share=0.0001, above=0)
    assert spend_budget(["outlook", "mailbox"], BUDGET_DF, 24_000, tight) == ["outlook", "mailbox"]
    assert spend_budget(["outlook"], BUDGET_DF, 24_000, TermBudget(0.0001, 0, min_terms=0)) == ["outlook"]
    own = [f"kata{n}" for n in range(40)]  # an Indonesian ticket's own words, then its English rendering
    kept = spend_budget(own + ["outlook", "profile", "prompt", "0x8004010f"], BUDGET_DF, 24_000, tight)
    assert kept == own + ["profile", "prompt", "0x8004010f"]  # the rendering's 3 rarest, the code among them


def test_budget_reaches_the_index_query(db):
    from search.lexical import TermBudget, term_query
    df = {"outlook": 3, "password": 1, "prompt": 1, "keeps": 1}
    text = "Outlook keeps prompting: password prompt"
    assert term_query(text, df=df, total=4).terms == ("outlook", "keeps", "prompting", "password", "prompt")
    assert term_query(text, df=df, total=4, budget=TermBudget(0.5, 0)).terms == \
        ("keeps", "prompting", "password", "prompt")  # outlook (3 of 4 passages) spent the budget of 2
    assert search_lexical(db, text, 10, df=df, total=4, budget=TermBudget(0.5, 0)) == \
        search_lexical(db, "keeps prompting password prompt", 10)
