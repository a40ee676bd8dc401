"""Content watching: Markdown changes only, a burst of writes arrives as one batch, a folder that appears with its
articles is reported, stop ends the watch."""
import contextlib
import queue
import shutil
import threading

import pytest

from indexer.watch import is_content_file, watch_content

from tests.conftest import wait_for_inotify_watches


@pytest.mark.parametrize("path, expected", [
    ("/c/Outlook/a.md", True), ("/c/a.markdown", True), ("/c/.a.md.swp", False), ("/c/a.md~", False),
    ("/c/.#a.md", False), ("/c/media/a.png", False), ("/c/.hidden.md", False), ("/c/notes.txt", False),
])
def test_is_content_file(path, expected):
    assert is_content_file(path) is expected


@contextlib.contextmanager
def watching(root):
    """`watch_content(root)` in a thread with 200 ms of quiet time; yields the queue of its batches once every folder
    is watched (from then on no change can be missed); stopped on the way out."""
    batches: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=watch_content, args=(root, batches.put, 200, stop), daemon=True)
    thread.start()
    try:
        wait_for_inotify_watches(root)
        yield batches
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_burst_of_writes_is_one_batch_and_other_files_are_ignored(tmp_path):
    (tmp_path / "sub").mkdir()
    with watching(tmp_path) as batches:
        def relative(batch):
            return {p.removeprefix(str(tmp_path) + "/") for p in batch}

        # The three writes take well under the 200 ms of quiet time that ends a burst: one batch.
        for name in ("a.md", "b.md", "sub/c.md"):
            (tmp_path / name).write_text("# x\n")
        assert relative(batches.get(timeout=10)) == {"a.md", "b.md", "sub/c.md"}
        # Files that are not articles are never reported: had they been, they would come before or with the
        # article written after them, so no wait for "nothing happens" is needed.
        (tmp_path / "image.png").write_bytes(b"x")
        (tmp_path / ".a.md.swp").write_text("x")
        (tmp_path / "d.md").write_text("# d\n")
        assert relative(batches.get(timeout=10)) == {"d.md"}
        (tmp_path / "a.md").unlink()
        assert batches.get(timeout=10) == {str(tmp_path / "a.md")}


def test_a_folder_that_appears_with_articles_is_reported(tmp_path):
    """inotify reports nothing of what a new folder held before its own watch was added: a folder moved in with its
    articles (always), or made and written to at once (a race a soak lost). The folder itself is reported."""
    content, outside = tmp_path / "content", tmp_path / "outside"
    content.mkdir()
    (outside / "moved").mkdir(parents=True)
    (outside / "moved" / "a.md").write_text("# a\n")
    (outside / ".hidden").mkdir()
    with watching(content) as batches:
        shutil.move(outside / ".hidden", content / ".hidden")  # hidden folders are not content: never reported
        shutil.move(outside / "moved", content / "moved")
        assert batches.get(timeout=10) == {str(content / "moved")}
        (content / "made").mkdir()
        (content / "made" / "b.md").write_text("# b\n")
        assert str(content / "made") in batches.get(timeout=10)  # with made/b.md too when its watch came first
