"""Index versions on disk: atomic write, CURRENT switch, checks on open, pruning, leftovers."""
import json

import numpy as np
import pytest

from kb import delta, store
from kb.errors import Conflict, IndexMismatch, IndexNotFound

MODEL = "test/tiny"


def write(index_dir, n=3, dim=4, model=MODEL):
    build_id = store.new_build_id()
    articles = [(f"a{i}", f"a{i}.md", f"Title {i}", "", "", "[]", "en", "public", "published", "", "", "body",
                 "[]", "{}", "h") for i in range(n)]
    passages = [(i, f"a{i}#", f"a{i}", "[]", "", f"text {i}", "t") for i in range(n)]
    fts = [(i, f"Title {i}", "", f"text {i}") for i in range(n)]
    vectors = np.eye(n, dim, dtype=np.float32)
    store.write_version(index_dir, build_id, articles, passages, fts, vectors, {"model": model, "dim": dim})
    return build_id


def test_write_then_open(tmp_path):
    build_id = write(tmp_path)
    assert store.current_id(tmp_path) == build_id
    version = store.open_current(tmp_path, MODEL)
    assert version.vectors.ntotal == 3
    assert version.manifest["counts"] == {"articles": 3, "passages": 3}
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
    manifest_path = tmp_path / build_id / store.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatch, match="format version 999"):
        store.open_current(tmp_path, MODEL)


def test_vector_count_mismatch_is_refused(tmp_path):
    build_id = write(tmp_path)
    manifest_path = tmp_path / build_id / store.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["counts"]["passages"] = 7
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatch, match="7"):
        store.open_current(tmp_path, MODEL)


def test_mismatched_rows_and_vectors_are_not_written(tmp_path):
    with pytest.raises(ValueError):
        store.write_version(tmp_path, "x", [], [(0, "p", "a", "[]", "", "t", "h")], [], np.zeros((2, 4), np.float32),
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
    with store.build_lock(tmp_path):
        with pytest.raises(Conflict, match="already running"):
            with store.build_lock(tmp_path):
                pass
    with store.build_lock(tmp_path):
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
    with pytest.raises(IndexMismatch, match="damaged"):
        store.open_current(tmp_path, MODEL)


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
