"""FileScan: one file's parse problems and outline; cached by stamp (its own and its includes'), same in workers."""
import os
from pathlib import Path

from indexer import scan as scan_module
from indexer.scan import scan_all, take_inventory


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def touch_later(path: Path, text: str) -> None:
    """Rewrite a file and move its mtime a second on, so that its stamp surely changes."""
    mtime = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))


def kb(tmp_path: Path) -> Path:
    root = tmp_path / "content"
    write(root, "a.md", "---\ntitle: A\n---\nText.\n\n[!INCLUDE[x](includes/x.md)]\n")
    write(root, "b.md", "---\ntitle: B\n---\n## Section\n\nSee [a](a.md#section).\n")
    write(root, "c.md", "---\ntitle: C\n---\n[!INCLUDE[gone](includes/gone.md)]\n")
    write(root, "includes/x.md", "An included sentence.\n")
    return root


def test_inventory_skips_hidden_files_and_knows_folders(tmp_path):
    root = kb(tmp_path)
    write(root, ".git/config", "x")
    write(root, "a.md.swp/.hidden", "x")
    inventory = take_inventory(root)
    assert set(inventory.stamps) == {"a.md", "b.md", "c.md", "includes/x.md"}
    assert inventory.dirs == {"includes", "a.md.swp"} and inventory.lower["includes/x.md"] == "includes/x.md"
    assert not inventory.other_files
    write(root, "media/p.png", "png")
    assert take_inventory(root).other_files


def test_an_include_linked_from_outside_the_content_folder_is_not_read(tmp_path):
    root = kb(tmp_path)
    outside = write(tmp_path, "elsewhere/private.md", "Private text\n")
    (root / "includes" / "private.md").symlink_to(outside)
    (root / "includes" / "alias.md").symlink_to(root / "includes" / "x.md")
    rels = {scan.rel for scan in scan_all(root, take_inventory(root), None, 1, False)}
    assert "includes/private.md" not in rels and "includes/alias.md" in rels


def test_scans_articles_and_includes(tmp_path):
    root = kb(tmp_path)
    scans = {s.rel: s for s in scan_all(root, take_inventory(root), None, 1, False)}
    assert set(scans) == {"a.md", "b.md", "c.md", "includes/x.md"}
    assert scans["a.md"].is_article and scans["a.md"].includes == ("includes/x.md",)
    assert not scans["includes/x.md"].is_article and not scans["includes/x.md"].article_id
    assert [link.target for link in scans["b.md"].outline.links] == ["a.md#section"]
    assert "section" in scans["b.md"].anchors
    assert [p.message for p in scans["c.md"].problems] == ["include not found: includes/gone.md"]


def test_cached_scans_are_reused_until_the_file_or_an_include_changes(tmp_path):
    root, cache = kb(tmp_path), {}
    scan_all(root, take_inventory(root), cache, 1, False)
    first = dict(cache)
    scan_all(root, take_inventory(root), cache, 1, False)
    assert all(cache[rel] is first[rel] for rel in ("a.md", "b.md", "includes/x.md"))
    assert cache["c.md"] is not first["c.md"]  # a missing include may have appeared: always read again
    touch_later(root / "includes/x.md", "A changed sentence.\n")
    scan_all(root, take_inventory(root), cache, 1, False)
    assert cache["a.md"] is not first["a.md"] and cache["includes/x.md"] is not first["includes/x.md"]
    assert cache["b.md"] is first["b.md"]
    (root / "b.md").unlink()
    scan_all(root, take_inventory(root), cache, 1, False)
    assert "b.md" not in cache


def test_worker_processes_give_the_same_scans(tmp_path, monkeypatch):
    root = kb(tmp_path)
    serial = scan_all(root, take_inventory(root), None, 1, False)
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_FILES", 0)
    assert scan_all(root, take_inventory(root), None, 2, False) == serial
