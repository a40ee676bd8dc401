"""Builds: full, incremental (only changed articles re-embedded), drafts, broken files, strict, kill safety."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from indexer.build import build_index
from kb.index.faiss_sqlite import store
from kb.errors import ContentError
from kb.settings import load_settings
from tests.conftest import FIXTURES, stop_process, wait_until

REPO = Path(__file__).parent.parent


def settings_for(content: Path, tmp_path: Path, **extra):
    return load_settings({}, content_dir=content, index_dir=tmp_path / "index", **extra)


def article_ids(settings, model_id):
    version = store.open_current(settings.index_dir, model_id)
    return {row[0] for row in version.db().execute("SELECT id FROM articles")}


def test_full_build_indexes_articles_not_fragments_or_drafts(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    report = build_index(settings, tiny_encoder, progress=False)
    ids = article_ids(settings, tiny_encoder.model_id)
    assert "Outlook/send-receive-error-0x8004010f" in ids and "id/reset-kata-sandi-outlook" in ids
    assert not any(i.startswith(("includes/", "drafts/")) or i == "TOC" for i in ids)
    assert report.drafts == 1 and report.articles == len(ids) == 8
    assert report.passages == report.embedded > report.articles
    version = store.open_current(settings.index_dir, tiny_encoder.model_id)
    assert version.manifest["counts"] == {"articles": 8, "passages": report.passages}
    assert version.manifest["model"] == tiny_encoder.model_id and version.manifest["dim"] == tiny_encoder.dim


def test_every_article_title_is_embedded_and_follows_an_edit(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    version = store.open_current(settings.index_dir, tiny_encoder.model_id)
    ids, matrix = version.title_vectors()
    titles = dict(version.db().execute("SELECT id, title FROM articles"))
    assert ids == sorted(titles) and len(ids) == 8
    for article_id, vector in zip(ids, matrix):
        assert np.allclose(vector, tiny_encoder.encode_queries([titles[article_id]])[0])
    page = content_copy / "OneDrive/onedrive-sync-stuck.md"
    page.write_text(page.read_text().replace("title: ", "title: Renamed ", 1))
    build_index(settings, tiny_encoder, progress=False)
    version = store.open_current(settings.index_dir, tiny_encoder.model_id)
    after = dict(zip(*version.title_vectors()))
    title = version.article("OneDrive/onedrive-sync-stuck").title
    assert title.startswith("Renamed ")
    assert np.allclose(after["OneDrive/onedrive-sync-stuck"], tiny_encoder.encode_queries([title])[0])


def test_no_change_writes_no_version_and_embeds_nothing(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    first = build_index(settings, tiny_encoder, progress=False)
    calls = tiny_encoder.calls
    again = build_index(settings, tiny_encoder, progress=False)
    assert again.build_id is None and again.parsed == 0 and again.reused == 8
    assert tiny_encoder.calls == calls
    assert store.current_id(settings.index_dir) == first.build_id


def test_changed_article_is_the_only_one_reembedded(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    before = tiny_encoder.texts_encoded
    page = content_copy / "OneDrive/onedrive-sync-stuck.md"
    page.write_text(page.read_text() + "\n## Brand new section\n\nReset the sync client with onedrive.exe /reset.\n")
    report = build_index(settings, tiny_encoder, progress=False)
    assert report.parsed == 1 and report.reused == 7 and report.build_id
    assert 1 <= tiny_encoder.texts_encoded - before <= 2  # the new section (and a neighbour it merged with)
    text = store.open_current(settings.index_dir, tiny_encoder.model_id).db().execute(
        "SELECT group_concat(text) FROM passages WHERE article_id='OneDrive/onedrive-sync-stuck'").fetchone()[0]
    assert "onedrive.exe /reset" in text


def test_deleted_and_new_articles(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    (content_copy / "Exchange/ndr-5-7-124.md").unlink()
    (content_copy / "Teams/new.md").write_text("---\ntitle: Teams status stuck on Away\n---\n\nSign out and in.\n")
    report = build_index(settings, tiny_encoder, progress=False)
    ids = article_ids(settings, tiny_encoder.model_id)
    assert report.deleted == 1 and "Exchange/ndr-5-7-124" not in ids and "Teams/new" in ids


def test_vectors_stay_aligned_with_passages_after_incremental_builds(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    (content_copy / "Outlook/outlook-password-prompt.md").unlink()
    build_index(settings, tiny_encoder, progress=False)
    version = store.open_current(settings.index_dir, tiny_encoder.model_id)
    rows = version.db().execute(
        "SELECT p.row, a.title, p.heading_path, p.text FROM passages p JOIN articles a ON a.id = p.article_id "
        "ORDER BY p.row").fetchall()
    assert [r[0] for r in rows] == list(range(version.size))
    for row, title, headings, text in rows:
        import json
        from kb.articles import Passage
        expected = tiny_encoder.encode_passages([Passage("", "", title, tuple(json.loads(headings)), "", text).embed_text()])[0]
        assert abs(float(version.vectors([row])[0] @ expected) - 1.0) < 1e-5


def test_changed_include_reparses_the_article(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    include = content_copy / "includes/registry-alert.md"
    include.write_text(include.read_text() + "\nBack up the registry with regedit export first.\n")
    report = build_index(settings, tiny_encoder, progress=False)
    assert report.parsed == 1
    text = store.open_current(settings.index_dir, tiny_encoder.model_id).db().execute(
        "SELECT group_concat(text) FROM passages WHERE article_id='Outlook/send-receive-error-0x8004010f'").fetchone()[0]
    assert "regedit export" in text


def test_broken_files_are_reported_and_the_rest_indexed(content_copy, tmp_path, tiny_encoder):
    for name in ("bad-yaml.md", "latin1.md", "empty.md"):
        shutil.copy(FIXTURES / "broken" / name, content_copy / name)
    settings = settings_for(content_copy, tmp_path)
    report = build_index(settings, tiny_encoder, progress=False)
    errors = {p.path: p for p in report.errors}
    assert set(errors) == {"bad-yaml.md", "latin1.md", "empty.md"}
    assert errors["latin1.md"].line == 5 and errors["bad-yaml.md"].line > 0
    assert report.articles == 8


def test_strict_makes_content_errors_fatal_and_keeps_the_old_version(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    good = build_index(settings, tiny_encoder, progress=False).build_id
    shutil.copy(FIXTURES / "broken" / "bad-yaml.md", content_copy / "bad-yaml.md")
    with pytest.raises(ContentError, match="bad-yaml.md"):
        build_index(settings, tiny_encoder, strict=True, progress=False)
    assert store.current_id(settings.index_dir) == good


def test_article_broken_by_an_edit_keeps_its_last_good_version(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    (content_copy / "Exchange/ndr-5-7-124.md").write_text("---\ntitle: [unclosed\n---\nBody\n")
    report = build_index(settings, tiny_encoder, progress=False)
    assert "Exchange/ndr-5-7-124" in article_ids(settings, tiny_encoder.model_id)
    assert any("kept the previously indexed version" in p.message for p in report.problems)


def test_a_symbolic_link_out_of_the_content_folder_is_never_indexed(content_copy, tmp_path, tiny_encoder, caplog):
    secret = tmp_path / "secret.md"
    secret.write_text("---\ntitle: Root password\n---\nThe root password is hunter2.\n", encoding="utf-8")
    (content_copy / "Outlook" / "system.md").symlink_to(secret)
    settings = settings_for(content_copy, tmp_path)
    with caplog.at_level("WARNING", logger="kb.parse"):
        report = build_index(settings, tiny_encoder, progress=False)
    assert "Outlook/system" not in article_ids(settings, tiny_encoder.model_id) and report.articles == 8
    assert any(str(content_copy / "Outlook" / "system.md") in r.getMessage() for r in caplog.records)


def test_ids_differing_only_in_case_are_reported(content_copy, tmp_path, tiny_encoder):
    shutil.copy(content_copy / "Teams/teams-microphone-not-working.md", content_copy / "Teams/Teams-Microphone-Not-Working.md")
    report = build_index(settings_for(content_copy, tmp_path), tiny_encoder, progress=False)
    assert any("duplicate article id" in p.message for p in report.errors)


def test_empty_content_folder_is_a_clear_error(tmp_path, tiny_encoder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContentError, match="no publishable articles"):
        build_index(settings_for(tmp_path / "empty", tmp_path), tiny_encoder, progress=False)
    with pytest.raises(ContentError, match="does not exist"):
        build_index(settings_for(tmp_path / "missing", tmp_path), tiny_encoder, progress=False)


def test_old_versions_are_pruned(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path, keep_versions=2)
    page = content_copy / "OneDrive/onedrive-sync-stuck.md"
    for n in range(4):
        page.write_text(page.read_text() + f"\nEdit number {n}.\n")
        build_index(settings, tiny_encoder, progress=False)
    assert len(store.list_versions(settings.index_dir)) == 2
    # A version someone still has open (a service, a request finishing on it) survives pruning.
    held = store.open_current(settings.index_dir, tiny_encoder.model_id)
    for n in range(3):
        page.write_text(page.read_text() + f"\nLater edit {n}.\n")
        build_index(settings, tiny_encoder, progress=False)
    assert held.build_id in store.list_versions(settings.index_dir)
    assert len(store.list_versions(settings.index_dir)) == 3
    del held
    page.write_text(page.read_text() + "\nLast edit.\n")
    build_index(settings, tiny_encoder, progress=False)
    assert len(store.list_versions(settings.index_dir)) == 2


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.conftest import TinyEncoder
    from indexer.build import build_index
    from kb.index.faiss_sqlite import store
    from kb.settings import load_settings

    ready = Path({ready!r})
    point = {point!r}

    def pause(*args, **kwargs):
        ready.write_text(point)
        time.sleep(60)

    if point == "encode":
        TinyEncoder.encode_passages = pause
    elif point == "fsync":
        store.fsync_path = pause
    elif point == "switch":
        store.switch_current = pause
    elif point == "batch":  # a full build streams: stop after its second batch is in the temp folder
        import indexer.build
        indexer.build.BATCH_PASSAGES = 3
        add, added = store.VersionWriter.add, []
        def second_batch(self, *batch):
            add(self, *batch)
            added.append(1)
            if len(added) == 2:
                pause()
        store.VersionWriter.add = second_batch
    settings = load_settings({{}}, content_dir={content!r}, index_dir={index!r})
    build_index(settings, TinyEncoder(), full=True, progress=False)
""")


@pytest.mark.parametrize("point", ["encode", "batch", "fsync", "switch"])
def test_build_killed_midway_leaves_previous_version_serving(content_copy, tmp_path, tiny_encoder, point):
    settings = settings_for(content_copy, tmp_path)
    good = build_index(settings, tiny_encoder, progress=False).build_id
    (content_copy / "Teams/extra.md").write_text("---\ntitle: Extra\n---\n\nNew text to embed.\n")
    ready = tmp_path / "ready"
    script = KILLED_BUILD.format(repo=str(REPO), ready=str(ready), point=point, content=str(content_copy),
                                 index=str(settings.index_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 60, f"the build never reached {point}")
        assert proc.poll() is None, f"the build process ended ({proc.returncode}) before reaching {point}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop_process(proc, signal.SIGKILL)  # on any way out: never left running, and never hides the first failure
    assert store.current_id(settings.index_dir) == good
    if point == "batch":  # killed with two batches written into its temp folder
        assert [p.name for p in settings.index_dir.glob(".tmp-*/*")].count(store.META) == 1
    version = store.open_current(settings.index_dir, tiny_encoder.model_id)
    assert version.manifest["counts"]["articles"] == 8
    report = build_index(settings, tiny_encoder, progress=False)
    assert report.build_id and report.articles == 9
    assert not list(settings.index_dir.glob(".tmp-*"))


class CountingLoads:
    """Wraps an encoder and counts how often its dimension (which loads a real model) is asked for."""

    def __init__(self, inner):
        self.inner, self.model_id, self.dim_reads = inner, inner.model_id, 0

    @property
    def dim(self):
        self.dim_reads += 1
        return self.inner.dim

    def encode_passages(self, texts, batch_size=64):
        return self.inner.encode_passages(texts, batch_size)


def test_a_deletion_does_not_need_the_model(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    (content_copy / "Exchange/ndr-5-7-124.md").unlink()
    encoder = CountingLoads(tiny_encoder)
    calls = tiny_encoder.calls
    report = build_index(settings, encoder, progress=False)
    assert report.deleted == 1 and report.build_id
    assert encoder.dim_reads == 0 and tiny_encoder.calls == calls


def snapshot(settings, model_id) -> dict:
    """A version's content keyed by passage id, independent of row order: what a delta build must reproduce."""
    from search.lexical import search_lexical

    version = store.open_current(settings.index_dir, model_id)
    db = version.db()
    pid = dict(db.execute("SELECT row, passage_id FROM passages"))
    assert sorted(pid) == list(range(version.size))  # rows dense, FAISS row i = passage row i
    vectors = {pid[r]: version.vectors([r])[0].round(5).tolist() for r in pid}
    bm25 = {q: {pid[r]: round(s, 6) for r, s in search_lexical(version, q, 100).items()}
            for q in ("outlook password", "teams microphone", "sync onedrive", "kata sandi", "error", "tombol")}
    ids, titles = version.title_vectors()
    return {"titles": {i: v.round(5).tolist() for i, v in zip(ids, titles)},
            "articles": sorted(tuple(r) for r in db.execute("SELECT * FROM articles")),
            "passages": sorted(tuple(r)[1:] for r in db.execute("SELECT * FROM passages")),
            "vectors": vectors, "bm25": bm25, "term_df": dict(db.execute("SELECT term, df FROM term_df")),
            "counts": version.manifest["counts"], "content_hash": version.manifest["content_hash"]}


def test_delta_builds_equal_a_full_build_of_the_same_content(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    teams = content_copy / "Teams/teams-microphone-not-working.md"
    steps = [
        lambda: (content_copy / "Outlook/outlook-password-prompt.md").unlink(),  # rows freed: tail rows move
        lambda: teams.write_text(teams.read_text() + "\n\n## More\n\n" + "Extra microphone tip. " * 300),  # grows
        lambda: (content_copy / "Teams/new.md").write_text("---\ntitle: New one\n---\n\nSync error text here.\n"),
        lambda: teams.write_text("---\ntitle: Teams microphone\n---\n\nShort now.\n"),  # shrinks
    ]
    for step in steps:
        step()
        report = build_index(settings, tiny_encoder, progress=False)
        assert report.build_id and report.passages == store.open_current(
            settings.index_dir, tiny_encoder.model_id).size
        delta = snapshot(settings, tiny_encoder.model_id)
        full_settings = settings_for(content_copy, tmp_path / "full")
        shutil.rmtree(full_settings.index_dir, ignore_errors=True)
        build_index(full_settings, tiny_encoder, full=True, progress=False)
        assert delta == snapshot(full_settings, tiny_encoder.model_id)


def disk_full_in(where: str):
    """A stand-in for the write path that fails the way each library reports ENOSPC (a real full disk, a tmpfs, is
    in test_integrity.py)."""
    import errno
    import sqlite3

    def fail(*args, **kwargs):
        if where == "faiss":
            raise RuntimeError("Error in void faiss::write_index(const Index*, IOWriter*, int): write error in "
                               "vectors.faiss: 7 != 4608 (No space left on device)")
        if where == "sqlite":
            raise sqlite3.OperationalError("database or disk is full")
        raise OSError(errno.ENOSPC, "No space left on device")
    return fail


@pytest.mark.parametrize("where, target", [("faiss", "faiss.write_index"), ("sqlite", "scratch_connection"),
                                           ("fsync", "fsync_path")])
def test_a_full_disk_is_a_clear_error_naming_the_folder(content_copy, tmp_path, tiny_encoder, monkeypatch, where,
                                                         target):
    from indexer import failures
    from kb.errors import DiskFull

    settings = settings_for(content_copy, tmp_path)
    good = build_index(settings, tiny_encoder, progress=False).build_id
    (content_copy / "Teams/extra.md").write_text("---\ntitle: Extra\n---\n\nNew text to embed.\n")
    with monkeypatch.context() as patch:
        patch.setattr(store.faiss if where == "faiss" else store, target.split(".")[-1], disk_full_in(where))
        with pytest.raises(DiskFull, match=f"no space left on the device of {settings.index_dir.resolve()} while "
                                           "building an index version"):
            build_index(settings, tiny_encoder, full=True, progress=False)
    assert store.current_id(settings.index_dir) == good and not list(settings.index_dir.glob(".tmp-*"))
    assert failures.read(settings.index_dir)["error"]["code"] == "disk_full"
    build_index(settings, tiny_encoder, progress=False)  # room again: the next build succeeds and says so
    assert failures.read(settings.index_dir) is None


def test_a_failed_build_is_recorded_for_healthz_until_one_succeeds(content_copy, tmp_path, tiny_encoder):
    from indexer import failures

    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    shutil.copy(FIXTURES / "broken" / "bad-yaml.md", content_copy / "bad-yaml.md")
    with pytest.raises(ContentError):
        build_index(settings, tiny_encoder, strict=True, progress=False)
    record = failures.read(settings.index_dir)
    assert record["error"]["code"] == "content_error" and "bad-yaml.md" in record["error"]["message"]
    assert record["finished"] and record["pid"] == os.getpid()
    build_index(settings, tiny_encoder, progress=False)  # a build that succeeds (here: nothing new) clears it
    assert failures.read(settings.index_dir) is None


def test_a_damaged_previous_version_is_rebuilt_in_full_not_patched(content_copy, tmp_path, tiny_encoder, caplog):
    settings = settings_for(content_copy, tmp_path)
    first = build_index(settings, tiny_encoder, progress=False).build_id
    meta = settings.index_dir / first / store.META
    raw = bytearray(meta.read_bytes())
    raw[4096:4104] = b"\xff" * 8
    meta.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="kb.build"):
        report = build_index(settings, tiny_encoder, progress=False)  # nothing changed in the content
    assert report.build_id and report.parsed == report.articles == 8 and report.reused == 0
    assert any("meta.sqlite does not match its checksum" in r.getMessage() for r in caplog.records)
    assert store.open_current(settings.index_dir, tiny_encoder.model_id).build_id == report.build_id


def one_shot(settings, encoder) -> str:
    """A full build as it was before builds streamed: every article parsed, chunked and embedded in memory, then
    one `write` of all of them, titles embedded (the reference a streamed build must equal)."""
    import dataclasses
    import hashlib

    from indexer.build import _library_versions, hash_source, settings_fingerprint
    from indexer.cache import hash_text
    from indexer.chunking import split_article
    from indexer.parse import discover, parse_article
    from kb.index import ArticleRecord, PassageRecord, backend_for

    fresh = []
    for path in discover(settings.content_dir):
        article, _ = parse_article(path, settings.content_dir)
        if article is not None and article.status != "draft":
            fresh.append((article, hash_source(path, settings.content_dir, list(article.includes))))
    passages = [p for a, _ in fresh for p in split_article(a, settings.passage_max_words, settings.passage_min_words)]
    vectors = encoder.encode_passages([p.embed_text() for p in passages])
    content_hash = hashlib.sha256("".join(sorted(a.article_id + h for a, h in fresh)).encode()).hexdigest()
    manifest = {"model": encoder.model_id, "dim": encoder.dim, "normalised": True,
                "content_dir": str(settings.content_dir.resolve()), "content_hash": content_hash,
                "settings": settings_fingerprint(settings, encoder), "library_versions": _library_versions()}
    backend = backend_for(settings)
    name = backend.new_name()
    titles = encoder.encode_passages([a.title for a, _ in fresh])
    backend.write(name, [dataclasses.replace(ArticleRecord.of(a, h), title_vector=t.astype("<f4").tobytes())
                         for (a, h), t in zip(fresh, titles)],
                  [PassageRecord.of(p, hash_text(p.embed_text())) for p in passages], vectors, manifest)
    return name


@pytest.mark.parametrize("batch", [1, 7, 10**6])
def test_a_streamed_build_equals_the_one_shot_build(content_copy, tmp_path, tiny_encoder, monkeypatch, batch):
    """Batches of 1 passage (one article each), of 7 (cut mid-way), or one batch: the same version, key for key."""
    import indexer.build

    monkeypatch.setattr(indexer.build, "BATCH_PASSAGES", batch)
    streamed = settings_for(content_copy, tmp_path / "streamed")
    report = build_index(streamed, tiny_encoder, full=True, progress=False)
    reference = settings_for(content_copy, tmp_path / "reference")
    one_shot(reference, tiny_encoder)
    got, expected = snapshot(streamed, tiny_encoder.model_id), snapshot(reference, tiny_encoder.model_id)
    assert got == expected and got["counts"] == {"articles": 8, "passages": report.passages}
    keys = "SELECT row, passage_id FROM passages ORDER BY row"
    streamed_version = store.open_current(streamed.index_dir, tiny_encoder.model_id)
    reference_version = store.open_current(reference.index_dir, tiny_encoder.model_id)
    assert streamed_version.db().execute(keys).fetchall() == reference_version.db().execute(keys).fetchall()
    assert (streamed_version.path / store.VECTORS).read_bytes() == (reference_version.path / store.VECTORS).read_bytes()


def test_a_build_parsed_ahead_by_a_worker_equals_the_one_shot_build(content_copy, tmp_path, tiny_encoder,
                                                                    monkeypatch):
    """The worker process parses the files (in messages of 2) while batches of 7 passages are embedded: the same
    version, key for key, as parsing everything in the build's process."""
    import indexer.build
    from indexer import parse_ahead

    monkeypatch.setattr(indexer.build, "BATCH_PASSAGES", 7)
    monkeypatch.setattr(indexer.build, "PARSE_AHEAD_MIN_FILES", 1)
    monkeypatch.setattr(parse_ahead, "FILES_PER_MESSAGE", 2)
    workers = []
    original = parse_ahead.ParsedFiles._start
    monkeypatch.setattr(parse_ahead.ParsedFiles, "_start", lambda self: workers.append(self) or original(self))
    ahead = settings_for(content_copy, tmp_path / "ahead")
    report = build_index(ahead, tiny_encoder, full=True, progress=False)
    reference = settings_for(content_copy, tmp_path / "reference")
    one_shot(reference, tiny_encoder)
    assert len(workers) == 1 and workers[0].paths and report.problems == []
    got, expected = snapshot(ahead, tiny_encoder.model_id), snapshot(reference, tiny_encoder.model_id)
    assert got == expected and got["counts"] == {"articles": 8, "passages": report.passages}
    keys = "SELECT row, passage_id, sentences FROM passages ORDER BY row"
    assert store.open_current(ahead.index_dir, tiny_encoder.model_id).db().execute(keys).fetchall() == \
        store.open_current(reference.index_dir, tiny_encoder.model_id).db().execute(keys).fetchall()


def test_a_streamed_build_holds_one_batch_of_passages(content_copy, tmp_path, tiny_encoder, monkeypatch):
    """Passages reach the encoder and the version batch by batch (about BATCH_PASSAGES each), not all at once."""
    import indexer.build
    from kb.index.faiss_sqlite import FaissSqliteBackend

    monkeypatch.setattr(indexer.build, "BATCH_PASSAGES", 5)
    added: list[list[str]] = []  # the article id of each passage, per batch
    original = store.VersionWriter.add

    def add(self, articles, passages, vectors):
        added.append([p.article_id for p in passages])
        return original(self, articles, passages, vectors)

    monkeypatch.setattr(store.VersionWriter, "add", add)
    settings = settings_for(content_copy, tmp_path)
    report = build_index(settings, tiny_encoder, progress=False)
    assert isinstance(indexer.build.backend_for(settings), FaissSqliteBackend)
    # one encode call for a batch's passages, one for its articles' titles
    assert len(added) > 2 and sum(map(len, added)) == report.passages and tiny_encoder.calls == 2 * len(added)
    for owners in added[:-1]:  # a batch closes with the article that brings it to 5 passages or more
        assert len(owners) >= 5 and len([a for a in owners if a != owners[-1]]) < 5


def test_strict_errors_found_after_batches_were_written_publish_nothing(content_copy, tmp_path, tiny_encoder,
                                                                      monkeypatch):
    import indexer.build

    settings = settings_for(content_copy, tmp_path)
    good = build_index(settings, tiny_encoder, progress=False).build_id
    shutil.copy(FIXTURES / "broken" / "bad-yaml.md", content_copy / "zz-bad-yaml.md")  # parsed last
    monkeypatch.setattr(indexer.build, "BATCH_PASSAGES", 3)
    added: list[int] = []
    original = store.VersionWriter.add
    monkeypatch.setattr(store.VersionWriter, "add", lambda self, *batch: added.append(len(batch[1])) or
                        original(self, *batch))
    with pytest.raises(ContentError, match="1 content errors .--strict.: zz-bad-yaml.md"):
        build_index(settings, tiny_encoder, full=True, strict=True, progress=False)
    assert len(added) > 1  # batches before the broken file were written...
    assert store.current_id(settings.index_dir) == good  # ...and nothing of them was switched to or left behind
    assert store.list_versions(settings.index_dir) == [good] and not list(settings.index_dir.glob(".tmp-*"))


def test_strict_stops_embedding_at_the_first_error_and_still_reports_all(content_copy, tmp_path, tiny_encoder,
                                                                         monkeypatch):
    import indexer.build

    for name in ("bad-yaml.md", "latin1.md"):
        shutil.copy(FIXTURES / "broken" / name, content_copy / f"0-{name}")  # sorted first: parsed first
    monkeypatch.setattr(indexer.build, "BATCH_PASSAGES", 1)
    settings = settings_for(content_copy, tmp_path)
    with pytest.raises(ContentError, match="2 content errors"):
        build_index(settings, tiny_encoder, strict=True, progress=False)
    assert tiny_encoder.calls == 0 and store.current_id(settings.index_dir) is None
    assert not list(settings.index_dir.glob(".tmp-*"))


def test_a_full_build_with_nothing_to_publish_keeps_the_version_in_service(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)
    good = build_index(settings, tiny_encoder, progress=False).build_id
    for page in content_copy.rglob("*.md"):
        page.write_text("---\ntitle: Later\nstatus: draft\n---\n\nNot yet.\n")
    encoder = CountingLoads(tiny_encoder)
    with pytest.raises(ContentError, match="no publishable articles"):
        build_index(settings, encoder, full=True, progress=False)
    assert store.current_id(settings.index_dir) == good and not list(settings.index_dir.glob(".tmp-*"))
    assert encoder.dim_reads == 0
