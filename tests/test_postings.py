"""BM25 postings arrays of large FAISS + SQLite versions (kb/index/faiss_sqlite/postings.py): FTS5's scores, read
faster; through the backend, as the service opens a version."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from kb.errors import BadRequest, IndexDamaged
from kb.index import ArticleRecord, PassageRecord, Selection, TermQuery, backend_for, open_backend
from kb.index.faiss_sqlite import postings, store
from kb.index.faiss_sqlite.fts import match_expression
from kb.settings import load_settings
from search.lexical import extract_terms

MODEL = "test/postings"
DIM = 8
CONTENT = Path(__file__).resolve().parent.parent / "content"
WEIGHTS = ((2.0, 1.5, 1.0), (1.0, 1.0, 1.0), (0.5, 3.0, 1.0))


def corpus(files: list[Path], prefix: str = ""):
    """The starter content's paragraphs as passages (English and Indonesian, real words for the stemmer), random
    unit vectors; products alternate so that a selection admits part of them."""
    articles, passages = [], []
    for n, path in enumerate(files):
        text = path.read_text(encoding="utf-8")
        title = next((line.lstrip("# ") for line in text.splitlines() if line.startswith("# ")), path.stem)
        aid = f"{prefix}{path.parent.name}/{path.stem}"
        articles.append(ArticleRecord(aid, f"{aid}.md", title, product="Outlook" if n % 3 else "Teams", body=text,
                                      source_hash=f"h{n}"))
        paragraphs = [p.strip() for p in text.split("\n\n") if len(p.split()) >= 4 and not p.startswith("---")]
        for j, para in enumerate(paragraphs):
            heading = (title, f"Part {j // 3}")
            passages.append(PassageRecord(f"{aid}#{j}", aid, heading, str(j), para, f"{aid}.{j}"))
    vectors = np.random.default_rng(5).normal(size=(len(passages), DIM)).astype(np.float32)
    return articles, passages, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def files() -> list[Path]:
    found = sorted(CONTENT.rglob("*.md"))
    assert len(found) >= 40, "the starter content is the test corpus"
    return found


def written(tmp_path, min_passages: int | None = 0, chosen: list[Path] | None = None):
    backend = open_backend(tmp_path / "index", postings_min_passages=min_passages)
    articles, passages, vectors = corpus(chosen or files())
    backend.write(backend.new_name(), articles, passages, vectors, {"model": MODEL, "dim": DIM})
    return backend, backend.open(model_id=MODEL)


def fts5(reader, query: TermQuery, limit: int) -> dict[int, float]:
    """FTS5's own answer (the path a version without postings takes)."""
    w = query.weights
    sql = (f"SELECT rowid, -bm25(passages_fts, {w[0]}, {w[1]}, {w[2]}) AS score FROM passages_fts "
           "WHERE passages_fts MATCH ? ORDER BY score DESC LIMIT ?")
    return dict(reader.db().execute(sql, (match_expression(query.terms), limit)).fetchall())


def agree(found: dict[int, float], expected: dict[int, float]) -> bool:
    """Same scores in the same order; keys may differ only among passages tied at the cut."""
    if len(found) != len(expected):
        return False
    a, b = np.array(list(found.values())), np.array(list(expected.values()))
    if not np.allclose(a, b, rtol=1e-9, atol=0):
        return False
    cut = b[-1] if len(b) else 0.0
    above = lambda d: {k for k, s in d.items() if s > cut * (1 + 1e-9)}  # noqa: E731
    return above(found) == above(expected) and all(abs(found[k] - expected[k]) <= 1e-9 * abs(expected[k])
                                                   for k in found.keys() & expected.keys())


def queries(reader, n: int, seed: int = 1) -> list[tuple[str, ...]]:
    """Words sampled from random passages (1 to 12, repeats and inflected forms as users write them)."""
    rng = random.Random(seed)
    texts = [p.text for p in reader.passages(range(reader.size)).values()]
    out = []
    for text in rng.sample(texts, n):
        words = extract_terms(text)
        picked = rng.sample(words, min(len(words), rng.randint(1, 12)))
        if rng.random() < 0.3 and picked:
            picked.append(picked[0])  # a word twice counts twice in FTS5
        out.append(tuple(picked) or ("outlook",))
    return out


def test_a_large_version_scores_as_fts5_does(tmp_path, monkeypatch):
    backend, reader = written(tmp_path, min_passages=0)
    assert reader.postings is not None and postings.POSTINGS in reader.manifest["files"]
    record = reader.manifest[postings.RECORD]
    assert record["postings"] == len(reader.postings.keys) > reader.size > 200
    calls = []
    search = reader.postings.search
    monkeypatch.setattr(reader.postings, "search", lambda *a, **k: calls.append(a) or search(*a, **k))
    checked = 0
    for words in queries(reader, 150):
        for weights in WEIGHTS:
            query = TermQuery(words, weights)
            for limit in (5, 100):
                assert agree(reader.lexical_search(query, limit), fts5(reader, query, limit)), (words, weights, limit)
                checked += 1
    assert len(calls) == checked  # the arrays answered every query (the phrases of some, "a_b", scored by FTS5)
    plural = TermQuery(("passwords", "signing"), WEIGHTS[0])  # stemmed by FTS5's porter tokenizer: password, sign
    assert reader.lexical_search(plural, 10) and agree(reader.lexical_search(plural, 10), fts5(reader, plural, 10))
    assert reader.lexical_search(TermQuery(("zzqqxx",), WEIGHTS[0]), 10) == {}
    reader.close()


def test_a_selection_gets_the_best_admitted_passages(tmp_path):
    backend, reader = written(tmp_path)
    selection = Selection(product="Teams")
    admitted = reader._select(selection).members
    for words in queries(reader, 60, seed=2):
        query = TermQuery(words, WEIGHTS[0])
        everything = fts5(reader, query, reader.size)
        expected = {k: s for k, s in everything.items() if k in admitted}
        expected = dict(list(expected.items())[:10])
        assert agree(reader.lexical_search(query, 10, selection), expected), words
    reader.close()


def test_searches_at_once_each_get_their_own_zeroed_arrays(tmp_path):
    """The scores arrays are lent to one search at a time and given back zeroed: searches in four threads answer as
    one after the other does, and no more arrays are made than ran at once."""
    from concurrent.futures import ThreadPoolExecutor

    backend, reader = written(tmp_path)
    asked = [TermQuery(words, WEIGHTS[n % 3]) for n, words in enumerate(queries(reader, 80, seed=3))]
    alone = [reader.lexical_search(query, 20) for query in asked]
    assert len(reader.postings._scratch) == 1
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda query: reader.lexical_search(query, 20), asked)) == alone
    assert 1 <= len(reader.postings._scratch) <= 4
    assert all(not scores.any() and not hit.any() for scores, hit in reader.postings._scratch)
    reader.close()


def test_a_phrase_is_scored_by_fts5_and_added(tmp_path, monkeypatch):
    backend, reader = written(tmp_path)
    calls = []
    search = reader.postings.search
    monkeypatch.setattr(reader.postings, "search", lambda *a, **k: calls.append(a) or search(*a, **k))
    for words in (("outlook_password", "profile"), ("sign_in",), ("sign_in", "teams", "sign_in", "meeting")):
        query = TermQuery(words, WEIGHTS[0])  # unicode61 splits at "_": a phrase of two tokens, next to each other
        found = reader.lexical_search(query, 10)
        assert found and agree(found, fts5(reader, query, 10)), words
    assert len(calls) == 3 and calls[0][0] == ["profil"] and calls[1][0] == []  # porter: profile -> profil
    assert reader.postings.terms_of(("outlook", "a_b")) == (["outlook"], ["a_b"])
    reader.close()


def test_below_the_size_setting_a_version_is_as_before(tmp_path):
    for min_passages in (None, 100_000):
        backend, reader = written(tmp_path / str(min_passages), min_passages=min_passages)
        assert reader.postings is None and postings.RECORD not in reader.manifest
        assert postings.REQUEST not in reader.manifest
        assert sorted(reader.manifest["files"]) == sorted(store.CHECKED_FILES)
        query = TermQuery(("outlook", "password"), WEIGHTS[0])
        assert reader.lexical_search(query, 10) == fts5(reader, query, 10)
        reader.close()


@pytest.mark.parametrize("remove_first,add_last", [(3, 5), (0, 5), (12, 1)])  # (12, 1): tail rows move into holes
def test_a_patched_version_has_its_postings_patched(tmp_path, monkeypatch, remove_first, add_last):
    chosen = files()
    backend, reader = written(tmp_path, chosen=chosen[:-5])
    removed = {a.id for a in corpus(chosen[:remove_first])[0]} | {"no/such-article"}
    articles, passages, vectors = corpus(chosen[-add_last:])
    read_again = []
    monkeypatch.setattr(postings, "read_postings", lambda *a: read_again.append(a) or pytest.fail("read again"))
    with backend.writer(backend.new_name(), DIM, base=reader, remove=removed) as writer:
        writer.add(articles, passages, vectors)
        writer.commit({"model": MODEL, "dim": DIM})
    monkeypatch.undo()
    patched = backend.open(model_id=MODEL)
    assert patched.build_id != reader.build_id and patched.postings is not None and not read_again
    assert len(patched.postings.norm) == patched.size != reader.size
    with open(patched.path / postings.POSTINGS, "rb") as handle, np.load(handle) as data:
        written_arrays = {name: data[name] for name in data.files}
    expected = postings.read_postings(patched.path / store.META, patched.size)  # what FTS5 holds after the patch
    assert written_arrays.keys() == expected.keys()
    assert all(np.array_equal(written_arrays[k], expected[k]) for k in expected)
    assert patched.manifest[postings.RECORD]["postings"] == len(expected["keys"])
    for words in queries(patched, 80, seed=3):
        query = TermQuery(words, WEIGHTS[0])
        assert agree(patched.lexical_search(query, 20), fts5(patched, query, 20)), words
    reader.close()
    patched.close()


def test_a_version_crossing_the_setting_reads_its_postings(tmp_path):
    chosen = files()
    backend, reader = written(tmp_path, min_passages=None, chosen=chosen[:-5])
    assert reader.postings is None
    backend.postings_min_passages = reader.size + 1
    articles, passages, vectors = corpus(chosen[-5:])
    with backend.writer(backend.new_name(), DIM, base=reader) as writer:
        writer.add(articles, passages, vectors)
        writer.commit({"model": MODEL, "dim": DIM})
    grown = backend.open(model_id=MODEL)
    assert grown.size > reader.size and grown.postings is not None
    query = TermQuery(("outlook", "password", "teams"), WEIGHTS[0])
    assert agree(grown.lexical_search(query, 20), fts5(grown, query, 20))
    reader.close()
    grown.close()


def test_damaged_postings_are_found_on_open(tmp_path):
    backend, reader = written(tmp_path)
    path = reader.path / postings.POSTINGS
    reader.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexDamaged):
        backend.open(model_id=MODEL)  # its checksum
    with pytest.raises(IndexDamaged, match="postings.npz is unreadable"):
        backend.open(model_id=MODEL, check=False)  # checksums not read: it still cannot be read
    arrays = postings.read_postings(reader.path / store.META, reader.size - 1 + 1)
    arrays["lengths"] = arrays["lengths"][:-1]
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(IndexDamaged, match="does not fit the version"):
        backend.open(model_id=MODEL, check=False)


def test_the_setting_reaches_the_backend_and_is_checked(tmp_path):
    settings = load_settings({"KB_POSTINGS_MIN_PASSAGES": "1234"}, index_dir=tmp_path)
    assert backend_for(settings).postings_min_passages == 1234
    assert load_settings({}).postings_min_passages == 10_000
    with pytest.raises(BadRequest, match="KB_POSTINGS_MIN_PASSAGES"):
        load_settings({"KB_POSTINGS_MIN_PASSAGES": "-1"})


def test_the_tokenizer_answers_threads_while_its_memo_is_cleared(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(postings, "STEMS_KEPT", 50)
    tokenizer = postings.Tokenizer()
    words = [f"printer{n}s" for n in range(400)] + ["passwords", "a_b"]

    def ask(n: int) -> list:
        chosen = words[n % 37::7] + ["passwords"]
        return list(zip(chosen, tokenizer.tokens(chosen)))

    with ThreadPoolExecutor(8) as pool:
        answers = [pair for found in pool.map(ask, range(200)) for pair in found]
    assert ("passwords", ("password",)) in answers and ("a_b", ("a", "b")) in answers
    assert all(tokens == ((word[:-1],) if word.startswith("printer") else tokens) for word, tokens in answers)
    assert len(tokenizer._known) <= 50 + len(words)


def test_the_tokenizer_is_fts5s():
    tokens = postings.tokenizer().tokens(["Passwords", "café", "signing", "outlook_password", "2147xxxxxx"])
    assert tokens == [("password",), ("cafe",), ("sign",), ("outlook", "password"), ("2147xxxxxx",)]


def test_the_service_answers_the_same_with_postings(real_index, embedder, tmp_path):
    """Searcher.search and .suggest over the real model's fixture index, reading FTS5 and then the arrays."""
    from kb.index import open_backend as backend_of
    from search.searcher import Searcher

    version = backend_of(real_index.index_dir).open(model_id=embedder.model_id)
    postings.write(tmp_path, postings.read_postings(version.path / store.META, version.size))
    arrays = postings.open_postings(tmp_path, {postings.RECORD: {}}, version.size)
    searcher = Searcher(version, embedder, real_index)
    titles = [a.title for a in version.articles()]
    tickets = [(t, f"Since this morning: {t.lower()}. Error 0x80070005, could that be it?") for t in titles]
    tickets.append(("Kata sandi Outlook", "Outlook terus meminta kata sandi setiap beberapa menit sejak pagi."))

    def answers() -> list:
        found = [[(r["id"], round(r["score"], 9)) for r in searcher.search(t, k=10)["results"]] for t in titles]
        found += [[(a["id"], round(a["score"], 9)) for a in searcher.suggest(s, b, k=5)["articles"]]
                  for s, b in tickets]
        return found

    version.postings = None
    from_fts5 = answers()
    version.postings = arrays
    used = []
    search = arrays.search
    arrays.search = lambda *a, **k: used.append(a) or search(*a, **k)
    assert answers() == from_fts5
    assert len(used) >= len(titles) + len(tickets) and all(from_fts5)
    version.close()


def test_postings_read_a_chunk_of_terms_at_a_time_are_the_same(tmp_path, monkeypatch):
    backend, reader = written(tmp_path, min_passages=None)
    whole = postings.read_postings(reader.path / store.META, reader.size)
    monkeypatch.setattr(postings, "CHUNK_TOKENS", 37)  # a few terms per chunk, a long list alone in its chunk
    chunked = postings.read_postings(reader.path / store.META, reader.size)
    assert whole.keys() == chunked.keys() and all(np.array_equal(whole[k], chunked[k]) for k in whole)
    assert len(whole["starts"]) > 1000
    reader.close()
