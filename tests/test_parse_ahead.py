"""ParsedFiles: a worker process parses ahead, in order, once each; the build's process takes over when it cannot."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from indexer import parse_ahead
from indexer.parse import discover
from indexer.parse_ahead import ParsedFiles, parse_file

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """The fixture knowledge base plus a file that fails to parse and a draft."""
    root = tmp_path / "content"
    shutil.copytree(FIXTURES / "content", root)
    shutil.copy(FIXTURES / "broken" / "bad-yaml.md", root / "bad-yaml.md")
    (root / "draft.md").write_text("---\ntitle: Draft\nstatus: draft\n---\n\nNot yet.\n", encoding="utf-8")
    return root


@pytest.fixture
def started(monkeypatch) -> list[subprocess.Popen]:
    """Every worker process started, recorded."""
    processes: list[subprocess.Popen] = []
    original = subprocess.Popen

    def record(*args, **kwargs):
        processes.append(original(*args, **kwargs))
        return processes[-1]

    monkeypatch.setattr(parse_ahead.subprocess, "Popen", record)
    return processes


def parse_all(paths: list[Path], root: Path, ahead: bool) -> list:
    with closing(ParsedFiles(paths, root, 180, 40, ahead=ahead)) as parsed:
        return list(parsed)


def worker_script(monkeypatch, body: str) -> None:
    """Run `body` as the worker instead of indexer.parse_ahead: it gets the request as `request`."""
    script = ("import pickle, sys, time\nfrom indexer.parse_ahead import parse_file\n"
              "request = pickle.load(sys.stdin.buffer)\nout = sys.stdout.buffer\n" + body)
    monkeypatch.setattr(parse_ahead, "WORKER_COMMAND", (sys.executable, "-c", script))


def test_the_worker_parses_every_file_as_the_build_process_would(content, monkeypatch, started, caplog):
    monkeypatch.setattr(parse_ahead, "FILES_PER_MESSAGE", 3)
    paths = discover(content)
    expected = [parse_file(path, content, 180, 40) for path in paths]
    assert any(p.article is None for p in expected) and any(p.passages == () and p.article for p in expected)
    with caplog.at_level(logging.WARNING, logger="kb.build"):
        assert parse_all(paths, content, ahead=True) == expected
    assert len(started) == 1 and started[0].returncode is not None  # one worker, stopped at the end
    assert not caplog.records  # it delivered everything: the build's process parsed nothing itself


def test_without_ahead_no_worker_starts(content, started):
    paths = discover(content)
    assert parse_all(paths, content, ahead=False) == [parse_file(p, content, 180, 40) for p in paths]
    assert started == []


def test_a_worker_that_cannot_start_leaves_the_parsing_to_the_build(content, monkeypatch, caplog):
    monkeypatch.setattr(parse_ahead, "WORKER_COMMAND", (str(content / "no-such-python"),))
    paths = discover(content)
    with caplog.at_level(logging.WARNING, logger="kb.build"):
        files = ParsedFiles(paths, content, 180, 40, ahead=True)
        assert not files.ahead
        assert list(files) == [parse_file(p, content, 180, 40) for p in paths]
    assert "no parsing worker" in caplog.text


def test_a_worker_that_dies_midway_leaves_the_rest_to_the_build(content, monkeypatch, started, caplog):
    monkeypatch.setattr(parse_ahead, "FILES_PER_MESSAGE", 2)
    worker_script(monkeypatch, "per, root, mx, mn, paths = request\n"
                               "pickle.dump((0, [parse_file(p, root, mx, mn) for p in paths[:per]]), out)\n"
                               "out.flush()\nsys.exit(3)\n")
    paths = discover(content)
    with caplog.at_level(logging.WARNING, logger="kb.build"):
        assert parse_all(paths, content, ahead=True) == [parse_file(p, content, 180, 40) for p in paths]
    assert "the parsing worker stopped (it exited with status 3)" in caplog.text


def test_a_worker_that_sends_garbage_leaves_the_rest_to_the_build(content, monkeypatch, caplog):
    worker_script(monkeypatch, "out.write(b'not a pickle'); out.flush()\n")
    paths = discover(content)
    with caplog.at_level(logging.WARNING, logger="kb.build"):
        assert parse_all(paths, content, ahead=True) == [parse_file(p, content, 180, 40) for p in paths]
    assert "the parsing worker stopped (UnpicklingError" in caplog.text


def test_a_starved_worker_is_not_waited_for_and_its_late_files_are_dropped(content, monkeypatch, started):
    """A worker that gets (almost) no CPU: the build waits PATIENCE_SECONDS once, parses the files itself, and the
    worker's late answers for files already parsed are not yielded a second time."""
    monkeypatch.setattr(parse_ahead, "FILES_PER_MESSAGE", 2)
    monkeypatch.setattr(parse_ahead, "PATIENCE_SECONDS", 0.3)
    worker_script(monkeypatch, "per, root, mx, mn, paths = request\n"
                               "for i, s in enumerate(range(0, len(paths), per)):\n"
                               "    time.sleep(0.5)\n"
                               "    pickle.dump((i, [parse_file(p, root, mx, mn) for p in paths[s:s + per]]), out)\n"
                               "    out.flush()\n")
    paths = discover(content)
    began = time.monotonic()
    assert parse_all(paths, content, ahead=True) == [parse_file(p, content, 180, 40) for p in paths]
    assert time.monotonic() - began < 0.3 * 3  # waited once, not once per message (the worker takes 0.5 s each)
    assert started[0].returncode is not None  # and the slow worker was stopped


def test_closing_early_stops_the_worker(content, started):
    paths = discover(content)
    files = ParsedFiles(paths, content, 180, 40, ahead=True)
    assert next(iter(files)) == parse_file(paths[0], content, 180, 40)
    files.close()
    assert not files.ahead and started[0].returncode is not None


def test_the_worker_runs_below_the_build_priority(content, monkeypatch, tmp_path):
    """The worker takes what CPU the encoder leaves: nice 19."""
    report = tmp_path / "nice"
    worker_script(monkeypatch, "import os\nfrom indexer.parse_ahead import lower_priority\nlower_priority()\n"
                               f"open({str(report)!r}, 'w').write(str(os.nice(0)))\n")
    parse_all(discover(content), content, ahead=True)
    assert report.read_text() == "19"


def test_a_worker_whose_build_was_killed_exits_without_a_traceback(tmp_path):
    """The build's process SIGKILLed while its worker waits to send more: the worker's next write finds the pipe
    closed, and it ends quietly (its stderr is the build's, a service log)."""
    import signal
    import textwrap

    root = tmp_path / "content"
    root.mkdir()
    for n in range(300):  # about 1 MB of messages: more than the pipe holds, so the worker is still writing
        (root / f"a{n:03}.md").write_text(f"# Article {n}\n\n" + "Words of a paragraph. " * 150, encoding="utf-8")
    build = textwrap.dedent(f"""
        import os, signal, sys
        from indexer import parse_ahead
        from indexer.parse import discover
        from pathlib import Path
        files = parse_ahead.ParsedFiles(discover(Path({str(root)!r})), Path({str(root)!r}), 180, 40, ahead=True)
        parsed = iter(files)
        first = next(parsed)
        print(files._worker.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    process = subprocess.Popen([sys.executable, "-c", build], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=parse_ahead.PACKAGE_ROOT, text=True)
    out, err = process.communicate(timeout=60)  # returns when the worker, which shares stderr, has ended too
    assert process.returncode == -signal.SIGKILL and out.strip().isdigit(), err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
