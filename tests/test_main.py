"""The `kb` console script: `kb check` exit codes (0 clean, 1 errors, 2 usage errors), text and JSON output."""
import json

import pytest

from cli.main import main

ARTICLE = "---\ntitle: {title}\nreviewed: 2024-10-01\n---\n# {title}\n\nSee [the other one]({link}).\n"


@pytest.fixture
def content(tmp_path, monkeypatch):
    monkeypatch.setenv("KB_USAGE_DB", str(tmp_path / "usage.sqlite"))
    root = tmp_path / "content"
    root.mkdir()
    (root / "a.md").write_text(ARTICLE.format(title="A", link="b.md"), encoding="utf-8")
    (root / "b.md").write_text(ARTICLE.format(title="B", link="a.md"), encoding="utf-8")
    return root


def check(content, *extra) -> list[str]:
    return ["check", "--content", str(content), "--index-dir", str(content.parent / "no-index"),
            "--today", "2024-10-24", *extra]


def test_check_exits_0_when_clean_and_1_on_errors(content, capsys):
    assert main(check(content, "--quiet")) == 0
    out = capsys.readouterr().out
    assert "checked 2 articles" in out and "0 errors, 0 warnings" in out
    (content / "b.md").write_text(ARTICLE.format(title="B", link="gone.md"), encoding="utf-8")
    assert main(check(content)) == 1
    out = capsys.readouterr().out
    assert f"{(content / 'b.md').as_posix()}:7: error: broken_link: gone.md" in out and "1 error, 0 warnings" in out


def test_check_json_parses(content, capsys):
    (content / "a.md").write_text(ARTICLE.format(title="A", link="a.md#nowhere"), encoding="utf-8")
    assert main(check(content, "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 1 and report["counts"]["broken_anchor"] == 1 and report["today"] == "2024-10-24"
    assert report["findings"][0] == {"kind": "broken_anchor", "severity": "error", "path": "a.md", "line": 7,
                                     "message": "a.md#nowhere: a.md has no heading or anchor #nowhere",
                                     "related": "a.md"}


def test_warnings_alone_exit_0(content, capsys):
    assert main(check(content, "--quiet", "--today", "2026-01-01")) == 0  # both articles are stale now
    assert "0 errors, 2 warnings" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [("--today", "24/10/2024"), ("--content", "/no/such/folder")])
def test_check_usage_errors_exit_2(content, capsys, extra):
    assert main(check(content, *extra)) == 2
    assert "kb check: error:" in capsys.readouterr().err
