"""Index versions on disk: atomic write, CURRENT switch, checks on open, checksums, leases, pruning, leftovers."""
import json
import os

import numpy as np
import pytest

from kb import integrity
from kb.index.faiss_sqlite import delta, store
from kb.errors import Conflict, IndexDamaged, IndexMismatch, IndexNotFound
from kb.index import ArticleRecord, PassageRecord
from kb.index.lock import build_lock

MODEL = "test/tiny"


def write(index_dir, n=3, dim=4, model=MODEL):
    build_id = store.new_build_id()
    articles = [ArticleRecord(f"a{i}", f"a{i}.md", f"Title {i}", body="body", source_hash="h") for i in range(n)]
    passages = [PassageRecord(f"a{i}#", f"a{i}", (), "", f"text {i}", "t") for i in range(n)]
    vectors = np.eye(dim, dtype=np.float32)[np.arange(n) % dim]  # unit length, as the model writes them
    store.write_version(index_dir, build_id, articles, passages, vectors, {"model": model, "dim": dim})
    return build_id


def edit_manifest(version_dir, reseal=True, **changes):
    """Change manifest keys; `reseal` recomputes its checksum (as a build of another format or model would have)."""
    path = version_dir / store.MANIFEST
    manifest = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(integrity.seal(manifest) if reseal else manifest))


def test_write_then_open(tmp_path):
    build_id = write(tmp_path)
    assert store.current_id(tmp_path) == build_id
    version = store.open_current(tmp_path, MODEL)
    assert version.size == 3 and version.sealed
    assert version.manifest["counts"] == {"articles": 3, "passages": 3}
    files = version.manifest["files"]
    assert set(files) == {store.VECTORS, store.META}
    assert files[store.META]["bytes"] == (tmp_path / build_id / store.META).stat().st_size
    assert version.manifest["checksum"] == integrity.manifest_checksum(version.manifest)
    assert version.db().execute("SELECT title FROM articles WHERE id='a1'").fetchone()[0] == "Title 1"
    assert not list(tmp_path.glob(".tmp-*"))


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match="kb index"):
        store.open_current(tmp_path, MODEL)


def test_other_model_is_refused(tmp_path):
    write(tmp_path, model="other/model")
    with pytest.raises(IndexMismatch, match="other/model"):
        store.open_current(tmp_path, MODEL)


def test_other_format_is_refused(tmp_path):
    build_id = write(tmp_path)
    edit_manifest(tmp_path / build_id, format_version=999)
    with pytest.raises(IndexMismatch, match="format version 999"):
        store.open_current(tmp_path, MODEL)


def test_vector_count_mismatch_is_damage(tmp_path):
    build_id = write(tmp_path)
    edit_manifest(tmp_path / build_id, counts={"articles": 3, "passages": 7})
    with pytest.raises(IndexDamaged, match="3 vectors of dim 4 in vectors.faiss, the manifest says 7"):
        store.open_current(tmp_path, MODEL)


def test_an_edited_manifest_fails_its_own_checksum(tmp_path):
    build_id = write(tmp_path)
    edit_manifest(tmp_path / build_id, reseal=False, format_version=999)
    with pytest.raises(IndexDamaged, match="manifest.json does not match its checksum"):
        store.open_current(tmp_path, MODEL)


def test_a_version_copied_under_another_id_is_damage(tmp_path):
    import shutil

    build_id = write(tmp_path)
    shutil.copytree(tmp_path / build_id, tmp_path / "20990101T000000000000Z-copy00")
    store.switch_current(tmp_path, "20990101T000000000000Z-copy00")
    with pytest.raises(IndexDamaged, match=f"belongs to version '{build_id}'"):
        store.open_current(tmp_path, MODEL)


def test_mismatched_rows_and_vectors_are_not_written(tmp_path):
    with pytest.raises(ValueError):
        store.write_version(tmp_path, "x", [], [PassageRecord("p", "a", (), "", "t", "h")], np.zeros((2, 4), np.float32),
                            {"model": MODEL, "dim": 4})
    assert store.current_id(tmp_path) is None


def test_unfinished_temp_folder_is_ignored_and_cleaned(tmp_path):
    good = write(tmp_path)
    (tmp_path / ".tmp-20990101T000000Z-dead").mkdir()
    assert store.list_versions(tmp_path) == [good]
    assert store.remove_leftovers(tmp_path) == [".tmp-20990101T000000Z-dead"]
    assert store.open_current(tmp_path, MODEL).build_id == good


def test_prune_keeps_last_versions_and_current(tmp_path):
    ids = [write(tmp_path) for _ in range(4)]
    removed = store.prune_versions(tmp_path, keep=2)
    assert removed == ids[:2]
    assert store.list_versions(tmp_path) == ids[2:]
    store.switch_current(tmp_path, ids[2])
    assert store.prune_versions(tmp_path, keep=1) == [ids[3]]
    assert store.list_versions(tmp_path) == [ids[2]]


def test_build_lock_is_exclusive(tmp_path):
    with build_lock(tmp_path):
        with pytest.raises(Conflict, match="already running"):
            with build_lock(tmp_path):
                pass
    with build_lock(tmp_path):
        pass


def test_term_document_frequencies_are_stored(tmp_path):
    write(tmp_path)
    version = store.open_current(tmp_path, MODEL)
    df = dict(version.db().execute("SELECT term, df FROM term_df"))
    assert df["title"] == 3 and df["1"] == 1


@pytest.mark.parametrize("name", [store.VECTORS, store.META])
def test_damaged_files_are_a_clear_error(tmp_path, name):
    build_id = write(tmp_path)
    (tmp_path / build_id / name).write_bytes(b"garbage" * 10)
    with pytest.raises(IndexDamaged, match=f"damaged: {name} has 70 bytes"):
        store.open_current(tmp_path, MODEL)


@pytest.mark.parametrize("name", [store.VECTORS, store.META])
def test_one_flipped_byte_fails_the_checksum(tmp_path, name):
    build_id = write(tmp_path)
    path = tmp_path / build_id / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexDamaged, match=f"{name} does not match its checksum"):
        store.open_current(tmp_path, MODEL)


def test_vectors_not_of_unit_length_are_never_published(tmp_path):
    good = write(tmp_path)
    articles = [ArticleRecord("a0", "a0.md", "T", body="b", source_hash="h")]
    with pytest.raises(IndexDamaged, match="1 of 1 vectors are not unit length"):
        store.write_version(tmp_path, store.new_build_id(), articles, [PassageRecord("a0#", "a0", (), "", "t", "h")],
                            np.full((1, 4), 3.0, np.float32), {"model": MODEL, "dim": 4})
    assert store.current_id(tmp_path) == good


def unseal(version_dir):
    """A version as builds wrote them before checksums: no files, no checksum in the manifest."""
    path = version_dir / store.MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["files"], manifest["checksum"]
    path.write_text(json.dumps(manifest))


def test_a_version_without_checksums_opens_and_is_still_checked(tmp_path):
    build_id = write(tmp_path)
    unseal(tmp_path / build_id)
    assert not store.open_current(tmp_path, MODEL).sealed
    vectors = tmp_path / build_id / store.VECTORS  # float32 rows at the end of the file: row 2 scribbled
    data = bytearray(vectors.read_bytes())
    data[-16:] = np.full(4, 1e30, np.float32).tobytes()
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexDamaged, match=r"1 of 3 vectors are not unit length \(row 2: length 2e\+30\)"):
        store.open_current(tmp_path, MODEL)


def test_a_version_without_checksums_gets_sqlite_quick_check(tmp_path):
    build_id = write(tmp_path, n=40)
    unseal(tmp_path / build_id)
    meta = tmp_path / build_id / store.META
    data = bytearray(meta.read_bytes())
    data[4096: 4096 + 8] = b"\xff" * 8  # the b-tree header of page 2, the articles table
    meta.write_bytes(bytes(data))
    with pytest.raises(IndexDamaged, match="meta.sqlite is unreadable"):
        store.open_current(tmp_path, MODEL)


@pytest.mark.parametrize("text", [b"", b"\n", b"\xff\xfe\x00garbage", b"../../etc", b"20260101T000000Z-abc\x00"])
def test_a_damaged_current_is_damage_not_no_index(tmp_path, text):
    write(tmp_path)
    (tmp_path / store.CURRENT).write_bytes(text)
    with pytest.raises(IndexDamaged, match="CURRENT is damaged"):
        store.current_id(tmp_path)


def test_current_naming_a_missing_folder_is_damage(tmp_path):
    write(tmp_path)
    store.switch_current(tmp_path, "20990101T000000000000Z-gone00")
    with pytest.raises(IndexDamaged, match="missing"):
        store.open_current(tmp_path, MODEL)


def test_a_retired_version_closes_when_its_last_user_releases_it(tmp_path):
    build_id = write(tmp_path)
    version = store.open_current(tmp_path, MODEL)
    assert version.acquire() and version.acquire()
    version.db()
    version.retire()
    version.release()
    assert not version.closed and version.db().execute("SELECT count(*) FROM passages").fetchone()[0] == 3
    assert store.in_use(tmp_path / build_id)
    version.release()
    assert version.closed and not version.acquire() and not store.in_use(tmp_path / build_id)
    with pytest.raises(IndexNotFound, match="replaced and closed"):
        version.db()


def open_in(folder) -> list[str]:
    """This process's open files inside `folder` (other tests' threads may open and close other files meanwhile)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return [link for link in links if link.startswith(str(folder))]


def test_closing_a_version_releases_every_threads_connection(tmp_path):
    import threading

    build_id = write(tmp_path)
    version = store.open_current(tmp_path, MODEL)
    threads = [threading.Thread(target=lambda: version.db().execute("SELECT count(*) FROM articles").fetchone())
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(open_in(tmp_path / build_id)) >= 8  # a connection per thread (and the lease)
    version.retire()
    assert open_in(tmp_path / build_id) == []


@pytest.mark.parametrize("n_old, removed, added", [
    (10, [2, 5], 0), (10, [2, 5], 2), (10, [2, 5], 5), (10, [8, 9], 0), (10, [0, 9], 1), (5, [], 3),
    (4, [0, 1, 2, 3], 0), (4, [0, 1, 2, 3], 6), (0, [], 2), (12, [1, 3, 11], 1),
])
def test_plan_rows_keeps_rows_dense_and_moves_only_tail_rows(n_old, removed, added):
    rows_for_new, moves, n_new = delta.plan_rows(n_old, removed, added)
    assert n_new == n_old - len(removed) + added and len(rows_for_new) == added
    survivors = {r for r in range(n_old) if r not in removed}
    final = {dst for _, dst in moves} | (survivors - {src for src, _ in moves}) | set(rows_for_new)
    assert final == set(range(n_new))  # every row 0..n_new-1 is used exactly once
    assert len(final) == len(moves) + len(survivors) - len(moves) + len(rows_for_new)
    assert all(src in survivors and src >= n_new for src, _ in moves)
    assert len(moves) <= len(removed)


def test_prune_spares_a_version_that_is_open(tmp_path):
    ids = [write(tmp_path) for _ in range(3)]
    held = store.open_version(tmp_path / ids[0], MODEL)
    assert store.in_use(tmp_path / ids[0]) and not store.in_use(tmp_path / ids[1])
    assert store.prune_versions(tmp_path, keep=1) == [ids[1]]
    del held
    assert store.prune_versions(tmp_path, keep=1) == [ids[0]]
    assert store.list_versions(tmp_path) == [ids[2]]


@pytest.mark.parametrize("n, dim", [(0, 4), (1, 4), (5, 384)])
def test_a_streamed_vector_file_is_the_one_faiss_writes(tmp_path, n, dim):
    """vectors.faiss written batch by batch (faiss' empty file, vectors appended, counts filled in) is byte for byte
    the file faiss.write_index writes of the same vectors."""
    import faiss

    vectors = np.random.default_rng(n).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "whole.faiss"))
    build_id = store.new_build_id()
    articles = [ArticleRecord("a", "a.md", "A", body="b", source_hash="h")]
    passages = [PassageRecord(f"a#{i}", "a", (), "", f"text {i}", "t") for i in range(n)]
    with store.VersionWriter(tmp_path, build_id, dim) as writer:
        writer.add(articles, passages[:2], vectors[:2])
        writer.add([], passages[2:], vectors[2:])
        writer.commit({"model": MODEL, "dim": dim})
    assert (tmp_path / build_id / store.VECTORS).read_bytes() == (tmp_path / "whole.faiss").read_bytes()


def version_content(version) -> dict:
    db = version.db()
    return {"articles": db.execute("SELECT * FROM articles ORDER BY id").fetchall(),
            "passages": db.execute("SELECT * FROM passages ORDER BY row").fetchall(),
            "term_df": db.execute("SELECT * FROM term_df ORDER BY term").fetchall(),
            "fts": db.execute("SELECT rowid, round(bm25(passages_fts), 6) FROM passages_fts WHERE passages_fts MATCH "
                              "'title OR text OR 3' ORDER BY rowid").fetchall(),
            "vectors": version.vectors().tolist(), "counts": version.manifest["counts"]}


def test_a_version_written_in_batches_equals_one_written_whole(tmp_path):
    """Batches of any cut (passages whose article came in an earlier batch too): same rows, keys, words, vectors."""
    n, dim = 9, 4
    articles = [ArticleRecord(f"a{i}", f"a{i}.md", f"Title {i}", body=f"body {i}", source_hash="h") for i in range(3)]
    passages = [PassageRecord(f"a{i // 3}#{i}", f"a{i // 3}", ("Head", str(i)), "", f"text {i} of {i // 3}", "t")
                for i in range(n)]
    vectors = np.eye(dim, dtype=np.float32)[np.arange(n) % dim]
    store.write_version(tmp_path / "whole", "whole", articles, passages, vectors, {"model": MODEL, "dim": dim})
    with store.VersionWriter(tmp_path / "batches", "batches", dim) as writer:
        writer.add(articles[:1], passages[:2], vectors[:2])
        writer.add(articles[1:], passages[2:4], vectors[2:4])  # a0's last passage after a1 and a2 arrived
        writer.add([], passages[4:], vectors[4:])  # articles of earlier batches only
        writer.commit({"model": MODEL, "dim": dim})
    whole, batches = (store.open_current(tmp_path / name, MODEL) for name in ("whole", "batches"))
    assert version_content(batches) == version_content(whole)
    assert len(version_content(whole)["fts"]) == n


def test_an_aborted_writer_leaves_nothing(tmp_path):
    good = write(tmp_path)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        with store.VersionWriter(tmp_path, store.new_build_id(), 4) as writer:
            writer.add([ArticleRecord("a", "a.md", "A", body="b", source_hash="h")],
                       [PassageRecord("a#", "a", (), "", "t", "h")], np.eye(4, dtype=np.float32)[:1])
            assert writer.tmp.is_dir()
            raise RuntimeError("killed mid-build")
    assert not writer.tmp.exists() and store.current_id(tmp_path) == good and store.list_versions(tmp_path) == [good]
    writer = store.VersionWriter(tmp_path, store.new_build_id(), 4)
    writer.abort()
    assert store.remove_leftovers(tmp_path) == [] and store.list_versions(tmp_path) == [good]


def test_a_batch_of_another_dimension_or_length_is_refused(tmp_path):
    with store.VersionWriter(tmp_path, store.new_build_id(), 4) as writer:
        with pytest.raises(ValueError):
            writer.add([], [PassageRecord("a#", "a", (), "", "t", "h")], np.zeros((2, 4), np.float32))
        with pytest.raises(ValueError):
            writer.add([], [PassageRecord("a#", "a", (), "", "t", "h")], np.zeros((1, 5), np.float32))
        with pytest.raises(ValueError, match="dim 8 is not the writer's 4"):
            writer.commit({"model": MODEL, "dim": 8})
    assert store.current_id(tmp_path) is None and not list(tmp_path.glob(".tmp-*"))


def mapped_files(folder) -> set[str]:
    """Files inside `folder` that this process has memory-mapped."""
    with open("/proc/self/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps
                if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith(str(folder))}


def test_a_mapped_open_reads_the_same_vectors_from_the_files_pages(tmp_path):
    build_id = write(tmp_path, n=5, dim=8)
    folder = tmp_path / build_id
    with store.open_version(folder, MODEL) as copied:
        assert str(folder / store.VECTORS) not in mapped_files(tmp_path)  # the service's copy: a damaged file is found
        expected = np.array(copied.vectors()), copied.dense_search(copied.vectors()[3], 3)
    with store.open_version(folder, MODEL, mapped=True) as mapped:
        assert str(folder / store.VECTORS) in mapped_files(tmp_path)  # the build's check: no copy of the vectors
        assert np.array_equal(mapped.vectors(), expected[0])
        assert mapped.dense_search(mapped.vectors()[3], 3) == expected[1]


TEXTS = ["Original KB number: 123\n\nOutlook asks for a password. Reset it in settings.",
         "- Close Outlook\n- Delete the OST file", "Text without an end", ""]


def sentences_version(index_dir, texts=TEXTS, dim=4):
    articles = [ArticleRecord("a", "a.md", "A", body="b", source_hash="h")]
    passages = [PassageRecord(f"a#{i}", "a", (), "", t, "t") for i, t in enumerate(texts)]
    vectors = np.eye(dim, dtype=np.float32)[np.arange(len(texts)) % dim]
    build_id = store.new_build_id()
    store.write_version(index_dir, build_id, articles, passages, vectors, {"model": MODEL, "dim": dim})
    return store.open_current(index_dir, MODEL)


def test_passages_carry_their_markable_sentences(tmp_path):
    """Written with each passage (found from its text unless the record carries them), read back as written."""
    from kb.sentences import markable

    version = sentences_version(tmp_path)
    read = version.passages(range(len(TEXTS)))
    assert [read[k].sentences for k in range(len(TEXTS))] == [markable(t) for t in TEXTS]
    assert [TEXTS[0][s:e] for s, e in read[0].sentences] == ["Outlook asks for a password.", "Reset it in settings."]
    assert read[3].sentences == ()  # stored, and empty: not None
    given = PassageRecord("b#", "a", (), "", "One. Two.", "t", sentences=((5, 9),))
    assert store.passage_row(0, given)[-1] == np.asarray([5, 9], "<u4").tobytes()


def test_a_version_without_stored_sentences_reads_none_and_a_delta_adds_them(tmp_path, monkeypatch):
    """A version written before the column existed opens (its passages' sentences None: the reader finds them); a
    delta built on it adds the column and stores them for its new passages."""
    from kb.sentences import markable

    old_schema = store.SCHEMA.replace(",\n    sentences BLOB", "")
    assert old_schema != store.SCHEMA
    with monkeypatch.context() as m:
        m.setattr(store, "SCHEMA", old_schema)
        m.setattr(store, "PASSAGE_COLUMNS", store.PASSAGE_COLUMNS[:-1])
        real_row = store.passage_row
        m.setattr(store, "passage_row", lambda key, p: real_row(key, p)[:-1])
        old = sentences_version(tmp_path)
    assert "sentences" not in {r[1] for r in old.db().execute("PRAGMA table_info(passages)")}
    assert {p.sentences for p in old.passages(range(len(TEXTS))).values()} == {None}
    text = "Reset the password. Sign in again."
    path = delta.write_delta_version(tmp_path, store.new_build_id(), old, set(),
                                     [ArticleRecord("b", "b.md", "B", body="b", source_hash="h")],
                                     [PassageRecord("b#", "b", (), "", text, "t")],
                                     np.eye(4, dtype=np.float32)[:1], {"model": MODEL, "dim": 4})
    new = store.open_current(tmp_path, MODEL)
    assert new.path == path and new.size == len(TEXTS) + 1
    read = new.passages(range(new.size))
    assert read[len(TEXTS)].sentences == markable(text) == ((0, 19), (20, 34))
    assert [read[k].sentences for k in range(len(TEXTS))] == [None] * len(TEXTS)


def test_every_thread_that_searches_uses_one_openmp_thread(tmp_path):
    """OpenMP's thread count is each thread's own: a search on a request thread after one on another thread must not
    run FAISS with a team of OpenMP threads that spin beside the request's other work."""
    import faiss
    from concurrent import futures

    write(tmp_path)
    version = store.open_current(tmp_path, MODEL)
    query = np.eye(4, dtype=np.float32)[0]

    def search_then_count() -> int:
        version.dense_search(query, 2)
        return faiss.omp_get_max_threads()

    with futures.ThreadPoolExecutor(max_workers=1) as fresh:
        if fresh.submit(faiss.omp_get_max_threads).result() < 2:
            pytest.skip("one core: OpenMP's default is one thread already")
    version.dense_search(query, 2)  # this thread searches first
    with futures.ThreadPoolExecutor(max_workers=1) as first, futures.ThreadPoolExecutor(max_workers=1) as second:
        counts = [first.submit(search_then_count).result(), second.submit(search_then_count).result()]
    assert counts == [1, 1]
