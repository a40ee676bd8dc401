"""The index backend contract: every backend (kb.index.BACKENDS) passes the same cases, through the interface only."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading

import numpy as np
import pytest

from kb.errors import Conflict, IndexMismatch, IndexNotFound
from kb.index import (BACKENDS, ArticleRecord, IndexBackend, PassageRecord, PhraseQuery, Selection, TermQuery,
                      open_backend)

MODEL = "test/contract"
DIM = 8

ARTICLES = [
    ArticleRecord("outlook/password", "outlook/password.md", "Outlook keeps asking for a password",
                  summary="Credential prompts", product="Outlook", tags=("auth", "kata sandi"), language="en",
                  audience="public", owner="mail-team", reviewed="2026-01-02", body="# Outlook\n\nBody text.",
                  includes=("includes/note.md",), extra={"ms.topic": "troubleshooting"}, source_hash="h1"),
    ArticleRecord("outlook/ndr", "outlook/ndr.md", "NDR 5.7.124 when sending", product="Outlook",
                  audience="internal", body="NDR body", source_hash="h2"),
    ArticleRecord("teams/kamera", "teams/kamera.md", "Kamera Teams tidak berfungsi", product="Teams",
                  language="id", body="Isi", source_hash="h3"),
    ArticleRecord("teams/error", "teams/error.md", "Teams install error", product="Teams", body="b", source_hash="h4"),
]
PASSAGES = [
    PassageRecord("outlook/password#", "outlook/password", (), "", "Outlook prompts for a password after the update.",
                  "t0"),
    PassageRecord("outlook/password#fix", "outlook/password", ("Resolution", "Method 1"), "fix",
                  "Clear the cached credentials in Credential Manager.", "t1"),
    PassageRecord("outlook/ndr#cause", "outlook/ndr", ("Cause",), "cause",
                  "Delivery failed with 550 5.7.124 because the sender is not allowed.", "t2"),
    PassageRecord("teams/kamera#", "teams/kamera", ("Solusi",), "solusi",
                  "Kamera Teams tidak berfungsi setelah pembaruan driver.", "t3"),
    PassageRecord("teams/error#", "teams/error", (), "", "Setup stops with error code 30088-4 and rolls back.", "t4"),
    PassageRecord("teams/error#other", "teams/error", ("Other",), "other",
                  "Error handling in code 30088 of the sample password.", "t5"),
]


def unit_vectors(n: int, seed: int = 7) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


VECTORS = unit_vectors(len(PASSAGES))


def needs_engine(kind: str) -> None:
    """Milvus is an optional extra (pymilvus + milvus-lite): CI installs it and must run its cases; elsewhere they
    are skipped, saying why."""
    if kind != "milvus" or all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite")):
        return
    reason = "the milvus extra (pymilvus, milvus-lite) is not installed: pip install -e '.[test,milvus]'"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Milvus backend's contract: {reason}")
    pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> IndexBackend:
    """A fresh, empty index location of each backend (Milvus: a milvus-lite file in that folder)."""
    needs_engine(request.param)
    return open_backend(tmp_path / "index", request.param)


@pytest.fixture
def written(backend):
    """The backend with one version of the cases' articles, and that version open."""
    name = backend.new_name()
    backend.write(name, ARTICLES, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM, "content_hash": "c"})
    reader = backend.open(model_id=MODEL)
    yield backend, name, reader
    reader.close()


def by_passage_id(reader) -> dict[str, int]:
    """Passage id -> key: the keys are the backend's own; the cases speak of passages by their ids."""
    return {p.passage_id: key for key, p in reader.passages(range(reader.size)).items()}


# ---- versions ---------------------------------------------------------------------------------------------------
def test_an_empty_location_has_no_version(backend):
    assert backend.current() is None and backend.list() == []
    with pytest.raises(IndexNotFound):
        backend.open(model_id=MODEL)


def test_written_version_is_current_and_listed(written):
    backend, name, reader = written
    assert backend.current() == name and backend.list() == [name]
    assert reader.build_id == name and reader.size == len(PASSAGES) and reader.dim == DIM
    assert reader.manifest["counts"] == {"articles": len(ARTICLES), "passages": len(PASSAGES)}
    assert reader.manifest["model"] == MODEL and reader.manifest["content_hash"] == "c"
    assert backend.manifest(name)["build_id"] == name


def test_another_model_is_refused_unless_any_is_asked_for(written):
    backend, name, _ = written
    with pytest.raises(IndexMismatch, match=MODEL):
        backend.open(name, model_id="other/model")
    with backend.open(name, model_id=None) as any_model:
        assert any_model.size == len(PASSAGES)


def test_versions_switch_by_name_and_prune_keeps_current_and_leased(written):
    backend, first, reader = written
    second = backend.new_name()
    backend.write(second, ARTICLES[:1], PASSAGES[:2], VECTORS[:2], {"model": MODEL, "dim": DIM})
    assert second > first and backend.current() == second and backend.list() == [first, second]
    backend.switch(first)
    assert backend.current() == first
    backend.switch(second)
    assert backend.prune(1) == []  # `first` is open (leased) here
    reader.close()
    assert backend.prune(1) == [first] and backend.list() == [second]


def test_one_build_at_a_time(backend):
    with backend.lock():
        with pytest.raises(Conflict):
            with backend.lock():
                pass


def test_users_keep_a_retired_version_open_until_they_leave(written):
    _, _, reader = written
    assert reader.acquire()
    reader.retire()
    assert not reader.closed and reader.passages([0])  # the request on it finishes
    reader.release()
    assert reader.closed and not reader.acquire()


def test_verify_reads_the_data_again(written):
    _, _, reader = written
    assert reader.verify() in (True, False)  # True: checksums that matched; False: the backend keeps none
    assert reader.verify() == reader.sealed


# ---- records ----------------------------------------------------------------------------------------------------
def test_articles_round_trip_typed(written):
    _, _, reader = written
    listed = {a.id: a for a in reader.articles()}
    assert set(listed) == {a.id for a in ARTICLES}
    assert all(a.body is None for a in listed.values())  # listings leave bodies out
    full = reader.article("outlook/password")
    assert full == ARTICLES[0] and full.extra == {"ms.topic": "troubleshooting"} and full.tags == ("auth", "kata sandi")
    assert reader.article("no/such") is None
    assert [a.id for a in reader.articles(["teams/error", "no/such"], body=True)] == ["teams/error"]
    assert reader.articles(["teams/error"], body=True)[0].body == "b"


def titled(articles, seed: int = 3) -> list[ArticleRecord]:
    """The articles with title embeddings (random unit vectors of DIM), as a build writes them."""
    vectors = unit_vectors(len(articles), seed)
    return [dataclasses.replace(a, title_vector=v.tobytes()) for a, v in zip(articles, vectors)]


def title_map(reader) -> dict[str, list[float]]:
    ids, matrix = reader.title_vectors()
    assert matrix.dtype == np.float32 and matrix.shape == (len(ids), DIM)
    return {i: v.round(6).tolist() for i, v in zip(ids, matrix)}


def test_title_vectors_round_trip_and_follow_a_base(backend):
    first = titled(ARTICLES)
    backend.write(backend.new_name(), first, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM})
    expected = {a.id: np.frombuffer(a.title_vector, dtype=np.float32).round(6).tolist() for a in first}
    with backend.open(model_id=MODEL) as reader:
        assert title_map(reader) == expected
    changed, added = titled([ArticleRecord("outlook/password", "outlook/password.md", "Outlook password", body="new",
                                           source_hash="h9"),
                             ArticleRecord("teams/new", "teams/new.md", "New", body="x", source_hash="h10")], seed=5)
    untitled = ArticleRecord("teams/bare", "teams/bare.md", "", body="y", source_hash="h11")
    passages = [PassageRecord("outlook/password#", "outlook/password", (), "", "A new password text.", "n0"),
                PassageRecord("teams/new#", "teams/new", (), "", "Brand new Teams passage.", "n1"),
                PassageRecord("teams/bare#", "teams/bare", (), "", "No title here.", "n2")]
    with backend.open(model_id=MODEL) as base:
        backend.write(backend.new_name(), [changed, added, untitled], passages, unit_vectors(3, seed=11),
                      {"model": MODEL, "dim": DIM}, base=base, remove={"outlook/password", "outlook/ndr"})
    del expected["outlook/ndr"]
    for a in (changed, added):
        expected[a.id] = np.frombuffer(a.title_vector, dtype=np.float32).round(6).tolist()
    with backend.open(model_id=MODEL) as patched:
        assert title_map(patched) == expected  # kept, replaced, removed, added; none for an article without one


def test_a_version_written_without_title_vectors_has_none(written):
    _, _, reader = written
    assert reader.title_vectors() is None


def test_a_title_vector_of_another_size_is_refused(backend):
    wrong = dataclasses.replace(ARTICLES[0], title_vector=np.ones(DIM + 1, dtype=np.float32).tobytes())
    with pytest.raises(ValueError, match="title vector"):
        backend.write(backend.new_name(), [wrong], PASSAGES[:2], VECTORS[:2], {"model": MODEL, "dim": DIM})
    assert backend.current() is None


def test_passages_and_vectors_by_key(written):
    _, _, reader = written
    keys = by_passage_id(reader)
    assert sorted(keys.values()) == list(range(len(PASSAGES)))  # keys are 0 .. size - 1
    found = reader.passages(list(keys.values()))
    assert {found[k] for k in keys.values()} == set(PASSAGES)
    owners = reader.passage_articles()
    for p, vector in zip(PASSAGES, VECTORS):
        key = keys[p.passage_id]
        assert owners[key] == p.article_id
        assert np.allclose(reader.vectors([key])[0], vector, atol=1e-6)
    assert reader.vectors().shape == (len(PASSAGES), DIM)
    assert reader.passages([]) == {} and reader.passages([len(PASSAGES) + 5]) == {}


def test_term_statistics_count_passages_per_word(written):
    _, _, reader = written
    df = reader.term_df()
    assert df["outlook"] == 2  # the title counts for each of its article's passages
    assert df["password"] == 3 and df["30088"] == 2 and df["kamera"] == 1
    assert "credentials" in df and "Outlook" not in df  # lower-case words


# ---- search -----------------------------------------------------------------------------------------------------
def test_dense_search_is_exact_inner_product(written):
    _, _, reader = written
    keys = by_passage_id(reader)
    query = VECTORS[2] + 0.1 * VECTORS[4]
    found = reader.dense_search(query, 3)
    expected = sorted(((float(VECTORS[i] @ query), p.passage_id) for i, p in enumerate(PASSAGES)), reverse=True)[:3]
    assert list(found) == [keys[pid] for _, pid in expected]
    assert [round(s, 5) for s in found.values()] == [round(s, 5) for s, _ in expected]
    assert len(reader.dense_search(query, 100)) == len(PASSAGES)


@pytest.mark.parametrize("selection, articles", [
    (Selection(product="outlook"), {"outlook/password", "outlook/ndr"}),  # case-insensitive
    (Selection(language="ID"), {"teams/kamera"}),
    (Selection(audience="internal"), {"outlook/ndr"}),
    (Selection(exclude_audience="internal"), {"outlook/password", "teams/kamera", "teams/error"}),
    (Selection(product="Outlook", exclude_audience="internal"), {"outlook/password"}),
    (Selection(article_ids=frozenset({"teams/error", "no/such"})), {"teams/error"}),
    (Selection(product="Word"), set()),
    (Selection(), {a.id for a in ARTICLES}),
])
def test_every_search_keeps_to_the_selection(written, selection, articles):
    _, _, reader = written
    owners = reader.passage_articles()
    dense = reader.dense_search(VECTORS[0], 10, selection)
    assert {owners[k] for k in dense} == articles
    lexical = reader.lexical_search(TermQuery(("password", "teams", "ndr", "30088")), 10, selection)
    assert {owners[k] for k in lexical} <= articles
    hits = reader.phrase_search(PhraseQuery((("30088",),)), 10, selection)
    assert hits.found == 2 and {owners[k] for k in hits.keys} == articles & {"teams/error"}


def test_lexical_search_ranks_by_bm25_with_field_weights(written):
    _, _, reader = written
    keys = by_passage_id(reader)
    found = reader.lexical_search(TermQuery(("password",)), 10)
    assert set(found) == {keys["outlook/password#"], keys["outlook/password#fix"], keys["teams/error#other"]}
    assert list(found.values()) == sorted(found.values(), reverse=True) and all(s > 0 for s in found.values())
    assert next(iter(found)) != keys["teams/error#other"]  # the word in the title (weight 2) ranks first
    assert list(reader.lexical_search(TermQuery(("password",)), 1)) == [next(iter(found))]
    assert reader.lexical_search(TermQuery(("prompting",)), 10) == {keys["outlook/password#"]: pytest.approx(
        reader.lexical_search(TermQuery(("prompts",)), 10)[keys["outlook/password#"]])}  # stemmed alike
    assert reader.lexical_search(TermQuery(()), 10) == {}
    assert reader.lexical_search(TermQuery(("nowhere",)), 10) == {}


def test_lexical_scores_are_fts5s_bm25_on_every_backend(backend, tmp_path):
    """Whatever the engine, a lexical search scores as SQLite FTS5's bm25() with the column weights: the same passages,
    the same scores (one length over all columns, weighted counts, stems, a word given twice counted twice, a word
    FTS5 reads as a phrase: "clear_cache" is the tokens clear, cach next to each other)."""
    rng = np.random.default_rng(5)
    words = ["password", "passwords", "prompt", "prompting", "outlook", "teams", "sign", "signing", "error", "sync",
             "kata", "sandi", "mailbox", "full", "license", "update", "driver", "camera", "cache", "clear",
             "clear_cache", "sign_in"]
    articles, passages = [], []
    for a in range(12):
        aid = f"area/article-{a}"
        articles.append(ArticleRecord(aid, aid + ".md", " ".join(rng.choice(words, 3)), language=("en", "id")[a % 2],
                                      source_hash=f"h{a}"))
        for n in range(int(rng.integers(1, 6))):
            body = " ".join(rng.choice(words, int(rng.integers(3, 60))))
            passages.append(PassageRecord(f"{aid}#{n}", aid, (" ".join(rng.choice(words, 2)),) if n else (), str(n),
                                          body, f"t{a}.{n}"))
    vectors = unit_vectors(len(passages), seed=3)
    reference = open_backend(tmp_path / "fts5", "faiss")
    for each in (reference, backend):
        each.write(each.new_name(), articles, passages, vectors, {"model": MODEL, "dim": DIM})
    queries = [("password",), ("passwords", "prompt"), ("sign", "signing", "error"), ("kata", "sandi", "sync"),
               ("clear", "cache", "nowhere"), ("outlook", "outlook", "full"), ("clear_cache",),
               ("clear_cache", "sync", "clear_cache", "sign_in"), ("cache_clear", "nowhere_else"), tuple(words)]
    with reference.open(model_id=MODEL) as fts5, backend.open(model_id=MODEL) as reader:
        ids, own = ({k: p.passage_id for k, p in r.passages(range(r.size)).items()} for r in (fts5, reader))
        for terms in queries:
            for selection, limit in ((None, 100), (Selection(language="id"), 100), (None, 3)):
                expected = {ids[k]: s for k, s in fts5.lexical_search(TermQuery(terms), limit, selection).items()}
                found = {own[k]: s for k, s in reader.lexical_search(TermQuery(terms), limit, selection).items()}
                assert found == pytest.approx(expected, rel=1e-5), (terms, selection, limit)
                assert expected or terms == ("cache_clear", "nowhere_else")
        if reader.manifest.get("backend") == "milvus":  # its weights are written with the version
            with pytest.raises(ValueError, match="title, headings and body"):
                reader.lexical_search(TermQuery(("password",), (1.0, 1.0, 1.0)), 10)


def test_query_words_are_words_never_syntax(written):
    _, _, reader = written
    for hostile in ('pass"word', "NEAR(x", "title:outlook", "*", "AND", "-ndr"):
        reader.lexical_search(TermQuery((hostile,)), 10)  # no error: searched as a word
        reader.phrase_search(PhraseQuery(((hostile,),)), 10)


def test_phrase_search_finds_exact_phrases_and_near_ones(written):
    _, _, reader = written
    keys = by_passage_id(reader)
    assert reader.phrase_search(PhraseQuery((("5", "7", "124"),)), 10).keys == [keys["outlook/ndr#cause"]]
    assert reader.phrase_search(PhraseQuery((("5", "7", "1"),)), 10).keys == []
    near = reader.phrase_search(PhraseQuery((("error",), ("30088",)), near=2), 10)
    assert near.keys == [keys["teams/error#"]] and near.found == 1  # not "Error handling in code 30088"
    assert len(reader.phrase_search(PhraseQuery((("30088",),)), 1).keys) == 1  # at most `limit`


def test_searches_from_many_threads_agree(written):
    _, _, reader = written
    expected = reader.lexical_search(TermQuery(("password", "teams")), 10), reader.dense_search(VECTORS[1], 3)
    results, errors = [], []

    def run():
        try:
            for _ in range(20):
                results.append((reader.lexical_search(TermQuery(("password", "teams")), 10),
                                reader.dense_search(VECTORS[1], 3)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 80 and all(r == expected for r in results)


# ---- patching a version -----------------------------------------------------------------------------------------
def test_a_version_written_on_a_base_equals_one_written_whole(backend, tmp_path):
    """base minus `remove` plus new records: the same articles, passages, vectors, searches as a full write."""
    backend.write(backend.new_name(), ARTICLES, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM})
    changed = ArticleRecord("outlook/password", "outlook/password.md", "Outlook password", body="new",
                            source_hash="h9")
    new_passages = [PassageRecord("outlook/password#", "outlook/password", (), "", "A new password text.", "n0"),
                    PassageRecord("teams/new#", "teams/new", (), "", "Brand new Teams passage.", "n1")]
    added = ArticleRecord("teams/new", "teams/new.md", "New", product="Teams", body="x", source_hash="h10")
    new_vectors = unit_vectors(2, seed=11)
    with backend.open(model_id=MODEL) as base:
        backend.write(backend.new_name(), [changed, added], new_passages, new_vectors, {"model": MODEL, "dim": DIM},
                      base=base, remove={"outlook/password", "outlook/ndr"})
    whole = open_backend(tmp_path / "whole", getattr(backend, "kind", "faiss"))
    kept = [i for i, p in enumerate(PASSAGES) if p.article_id not in ("outlook/password", "outlook/ndr")]
    whole.write(whole.new_name(), [a for a in ARTICLES if a.id.startswith("teams/")] + [changed, added],
                [PASSAGES[i] for i in kept] + new_passages, np.vstack([VECTORS[kept], new_vectors]),
                {"model": MODEL, "dim": DIM})

    def content(reader):
        ids = {k: p.passage_id for k, p in reader.passages(range(reader.size)).items()}
        return {"articles": sorted(reader.articles(body=True), key=lambda a: a.id),
                "passages": sorted(reader.passages(range(reader.size)).values(), key=lambda p: p.passage_id),
                "vectors": {ids[k]: reader.vectors([k])[0].round(5).tolist() for k in ids},
                "owners": sorted((ids[k], reader.passage_articles()[k]) for k in ids),
                "df": reader.term_df(), "size": reader.size,
                "bm25": {ids[k]: round(s, 6) for k, s in reader.lexical_search(TermQuery(("passage", "new")),
                                                                               10).items()},
                "dense": [ids[k] for k in reader.dense_search(new_vectors[1], 3)]}

    with backend.open(model_id=MODEL) as patched, whole.open(model_id=MODEL) as full:
        assert content(patched) == content(full)


def content(reader, vector) -> dict:
    """What a version holds and answers, by passage id: independent of the keys the backend gave."""
    ids = {k: p.passage_id for k, p in reader.passages(range(reader.size)).items()}
    return {"articles": sorted(reader.articles(body=True), key=lambda a: a.id),
            "passages": sorted(reader.passages(range(reader.size)).values(), key=lambda p: p.passage_id),
            "vectors": {ids[k]: reader.vectors([k])[0].round(5).tolist() for k in ids},
            "owners": sorted((ids[k], reader.passage_articles()[k]) for k in ids),
            "df": reader.term_df(), "size": reader.size, "counts": reader.manifest["counts"],
            "bm25": {ids[k]: round(s, 6) for k, s in reader.lexical_search(TermQuery(("password", "error")),
                                                                           10).items()},
            "dense": [ids[k] for k in reader.dense_search(vector, 3)]}


# ---- writing a version batch by batch ---------------------------------------------------------------------------
def test_a_version_written_in_batches_equals_one_written_whole(backend, tmp_path):
    """`writer`: batches cut anywhere (an article's passages in a later batch than the article) make the version
    that one `write` makes."""
    with backend.writer(backend.new_name(), DIM) as writer:
        writer.add(ARTICLES[:1], PASSAGES[:1], VECTORS[:1])
        writer.add(ARTICLES[1:3], PASSAGES[1:3], VECTORS[1:3])  # outlook/password's second passage comes late
        writer.add([], [], VECTORS[:0])
        writer.add(ARTICLES[3:], PASSAGES[3:], VECTORS[3:])
        writer.commit({"model": MODEL, "dim": DIM, "content_hash": "c"})
    whole = open_backend(tmp_path / "whole", getattr(backend, "kind", "faiss"))
    whole.write(whole.new_name(), ARTICLES, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM, "content_hash": "c"})
    with backend.open(model_id=MODEL) as batches, whole.open(model_id=MODEL) as full:
        assert content(batches, VECTORS[4]) == content(full, VECTORS[4])
        assert batches.manifest["counts"] == {"articles": 4, "passages": 6}


def test_a_writer_not_committed_leaves_no_version(backend):
    first = backend.new_name()
    backend.write(first, ARTICLES, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM})
    with pytest.raises(RuntimeError, match="stopped"):
        with backend.writer(backend.new_name(), DIM) as writer:
            writer.add(ARTICLES, PASSAGES, VECTORS)
            raise RuntimeError("stopped")
    writer = backend.writer(backend.new_name(), DIM)
    writer.add(ARTICLES[:1], PASSAGES[:2], VECTORS[:2])
    writer.abort()
    assert backend.current() == first and backend.list() == [first] and backend.remove_leftovers() == []
    with backend.open(model_id=MODEL) as reader:
        assert reader.size == len(PASSAGES)


def test_a_writer_on_a_base_takes_batches_too(backend, tmp_path):
    backend.write(backend.new_name(), ARTICLES, PASSAGES, VECTORS, {"model": MODEL, "dim": DIM})
    added = ArticleRecord("teams/new", "teams/new.md", "New password", product="Teams", body="x", source_hash="h9")
    new_passages = [PassageRecord(f"teams/new#{i}", "teams/new", (), "", f"New password text {i}.", f"n{i}")
                    for i in range(3)]
    new_vectors = unit_vectors(3, seed=5)
    with backend.open(model_id=MODEL) as base:
        with backend.writer(backend.new_name(), DIM, base=base, remove={"outlook/ndr"}) as writer:
            writer.add([added], new_passages[:1], new_vectors[:1])
            writer.add([], new_passages[1:], new_vectors[1:])
            writer.commit({"model": MODEL, "dim": DIM})
    whole = open_backend(tmp_path / "whole", getattr(backend, "kind", "faiss"))
    kept = [i for i, p in enumerate(PASSAGES) if p.article_id != "outlook/ndr"]
    whole.write(whole.new_name(), [a for a in ARTICLES if a.id != "outlook/ndr"] + [added],
                [PASSAGES[i] for i in kept] + new_passages, np.vstack([VECTORS[kept], new_vectors]),
                {"model": MODEL, "dim": DIM})
    with backend.open(model_id=MODEL) as patched, whole.open(model_id=MODEL) as full:
        assert content(patched, new_vectors[0]) == content(full, new_vectors[0])


# ---- the seam ---------------------------------------------------------------------------------------------------
def test_only_the_backends_know_the_engines():
    """Product modules reach the index through kb.index only: no FAISS, no SQL of the index, no raw connection."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    engine = re.compile(r"^\s*(import|from) faiss\b|\.db\(\)|passages_fts|FROM (passages|articles|term_df)\b|"
                        r"\.vectors\.(ntotal|search|reconstruct)|kb\.index\.faiss_sqlite", re.M)
    allowed = {Path("kb/integrity.py")}  # the FAISS + SQLite backend's checks of its files
    found = [str(path.relative_to(root)) for package in ("kb", "indexer", "search", "cli")
             for path in sorted((root / package).rglob("*.py"))
             if not path.relative_to(root).parts[:2] == ("kb", "index") and path.relative_to(root) not in allowed
             and engine.search(path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_setting_names_a_backend(tmp_path):
    from kb.errors import BadRequest
    from kb.index import backend_for
    from kb.settings import load_settings

    settings = load_settings({"KB_INDEX_BACKEND": "faiss", "KB_INDEX_DIR": str(tmp_path)})
    assert backend_for(settings).current() is None
    with pytest.raises(BadRequest, match="KB_INDEX_BACKEND='nope' is not an index backend: one of faiss"):
        load_settings({"KB_INDEX_BACKEND": "nope"})
