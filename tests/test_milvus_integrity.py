"""Milvus versions' integrity record (kb/index/milvus/contents.py) on real milvus-lite: a version records its row
counts and a digest of its passages' (key, passage_id, text_hash) and articles' (id, source_hash) in its sealed
manifest; opening it reads the collections back and compares. Rows deleted, inserted or changed behind its back, or
an edited manifest, are damage (IndexDamaged naming the version), and the service falls back as it does for a
damaged FAISS version; a version written before the record opens as before."""
from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import pytest

from kb import integrity
from kb.errors import IndexDamaged
from kb.index import open_backend
from kb.index.milvus import contents
from kb.index.milvus.collections import DATA_SUFFIX, LEXICAL_SUFFIX, PREFIX, REGISTRY, literal
from kb.index.records import TermQuery
from search.versions import Versions
from tests.test_index_contract import ARTICLES, DIM, MODEL, PASSAGES, VECTORS, needs_engine


@pytest.fixture
def backend(tmp_path):
    needs_engine("milvus")
    return open_backend(tmp_path / "index", "milvus")


def write(backend, n_passages: int = len(PASSAGES)) -> str:
    name = backend.new_name()
    owners = {p.article_id for p in PASSAGES[:n_passages]}
    backend.write(name, [a for a in ARTICLES if a.id in owners], PASSAGES[:n_passages], VECTORS[:n_passages],
                  {"model": MODEL, "dim": DIM, "content_hash": "c"})
    return name


def replace_manifest(backend, name: str, manifest: dict) -> None:
    """Another manifest recorded for `name` in the registry (as an older build, or a hand edit, left it)."""
    backend.client.delete(REGISTRY, filter=f'kind == "manifest" and owner == {literal(name)}')
    backend._register(name, manifest)


def passage_rows(backend, name: str, keys: list[int]) -> list[dict]:
    collection = backend.client.describe_collection(PREFIX + name)
    fields = [f["name"] for f in collection["fields"]]
    return backend.client.query(PREFIX + name, filter=f"key in {keys}", output_fields=fields)


def test_a_written_version_records_its_digest_sealed_and_opens_verified(backend):
    name = write(backend)
    manifest = backend.manifest(name)
    assert set(manifest[contents.DIGEST]) == {"passages", "articles"}
    assert manifest[integrity.SEAL] == integrity.manifest_checksum(manifest)
    with backend.open(name, MODEL) as reader:
        assert reader.sealed and reader.verify() is True
        assert {a.id for a in reader.articles()} == {a.id for a in ARTICLES}  # kept from the check's read
        assert reader.articles(["outlook/password"])[0].source_hash == "h1"


def test_the_digest_is_what_was_written_whatever_the_batches(backend):
    """One batch, or a base plus a batch: the same passages and articles, the same digest."""
    first = write(backend)
    with backend.open(first, MODEL) as base:
        second = backend.new_name()
        with backend.writer(second, DIM, base=base, remove={"teams/error"}) as writer:
            writer.add([a for a in ARTICLES if a.id == "teams/error"], PASSAGES[4:], VECTORS[4:])
            writer.commit({"model": MODEL, "dim": DIM})
    assert backend.manifest(first)[contents.DIGEST] == backend.manifest(second)[contents.DIGEST]


@pytest.mark.parametrize("change", ["delete", "insert"])
def test_rows_deleted_or_inserted_behind_its_back_are_damage(backend, change):
    name = write(backend)
    if change == "delete":
        backend.client.delete(PREFIX + name, filter="key in [1, 4]")
        expected = f"holds {len(PASSAGES) - 2} passages, its manifest says {len(PASSAGES)}"
    else:
        row = passage_rows(backend, name, [0])[0]
        backend.client.insert(PREFIX + name, [{**row, "key": 99, "passage_id": "stray#"}])
        expected = f"holds {len(PASSAGES) + 1} passages, its manifest says {len(PASSAGES)}"
    with pytest.raises(IndexDamaged, match=f"index version {name} is damaged: .*{expected}"):
        backend.open(name, MODEL)


def test_a_lexical_row_deleted_behind_its_back_is_damage(backend):
    """The BM25 weights (kb_<name>__lexical) are counted at open against the sealed manifest as the passages are."""
    name = write(backend)
    assert backend.manifest(name)["lexicon"]["rows"] == len(PASSAGES)  # every passage holds a term
    backend.client.delete(PREFIX + name + LEXICAL_SUFFIX, filter="key in [3]")
    with pytest.raises(IndexDamaged, match=f"index version {name} is damaged: its collection "
                                           f".*__lexical holds {len(PASSAGES) - 1} rows, its manifest says "
                                           f"{len(PASSAGES)}"):
        backend.open(name, MODEL)


def test_a_killed_build_leaves_collections_that_remove_leftovers_drops(backend):
    """A writer that never commits nor aborts (the builder was killed) leaves its three collections; remove_leftovers
    drops each of them, also one left alone, and keeps the complete version."""
    kept = write(backend)
    killed = backend.new_name()
    writer = backend.writer(killed, DIM)
    writer.add(ARTICLES, PASSAGES, VECTORS)
    stray = backend.new_name()
    backend.client.create_collection(PREFIX + stray + LEXICAL_SUFFIX, dimension=2)
    assert {PREFIX + killed + s for s in ("", DATA_SUFFIX, LEXICAL_SUFFIX)} <= set(backend.client.list_collections())
    assert backend.remove_leftovers() == sorted([killed, stray])
    assert {c for c in backend.client.list_collections() if killed in c or stray in c} == set()
    assert backend.list() == [kept] and backend.remove_leftovers() == []
    writer.abort()  # what a killed process' exit does to its temporary file
    with backend.open(kept, MODEL) as reader:
        assert reader.lexical_search(TermQuery(("password",)), 10)


def test_a_passage_changed_behind_its_back_fails_the_digest_found_by_verify_too(backend):
    """Same row count, another text hash: only the digest sees it, at open and by the service's periodic verify."""
    name = write(backend)
    reader = backend.open(name, MODEL)
    row = passage_rows(backend, name, [2])[0]
    backend.client.upsert(PREFIX + name, [{**row, "text_hash": "edited"}])
    with pytest.raises(IndexDamaged, match=f"{name} is damaged: the \\(key, passage_id, text_hash\\) of its "
                                           f"{len(PASSAGES)} passages"):
        backend.open(name, MODEL)
    with pytest.raises(IndexDamaged, match=name):
        reader.verify()
    reader.close()


def test_an_article_changed_behind_its_back_fails_the_digest(backend):
    name = write(backend)
    data = PREFIX + name + DATA_SUFFIX
    (row,) = backend.client.query(data, filter='kind == "article" and owner == "outlook/ndr"',
                                  output_fields=["seq", "kind", "owner", "part", "data", "v"])
    record = json.loads(row["data"])
    backend.client.upsert(data, [{**row, "data": json.dumps({**record, "source_hash": "other"})}])
    with pytest.raises(IndexDamaged, match=f"{name} is damaged: the \\(id, source_hash\\) of its 4 articles"):
        backend.open(name, MODEL)


def test_an_edited_manifest_fails_its_seal(backend):
    name = write(backend)
    manifest = backend.manifest(name)
    edited = {**manifest, "counts": {"articles": 4, "passages": 5}}  # to hide a lost row, say
    replace_manifest(backend, name, edited)
    with pytest.raises(IndexDamaged, match=f"{name} is damaged: its manifest in the registry does not match its "
                                           "checksum"):
        backend.open(name, MODEL)
    replace_manifest(backend, name, {k: v for k, v in manifest.items() if k != integrity.SEAL})  # seal cut off
    with pytest.raises(IndexDamaged, match="does not match its checksum"):
        backend.open(name, MODEL)


def test_a_version_written_before_the_record_opens_as_before(backend, caplog):
    name = write(backend)
    old = {k: v for k, v in backend.manifest(name).items() if k not in (integrity.SEAL, contents.DIGEST)}
    replace_manifest(backend, name, old)
    with backend.open(name, MODEL) as reader:
        assert not reader.sealed and reader.verify() is False and reader.size == len(PASSAGES)
    versions = Versions(backend, backend.index_dir, MODEL, lambda v: SimpleNamespace(version=v))
    with caplog.at_level(logging.WARNING, logger="kb.app"):
        assert versions.refresh() and versions.serving == name
    assert f"index version {name} has no checksums" in caplog.text
    assert versions.integrity()["checksums"] == "absent"
    backend.client.delete(PREFIX + name, filter="key in [0]")  # its row count is still checked
    with pytest.raises(IndexDamaged, match="holds 5 passages"):
        backend.open(name, MODEL)
    versions.searcher.version.close()


def test_the_service_falls_back_from_a_damaged_version_as_for_faiss(backend, caplog):
    """The version in service checks; the next one is damaged behind its back: it is refused, reported (healthz
    reads `failed` and `load_error`), and the intact one answers; the periodic verify then finds the one in service
    damaged too and, with nothing intact older, serves nothing rather than wrong answers."""
    old = write(backend, 4)
    versions = Versions(backend, backend.index_dir, MODEL, lambda v: SimpleNamespace(version=v))
    with caplog.at_level(logging.WARNING, logger="kb.app"):
        assert versions.refresh() and versions.serving == old
        assert versions.integrity()["checksums"] == "verified" and versions.integrity()["verified_at"]
        new = write(backend)
        backend.client.delete(PREFIX + new, filter="key in [5]")
        assert not versions.refresh()
    assert versions.serving == old and new in versions.failed and new in versions.failed[new]
    assert versions.load_error.code == "index_damaged" and "holds 5 passages" in versions.load_error.message
    assert "has no checksums" not in caplog.text
    row = passage_rows(backend, old, [0])[0]
    backend.client.upsert(PREFIX + old, [{**row, "passage_id": "moved#"}])
    assert versions.verify(force=True) is False
    assert versions.serving is None and old in versions.failed and "(key, passage_id, text_hash)" in versions.failed[old]


def test_a_damaged_current_version_falls_back_to_the_newest_intact_one(backend):
    old = write(backend, 4)
    new = write(backend)
    backend.client.delete(PREFIX + new, filter="key in [0, 1, 2]")
    versions = Versions(backend, backend.index_dir, MODEL, lambda v: SimpleNamespace(version=v))
    assert versions.refresh() and versions.serving == old and versions.current == new and new in versions.failed
    versions.searcher.version.close()


@pytest.mark.model
def test_healthz_reports_a_damaged_milvus_version_and_the_intact_one_answers(tmp_path, embedder):
    """The whole service on milvus-lite: two builds, rows of the newer deleted behind its back; /healthz says
    `degraded` with the damage and the older version answers, as tests/test_integrity.py shows for FAISS."""
    from fastapi.testclient import TestClient

    from indexer.build import build_index
    from search.app import create_app
    from tests.conftest import FIXTURE_CONTENT
    from tests.test_integrity import settings_for

    needs_engine("milvus")
    shutil.copytree(FIXTURE_CONTENT, tmp_path / "content")
    settings = settings_for(tmp_path, index_backend="milvus")
    old = build_index(settings, embedder, progress=False).build_id
    (tmp_path / "content" / "Teams" / "quokka.md").write_text(
        "---\ntitle: Quokka headset pairing\n---\n\nThe quokkaflux headset pairs with Teams after an update.\n")
    new = build_index(settings, embedder, progress=False).build_id
    backend = open_backend(tmp_path / "index", "milvus")
    backend.client.delete(PREFIX + new, filter="key in [0, 1]")
    with TestClient(create_app(settings, encoder=embedder), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "degraded" and body["index_version"] == old
        error = body["reload"]["error"]
        assert error["code"] == "index_damaged" and new in error["message"] and "kb index" in error["message"]
        assert new in body["reload"]["failed_versions"]
        assert body["integrity"]["checksums"] == "verified" and body["integrity"]["current"] == new
        found = client.get("/api/search", params={"q": "teams microphone not working", "k": 3})
        assert found.status_code == 200 and found.json()["results"][0]["id"] == "Teams/teams-microphone-not-working"
        lexical = client.get("/api/search", params={"q": "quokkaflux", "mode": "lexical"}).json()["results"]
        assert lexical == []  # the old version: the new article is not in it


def test_verify_with_milvus_out_of_reach_checks_nothing_and_raises_nothing(tmp_path):
    """The periodic verify of a Milvus that stops answering (SIGSTOP): False (nothing checked, so `verified_at`
    stays), no IndexUnavailable up to the follower's loop; thawed, it verifies again."""
    import time

    from kb.index.milvus.connection import FAIL_FAST_SECONDS
    from tests.milvus_server import milvus_lite_server

    with milvus_lite_server(tmp_path / "milvus") as server:
        backend = open_backend(tmp_path / "index", "milvus", server.uri, milvus_timeout=1)
        name = write(backend)
        with backend.open(name, MODEL) as reader:
            server.freeze()
            assert reader.verify() is False
            server.thaw()
            time.sleep(FAIL_FAST_SECONDS)
            assert reader.verify() is True
