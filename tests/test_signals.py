"""Retrieval signals over the real fixture index: candidates, their union's scores, the combiner, the language."""
import dataclasses
import os
import signal
import threading
import time
from concurrent import futures
from types import SimpleNamespace

import pytest

from search.fusion import FusionWeights, LinearCombiner, fuse_scores
from search.searcher import Query
from search.signals import AHEAD, SIGNALS, Candidates, DenseSignal, LanguageSignal, LexicalSignal, Probe, collect


def test_every_candidate_of_any_signal_gets_every_scoring_signal(searcher):
    query = Query(dense="outlook error 0x8004010F", lexical="outlook error 0x8004010F", codes=("0x8004010F",),
                  prefer="en")
    found = searcher.collect(query)
    assert set(found.signals) == {"dense", "lexical", "codes", "language", "title"}
    assert found.get("codes") and set(found.get("codes")) <= set(found.get("dense"))
    assert set(found.get("lexical")) <= set(found.get("dense"))  # the exact cosine of every lexical candidate
    assert found.rows == set(found.get("dense"))
    english = {r for r in found.rows if searcher.row_language[r] == "en"}
    assert set(found.get("language")) == english and english != found.rows  # the fixture mixes en and id


def test_the_title_signal_is_the_cosine_of_the_query_and_each_candidates_article_title(searcher):
    ids, matrix = searcher.version.title_vectors()
    title_of = dict(zip(ids, matrix))
    article = next(a for a in searcher.articles.values() if a["language"] == "en")
    query = Query(dense=article["title"], lexical=article["title"])
    found = searcher.collect(query)
    titles = found.get("title")
    assert set(titles) == found.rows  # every candidate's article has a title vector in the fixture
    vector = searcher.encoder.encode_queries([query.dense])[0]
    for row, cosine in titles.items():
        assert cosine == pytest.approx(float(title_of[searcher.row_article[row]] @ vector), abs=1e-5)
    best = max(titles, key=titles.get)  # the query is the article's title: its passages match it best
    assert titles[best] > 0.9 and {searcher.articles[searcher.row_article[r]]["title"] for r in titles
                                   if titles[r] == titles[best]} == {article["title"]}


def test_without_title_vectors_the_title_signal_scores_nothing(searcher):
    bare = SimpleNamespace(**{**vars(searcher), "title_matrix": None, "row_title": None})
    found = collect(Probe(bare, Query("password reset", "password reset"), None, 10))
    assert found.get("title") == {} and found.get("dense")


def test_lexical_only_embeds_nothing(searcher):
    class NoEncoder:
        def encode_queries(self, texts):
            raise AssertionError("lexical search must not embed")

    probe = Probe(SimpleNamespace(**{**vars(searcher), "encoder": NoEncoder()}), Query("password", "password"),
                  None, 10)
    found = collect(probe, lexical_only=True)
    assert found.get("lexical") and "dense" not in found.signals


class Overlap:
    """An encoder that waits (up to 10 s) for the lexical signal to start before embedding, and a lexical signal that
    says when it starts: both finish only if they run at the same time."""

    def __init__(self, encoder):
        self.encoder, self.lexical_started, self.encoder_thread = encoder, threading.Event(), None

    def encode_queries(self, texts):
        self.encoder_thread = threading.current_thread()
        assert self.lexical_started.wait(10), "the lexical signal did not run while the query was embedded"
        return self.encoder.encode_queries(texts)

    def signals(self, fail: bool = False):
        started = self.lexical_started

        class Lexical(LexicalSignal):
            def find(self, probe):
                started.set()
                if fail:
                    raise RuntimeError("lexical failed")
                return super().find(probe)

        return tuple(Lexical() if s.name == "lexical" else s for s in SIGNALS)


def test_the_query_is_embedded_while_the_lexical_signal_runs(searcher):
    overlap = Overlap(searcher.encoder)
    probe = Probe(SimpleNamespace(**{**vars(searcher), "encoder": overlap}), Query("password", "password"), None, 10)
    found = collect(probe, overlap.signals())
    assert overlap.encoder_thread is not threading.current_thread()
    assert found.signals == searcher.collect(Query("password", "password"), limit=10).signals  # same scores as one thread


def test_while_another_query_is_collected_the_signals_run_in_the_callers_thread(searcher):
    class Recording:
        thread = None

        def encode_queries(self, texts):
            Recording.thread = threading.current_thread()
            return searcher.encoder.encode_queries(texts)

    probe = Probe(SimpleNamespace(**{**vars(searcher), "encoder": Recording()}), Query("password", "password"),
                  None, 10)
    with AHEAD.turn() as pool:  # another request's query
        assert pool is not None
        found = collect(probe)
    assert Recording.thread is threading.current_thread() and found.get("dense") and found.get("lexical")
    collect(Probe(probe.searcher, Query("outlook", "outlook"), None, 10))
    assert Recording.thread is not threading.current_thread()  # alone again: the worker embeds


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_still_runs_the_dense_signal_ahead(searcher):
    """The parent's worker thread does not exist in a forked child: the child gets a pool of its own (without it, its
    first query would wait forever for a thread its pool believes idle)."""
    collect(Probe(searcher, Query("password", "password"), None, 10))  # the parent's worker thread is started
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if a query is answered within 30 s
        outcome = futures.ThreadPoolExecutor(1).submit(collect, Probe(searcher, Query("outlook", "outlook"), None, 10))
        try:
            os._exit(0 if outcome.result(timeout=30).get("dense") else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    deadline = time.monotonic() + 60  # a child stuck anywhere is killed, never waited for without end
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not answer within 60 s")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_a_failing_signal_waits_for_the_dense_search_before_raising(searcher):
    overlap, finished = Overlap(searcher.encoder), []

    class Dense(DenseSignal):
        def find(self, probe):
            time.sleep(0.2)  # still searching when the lexical signal fails
            found = super().find(probe)
            finished.append(True)
            return found

    signals = tuple(Dense() if s.name == "dense" else s for s in overlap.signals(fail=True))
    probe = Probe(SimpleNamespace(**{**vars(searcher), "encoder": overlap}), Query("password", "password"), None, 10)
    with pytest.raises(RuntimeError, match="lexical failed"):
        collect(probe, signals)
    assert finished == [True]  # the caller could release the version only once the search was done


def test_linear_combiner_is_the_fusion_of_the_arms(searcher):
    found = searcher.collect(Query(dense="teams camera", lexical="teams camera"))
    weights = FusionWeights(lexical=0.07, code=0.5)
    combined = LinearCombiner({"dense": 1.0, "lexical": 0.07, "codes": 0.5}).combine(found.signals)
    assert combined == fuse_scores(found.get("dense"), found.get("lexical"), found.get("codes"), weights)


def test_an_ablation_drops_one_signal_and_keeps_the_rows(searcher):
    found = searcher.collect(Query(dense="send receive 0x8004010F", lexical="send receive 0x8004010F",
                                   codes=("0x8004010F",)))
    without = found.without("dense")
    assert "dense" not in without.signals and without.rows == set(found.get("lexical")) | set(found.get("codes"))
    scores = LinearCombiner({"dense": 1.0, "lexical": 0.07, "codes": 0.5}).combine(without.signals)
    assert set(scores) == without.rows


def test_language_signal_is_silent_on_a_knowledge_base_in_one_language():
    one_language = SimpleNamespace(mixed_languages=False, row_language=["en", "en"])
    probe = SimpleNamespace(query=Query("q", "q", prefer="en"), searcher=one_language)
    assert LanguageSignal().score(probe, [0, 1]) == {}
    mixed = SimpleNamespace(mixed_languages=True, row_language=["en", "id"])
    assert LanguageSignal().score(SimpleNamespace(query=Query("q", "q", prefer="en"), searcher=mixed), [0, 1]) == {0: 1.0}
    assert LanguageSignal().score(SimpleNamespace(query=Query("q", "q"), searcher=mixed), [0, 1]) == {}


def test_english_agents_get_english_articles_before_indonesian_twins(searcher):
    """An English query over a knowledge base with an Indonesian twin: the twin is second without the preference
    and falls behind English articles with it; Indonesian agents (KB_LANGUAGE_WEIGHT_ID 0) see no change."""
    def top(prefer, weight):
        searcher.settings = dataclasses.replace(original, language_weight=weight)
        return [r["id"] for r in searcher.search("outlook keeps asking for password", 3, prefer=prefer)["results"]]

    original = searcher.settings
    try:
        assert original.language_weight > 0 and original.language_weight_id == 0
        assert top("en", 0.0)[:2] == ["Outlook/outlook-password-prompt", "id/reset-kata-sandi-outlook"]
        with_preference = top("en", original.language_weight)
        assert with_preference[0] == "Outlook/outlook-password-prompt"
        assert "id/reset-kata-sandi-outlook" not in with_preference[:2]
        assert top("id", original.language_weight) == top("en", 0.0)
    finally:
        searcher.settings = original


def test_candidates_without_lists_other_signals():
    found = Candidates({"dense": {1: 0.5}, "lexical": {2: 3.0}, "codes": {2: 1.0}})
    assert found.without("codes", "lexical").signals == {"dense": {1: 0.5}}
    assert found.rows == {1, 2}
