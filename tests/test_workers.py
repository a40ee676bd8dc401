"""`kb serve --workers N`: settings reach the workers as KB_* variables, both workers answer, one watches and builds."""
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_server, wait_for_inotify_watches
from indexer.build import build_index
from kb.settings import load_settings, to_environment
from search.app import claim_watch

ARTICLE = "Teams/teams-microphone-not-working"
WORD = "quokkafirmware"


def test_settings_survive_the_trip_through_the_environment(tmp_path):
    settings = load_settings({"KB_WATCH": "false", "KB_LEXICAL_WEIGHT": "0.2", "KB_ADMIN_TOKEN": "s3cret"},
                             content_dir=tmp_path / "c", index_dir=tmp_path / "i", port=8123, workers=3)
    environment = to_environment(settings)
    assert environment["KB_WATCH"] == "false" and environment["KB_PORT"] == "8123"
    assert load_settings(environment) == settings


def test_one_process_claims_the_watch(tmp_path):
    first = claim_watch(tmp_path / "index")
    assert first is not None and claim_watch(tmp_path / "index") is None
    first.close()
    again = claim_watch(tmp_path / "index")
    assert again is not None
    again.close()


def healthz_pids(base: str, want: int = 2, timeout: float = 180) -> dict[int, dict]:
    """/healthz of each worker that answered, by pid (new connection per request, 8 at a time), asked until
    `want` workers have answered: the first /healthz 200 only says one worker is up; the others may still be
    loading the model."""
    def one(_):
        body = httpx.get(base + "/healthz", timeout=10).json()
        return body["pid"], body

    seen: dict[int, dict] = {}
    deadline = time.time() + timeout
    with ThreadPoolExecutor(8) as pool:
        while len(seen) < want and time.time() < deadline:
            seen.update(pool.map(one, range(16)))
            if len(seen) < want:
                time.sleep(0.5)
    return seen


@pytest.mark.model
def test_two_workers_answer_and_one_of_them_builds(content_copy, tmp_path, embedder):
    settings = load_settings({}, content_dir=content_copy, index_dir=tmp_path / "index")
    build_index(settings, embedder, progress=False)
    def versions() -> list[str]:
        return sorted(p.name for p in settings.index_dir.iterdir() if (p / "manifest.json").exists())

    first = versions()
    env = {"KB_RELOAD_POLL_SECONDS": "0.2", "KB_WATCH_DEBOUNCE_MS": "100", "KB_LOG_LEVEL": "warning"}
    with running_server(settings.index_dir, tmp_path, env=env,
                        args=("--content", str(content_copy), "--watch", "--workers", "2")) as (base, _):
        workers = healthz_pids(base)
        assert len(workers) == 2, workers
        assert sorted(w["reload"]["watching"] for w in workers.values()) == [False, True]
        ticket = {"subject": "Teams microphone", "body": "My microphone does not work in Teams meetings", "k": 2}
        answers = httpx.post(base + "/api/suggest", json=ticket, timeout=30)
        assert answers.status_code == 200 and answers.json()["articles"][0]["id"] == ARTICLE

        wait_for_inotify_watches(content_copy)  # the watching worker's watches: no edit from here on is missed
        path = content_copy / f"{ARTICLE}.md"
        path.write_text(path.read_text() + f"\n\n## Firmware\n\nThe {WORD} update fixes the headset.\n")
        deadline = time.time() + 60
        while True:  # every worker (each connection lands on either) finds the new word
            found = [httpx.get(base + "/api/search", params={"q": WORD, "mode": "lexical"}, timeout=10).json()
                     for _ in range(10)]
            if all(body["results"] and body["results"][0]["id"] == ARTICLE for body in found):
                break
            assert time.time() < deadline, "the edit never became searchable on every worker"
            time.sleep(0.2)
        workers = healthz_pids(base)
        assert len(workers) == 2 and len({w["index_version"] for w in workers.values()}) == 1
    assert len(versions()) == len(first) + 1  # one build for one change, not one per worker
    log = Path(tmp_path / "server.log").read_text()
    assert "another build is already running" not in log
