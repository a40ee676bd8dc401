"""Index integrity in the service: a damaged file of any kind is reported as damage and an intact version answers
(or 503 says why), never wrong answers and never a crash; damage found while serving; replaced versions release
their files; failed builds (a full disk) show in /healthz. Real model and real FAISS."""
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer import failures
from indexer.build import build_index
from kb.index.faiss_sqlite import store
from kb.errors import DiskFull
from kb.settings import load_settings
from search.app import create_app
from tests.conftest import FIXTURE_CONTENT, running_server

pytestmark = pytest.mark.model

NEW_WORD = "quokkaflux"  # only in the newer version
HTML = {"accept": "text/html"}


def settings_for(root, **extra):
    return load_settings({}, content_dir=root / "content", index_dir=root / "index",
                         feedback_db=root / "fb.sqlite", usage_db=root / "usage.sqlite",
                         analytics_db=root / "analytics.sqlite", **{"reload_poll_seconds": 0, **extra})


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, embedder):
    """An index folder with two versions built by the real model: old (the fixture articles) and new (plus one
    article with NEW_WORD), CURRENT naming new."""
    root = tmp_path_factory.mktemp("integrity")
    shutil.copytree(FIXTURE_CONTENT, root / "content")
    settings = settings_for(root)
    old = build_index(settings, embedder, progress=False).build_id
    (root / "content" / "Teams" / "quokka.md").write_text(
        f"---\ntitle: Quokka headset pairing\n---\n\nThe {NEW_WORD} headset pairs with Teams after an update.\n")
    new = build_index(settings, embedder, progress=False).build_id
    return root, old, new


@pytest.fixture
def copy(two_versions, tmp_path):
    root, old, new = two_versions
    shutil.copytree(root / "content", tmp_path / "content")
    shutil.copytree(root / "index", tmp_path / "index", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path, old, new


def scribble(path, offset, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def damage(index_dir, build_id, target) -> None:
    """What the issue's probe did to each file, sizes unchanged (a truncated file is also tested in test_store)."""
    version = index_dir / build_id
    if target == "manifest":
        text = (version / store.MANIFEST).read_text()
        (version / store.MANIFEST).write_text(text.replace('"passages":', '"passagez":', 1))
    elif target == "meta.sqlite":  # the b-tree header of page 2: this stopped the service from starting
        scribble(version / store.META, 4096, b"\xff" * 8)
    elif target == "vectors.faiss":  # floats of 3.4e38 in the middle of the vectors: cosines of 1e37
        size = (version / store.VECTORS).stat().st_size
        scribble(version / store.VECTORS, size // 2, b"\x7f" * 4096)
    elif target == "CURRENT":
        (index_dir / store.CURRENT).write_bytes(b"\xff\xfe\x00 scribbled")


def assert_intact_answers(client, new_word: bool = False):
    """Right answers with cosines, not 1e37, from the intact version (the new article only if it is the new one)."""
    found = client.get("/api/search", params={"q": "teams microphone not working", "k": 3})
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["id"] == "Teams/teams-microphone-not-working"
    assert found.json()["results"][0]["score"] <= 1.5  # cosines, not 1e37
    found = client.get("/api/search", params={"q": NEW_WORD, "mode": "lexical"}).json()["results"]
    assert [hit["id"] for hit in found] == (["Teams/quokka"] if new_word else [])
    suggest = client.post("/api/suggest", json={"subject": "Outlook password", "body": "Outlook keeps asking for "
                                                "my password every few minutes", "k": 2})
    assert suggest.status_code == 200 and suggest.json()["articles"][0]["id"] == "Outlook/outlook-password-prompt"
    assert client.get("/", params={"q": "outlook password"}, headers=HTML).status_code == 200


@pytest.mark.parametrize("target", ["manifest", "meta.sqlite", "vectors.faiss", "CURRENT"])
def test_damage_is_reported_and_the_newest_intact_version_answers(copy, embedder, target):
    """The version CURRENT names is damaged: the older one answers. CURRENT itself is damaged: it names nothing,
    so the newest intact version answers (the new one)."""
    root, old, new = copy
    damage(root / "index", new, target)
    with TestClient(create_app(settings_for(root), encoder=embedder), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "degraded" and body["index_version"] == (new if target == "CURRENT" else old)
        assert body["reload"]["error"]["code"] == "index_damaged"
        where = "CURRENT" if target == "CURRENT" else target
        assert where in body["reload"]["error"]["message"] and "kb index" in body["reload"]["error"]["message"]
        if target == "CURRENT":
            assert body["integrity"]["current"] is None
        else:
            assert body["integrity"]["current"] == new and new in body["reload"]["failed_versions"]
        assert body["integrity"]["checksums"] == "verified" and body["integrity"]["verified_at"]
        assert_intact_answers(client, new_word=target == "CURRENT")


def test_a_build_repairs_a_damaged_current_version(copy, embedder):
    root, old, new = copy
    damage(root / "index", new, "meta.sqlite")
    settings = settings_for(root)
    with TestClient(create_app(settings, encoder=embedder)) as client:
        assert client.get("/healthz").json()["index_version"] == old
        report = build_index(settings, embedder, progress=False)  # `kb index`: the damaged version is not reused
        assert report.build_id not in (old, new) and report.parsed == 9  # a full build
        assert client.app.state.kb.refresh()
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["index_version"] == report.build_id
        found = client.get("/api/search", params={"q": NEW_WORD, "mode": "lexical"}).json()["results"]
        assert [hit["id"] for hit in found] == ["Teams/quokka"]


@pytest.mark.parametrize("target", ["manifest", "meta.sqlite", "vectors.faiss"])
def test_with_no_intact_version_the_service_answers_503_and_says_why(copy, embedder, target):
    root, old, new = copy
    shutil.rmtree(root / "index" / old)
    damage(root / "index", new, target)
    with TestClient(create_app(settings_for(root), encoder=embedder), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["error"]["code"] == "index_damaged"
        assert target in health.json()["error"]["message"]
        for response in (client.get("/api/search", params={"q": "outlook password"}),
                         client.post("/api/suggest", json={"subject": "Outlook password", "body": "asks again"})):
            assert response.status_code == 503 and response.json()["error"]["code"] == "index_damaged"
        page = client.get("/", params={"q": "outlook password"}, headers=HTML)
        assert page.status_code == 503 and str(root) not in page.text


def test_a_damaged_current_version_no_longer_stops_the_service_from_starting(copy):
    """The issue's reproduction over a real process: meta.sqlite damage made `kb serve` exit at start-up."""
    root, old, new = copy
    damage(root / "index", new, "meta.sqlite")
    with running_server(root / "index", root) as (base, _):
        health = httpx.get(base + "/healthz").json()
        assert health["status"] == "degraded" and health["index_version"] == old
        assert health["reload"]["error"]["code"] == "index_damaged"
        found = httpx.get(base + "/api/search", params={"q": "teams microphone", "k": 1}).json()["results"]
        assert found[0]["id"] == "Teams/teams-microphone-not-working"
    assert "Traceback" not in (root / "server.log").read_text()


def test_damage_found_while_serving_takes_the_version_out_of_service(copy, embedder):
    root, old, new = copy
    with TestClient(create_app(settings_for(root), encoder=embedder)) as client:
        assert client.get("/healthz").json()["index_version"] == new
        damage(root / "index", new, "vectors.faiss")  # under the running service
        assert client.app.state.kb.versions.verify(force=True) is False  # what the follower does (next test)
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["index_version"] == old
        assert "vectors.faiss does not match its checksum" in health["reload"]["failed_versions"][new]
        assert_intact_answers(client)


def test_the_follower_rechecks_the_files_in_service(copy, embedder):
    root, old, new = copy
    settings = settings_for(root, reload_poll_seconds=0.05, verify_seconds=0.1)
    with TestClient(create_app(settings, encoder=embedder)) as client:
        damage(root / "index", new, "meta.sqlite")
        state = client.app.state.kb
        for _ in range(200):
            if state.searcher.version.build_id == old:
                break
            threading.Event().wait(0.05)
        assert client.get("/healthz").json()["index_version"] == old


def test_a_version_that_passes_its_checks_but_fails_to_load_is_damage_not_a_crash(copy, embedder, monkeypatch):
    import search.app

    root, old, new = copy

    def searcher(version, encoder, settings):
        if version.build_id == new:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(version, encoder, settings)

    real = search.app.Searcher
    monkeypatch.setattr(search.app, "Searcher", searcher)
    with TestClient(create_app(settings_for(root), encoder=embedder)) as client:
        health = client.get("/healthz").json()
        assert health["index_version"] == old and health["reload"]["error"]["code"] == "index_damaged"
        assert "could not be loaded (DatabaseError" in health["reload"]["error"]["message"]


def test_replaced_versions_release_their_files_over_many_swaps(copy, embedder):
    """Open files stay flat while 30 swaps happen under four clients of the API and the pages, without the garbage
    collector: every file of a replaced version is closed once the requests on it have finished."""
    root, old, new = copy
    settings = settings_for(root)
    index_dir = settings.index_dir

    def index_files() -> list[str]:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return [link for link in links if link.startswith(str(index_dir))]

    with TestClient(create_app(settings, encoder=embedder)) as client:
        state, stop, failed = client.app.state.kb, threading.Event(), []

        def ask(n: int) -> None:
            while not stop.is_set():
                response = client.get("/api/search", params={"q": "teams microphone"}) if n % 2 else \
                    client.get("/", params={"q": "outlook password"}, headers=HTML)
                if response.status_code != 200:
                    failed.append(response.status_code)

        def swaps(count: int) -> None:
            threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]  # within KB_MAX_IN_FLIGHT
            for thread in threads:
                thread.start()
            try:
                for n in range(count):
                    store.switch_current(index_dir, (old, new)[n % 2])
                    assert state.refresh()
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
                stop.clear()

        gc.disable()
        try:
            swaps(2)
            start = len(os.listdir("/proc/self/fd"))
            swaps(30)
            end = len(os.listdir("/proc/self/fd"))
            serving = state.searcher.version.build_id
            stale = [link for link in index_files() if serving not in link]
        finally:
            gc.enable()
    assert failed == []
    assert stale == []  # nothing of a replaced version is open
    assert end - start <= 10, (start, end)  # flat: a connection per request thread at most, to one version


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only); skipped where mounting is not allowed (test_build simulates ENOSPC there)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_fails_the_build_clearly_and_shows_in_healthz(small_disk, tmp_path, embedder):
    shutil.copytree(FIXTURE_CONTENT, tmp_path / "content")
    settings = load_settings({}, content_dir=tmp_path / "content", index_dir=small_disk / "index",
                             feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite",
                             analytics_db=tmp_path / "analytics.sqlite", reload_poll_seconds=0)
    good = build_index(settings, embedder, progress=False).build_id
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    # 128 KB left: less than a version (over 200 KB), but room for the embedding cache's write-ahead log and its index
    # (64 KB), so the build fails writing the version; with less, it fails in the cache, whose log then holds the last
    # bytes and the record below cannot be written (logged; this process's /healthz still says why)
    filler.write_bytes(b"\0" * (free - 128 * 1024))
    page = tmp_path / "content" / "Teams" / "teams-microphone-not-working.md"
    page.write_text(page.read_text() + "\n\n## More\n\nA new paragraph to index.\n")
    with TestClient(create_app(settings, encoder=embedder)) as client:
        job = client.post("/api/admin/reindex").json()["job"]
        client.app.state.kb.jobs.wait(60)
        status = client.get(f"/api/admin/jobs/{job['id']}").json()
        assert status["state"] == "failed" and status["error"]["code"] == "disk_full"
        assert str(settings.index_dir.resolve()) in status["error"]["message"]
        assert store.current_id(settings.index_dir) == good and not list(settings.index_dir.glob(".tmp-*"))
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["index_version"] == good
        assert health["reload"]["failed_build"]["error"]["code"] == "disk_full"
        assert failures.read(settings.index_dir)["error"]["code"] == "disk_full"  # for other processes too
        with pytest.raises(DiskFull, match=str(settings.index_dir.resolve())):  # `kb index` says the same
            build_index(settings, embedder, progress=False)
        filler.unlink()
        job = client.post("/api/admin/reindex").json()["job"]
        client.app.state.kb.jobs.wait(60)
        assert client.get(f"/api/admin/jobs/{job['id']}").json()["state"] == "succeeded"
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["reload"]["failed_build"] is None
        assert health["index_version"] != good


def test_vectors_are_unit_length_in_a_real_build(two_versions):
    root, old, new = two_versions
    for build_id in (old, new):
        with store.open_version(root / "index" / build_id, store.read_manifest(root / "index" / build_id)["model"]) \
                as version:
            matrix = version.vectors()
            assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
            assert json.loads((root / "index" / build_id / store.MANIFEST).read_text())["files"]
