"""The starter knowledge base (content/) is healthy for `kb check`, and content/SOURCE.md accounts for every file."""
import json
import re
from pathlib import Path

from cli.main import main

CONTENT = Path(__file__).parent.parent / "content"
TODAY = "2026-12-15"  # shortly after the review dates set on 2026-12-02; KB_STALE_DAYS is 180
# A heading with nothing under it in Microsoft's own article, kept as copied (see content/SOURCE.md).
UPSTREAM_EMPTY_SECTION = ("empty_section", "Exchange/ExchangeOnline/outlook-issues/cannot-set-up-profile-autodiscover.md")


def test_kb_check_finds_no_errors_and_nothing_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KB_USAGE_DB", str(tmp_path / "usage.sqlite"))
    code = main(["check", "--content", str(CONTENT), "--index-dir", str(tmp_path / "no-index"), "--today", TODAY,
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == 0, [f for f in report["findings"] if f["severity"] == "error"]
    assert report["articles"] == 55
    assert [(f["kind"], f["path"]) for f in report["findings"]] == [UPSTREAM_EMPTY_SECTION]


def test_source_md_lists_every_file_and_nothing_else():
    source = (CONTENT / "SOURCE.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^- `([^`]+\.md)`", source, re.M))
    on_disk = {p.relative_to(CONTENT).as_posix() for p in CONTENT.rglob("*.md")} - {"SOURCE.md"}
    assert listed - {"SOURCE.md"} == on_disk
    copied = source.split("## Written for this project")[0]
    for path in re.findall(r"^- `([^`]+\.md)`", copied, re.M):  # Microsoft's articles keep Microsoft's front matter
        assert "\nms.date:" in (CONTENT / path).read_text(encoding="utf-8") or path.startswith("includes/")
