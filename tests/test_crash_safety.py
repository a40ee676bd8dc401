"""Crash safety: SIGKILL the indexer at 20 random source lines of a build (writing files, switching CURRENT, ...);
every time the service answers from a complete version, the next build succeeds and leaves no debris."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.index.faiss_sqlite import store
from kb.settings import load_settings
from search.app import create_app

from tests.conftest import wait_until

REPO = Path(__file__).parent.parent
OUTPUT = REPO / "test-output" / "crash-safety.json"
SEED = int(os.environ.get("KB_CRASH_SEED", "20261123"))

# Runs one incremental build with TinyEncoder under a line tracer over kb/store.py, indexer/build.py and
# indexer/cache.py. With a kill point (file, line, occurrence) it SIGKILLs itself on reaching that line;
# without one it writes every executed line (function, count) to a JSON file.
CHILD = textwrap.dedent("""
    import json, os, signal, sys, threading
    sys.path.insert(0, {repo!r})
    from tests.conftest import TinyEncoder
    from indexer import build, cache
    from kb.index.faiss_sqlite import delta, store
    from kb.settings import load_settings

    targets = {{os.path.realpath(m.__file__) for m in (build, cache, delta, store)}}
    kill = {kill!r}
    seen = {{}}

    def local(frame, event, arg):
        if event == "line":
            key = (frame.f_code.co_filename, frame.f_lineno)
            count = seen.get(key, (None, 0))[1] + 1
            seen[key] = (frame.f_code.co_name, count)
            if kill and [key[0], key[1], count] == kill:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def tracer(frame, event, arg):
        return local if os.path.realpath(frame.f_code.co_filename) in targets else None

    sys.settrace(tracer)
    threading.settrace(tracer)
    settings = load_settings({{}}, content_dir={content!r}, index_dir={index!r})
    build.build_index(settings, TinyEncoder(), progress=False)
    sys.settrace(None)
    if not kill:
        with open({trace!r}, "w") as out:
            json.dump([[f, line, fn, n] for (f, line), (fn, n) in seen.items()], out)
""")


def run_child(content: Path, index: Path, trace: Path, kill: list | None) -> int:
    script = CHILD.format(repo=str(REPO), kill=kill, content=str(content), index=str(index), trace=str(trace))
    return subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=120).returncode


def edit(content: Path, n: int) -> str:
    token = f"crashprobe{n}x"
    path = content / "Teams/teams-microphone-not-working.md"
    path.write_text(path.read_text() + f"\n\n## Note {n}\n\nThe {token} setting fixes it.\n")
    return token


WRITING = {"write_version", "write_delta_version", "publish", "fsync_path", "verify_version"}


def pick_kill_points(trace: list, rng: random.Random) -> list[list]:
    """20 distinct lines: 3 in switch_current, 5 while the version's files are written and published,
    12 anywhere else in the build; a random occurrence of each."""
    groups: dict[str, list] = {"switch": [], "write": [], "other": []}
    for path, line, function, count in trace:
        group = "switch" if function == "switch_current" else "write" if function in WRITING else "other"
        groups[group].append((path, line, function, count))
    chosen = []
    for group, n in (("switch", 3), ("write", 5), ("other", 12)):
        chosen += rng.sample(sorted(groups[group]), n)
    return [[path, line, rng.randint(1, count), function] for path, line, function, count in chosen]


def test_sigkill_at_20_random_points_never_breaks_the_service_or_the_next_build(content_copy, tmp_path,
                                                                                  tiny_encoder):
    index = tmp_path / "index"
    settings = load_settings({}, content_dir=content_copy, index_dir=index, feedback_db=tmp_path / "fb.sqlite",
                             usage_db=tmp_path / "usage.sqlite", reload_poll_seconds=0.05)
    build_index(settings, tiny_encoder, progress=False)
    trace_file = tmp_path / "trace.json"
    edit(content_copy, 0)
    assert run_child(content_copy, index, trace_file, None) == 0
    points = pick_kill_points(json.loads(trace_file.read_text()), random.Random(SEED))
    rounds = []
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        for n, (path, line, occurrence, function) in enumerate(points, 1):
            token = edit(content_copy, n)
            before = store.current_id(index)
            started = time.perf_counter()
            code = run_child(content_copy, index, trace_file, [path, line, occurrence])
            assert code == -signal.SIGKILL, f"the build was not killed at {function} line {line}"
            after = store.current_id(index)
            # CURRENT names a complete version: the previous one or, killed after the switch, the new one.
            version = store.open_current(index, tiny_encoder.model_id)
            assert version.manifest["counts"]["articles"] == 8
            # The service follows CURRENT (it checks every 0.05 s): wait until it serves that version.
            health = wait_until(lambda: (h := client.get("/healthz").json())["index_version"] == after and h,
                                10, lambda: f"the service never followed CURRENT to {after}")
            assert health["status"] == "ok", health
            response = client.get("/api/search", params={"q": "outlook password"})
            assert response.status_code == 200 and response.json()["results"]
            # Restart: the next build cleans up, succeeds, and the edit becomes searchable.
            report = build_index(settings, tiny_encoder, progress=False)
            assert not list(index.glob(".tmp-*"))
            store.open_current(index, tiny_encoder.model_id)
            client.app.state.kb.refresh()
            found = client.get("/api/search", params={"q": token, "mode": "lexical"}).json()["results"]
            assert [hit["id"] for hit in found] == ["Teams/teams-microphone-not-working"]
            rounds.append({"function": function, "file": Path(path).name, "line": line, "occurrence": occurrence,
                           "current_moved": after != before, "next_build_wrote": report.build_id is not None,
                           "seconds": round(time.perf_counter() - started, 3)})
    assert len(rounds) == 20 and len({(r["file"], r["line"]) for r in rounds}) == 20
    assert sum(r["function"] == "switch_current" for r in rounds) == 3
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps({"seed": SEED, "kills": len(rounds),
                                  "killed_after_switch": sum(r["current_moved"] for r in rounds),
                                  "rounds": rounds}, indent=2))
