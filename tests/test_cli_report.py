"""`kb report`: the reports as text, JSON (the API's) and CSV, over a known log and the fixture index."""
import csv
import io
import json

import pytest

from cli.main import main
from tests.report_log import A, write_known_log

RANGE = ["--since", "2026-03-01", "--until", "2026-03-14"]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from indexer.build import build_index
    from kb.settings import load_settings
    from tests.conftest import FIXTURE_CONTENT, TinyEncoder

    from kb.embedder import MODEL_IDS

    class AsMiniLM(TinyEncoder):  # an index `kb report` opens as the default model's (it never loads the model)
        model_id = MODEL_IDS["all-MiniLM-L6-v2"]

    root = tmp_path_factory.mktemp("cli-report")
    build_index(load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=root / "index"), AsMiniLM(), progress=False)
    return root / "index"


@pytest.fixture
def log(tmp_path, monkeypatch, index_dir):
    monkeypatch.setenv("KB_ANALYTICS_DB", str(write_known_log(tmp_path / "events.sqlite")))
    monkeypatch.setenv("KB_INDEX_DIR", str(index_dir))
    monkeypatch.setenv("KB_MODEL", "all-MiniLM-L6-v2")


def test_text_report(log, capsys):
    assert main(["report", *RANGE]) == 0
    out = capsys.readouterr().out
    assert "2026-03-01 to 2026-03-14 (14 days, UTC)" in out
    assert "SUMMARY: 5 searches, 5 suggestions; confident 44%" in out
    assert "search 20 ms / 70 ms, suggest 60 ms / 90 ms" in out and "3 of 5 suggestions used (60%)" in out
    assert "TOP QUERIES: 7 distinct of 10" in out and "CONTENT GAPS: 6 without a good answer" in out
    assert "Outlook keeps asking for your password" in out  # titles from the index
    assert "support-outlook" in out and '"vpn keeps dropping"' in out


def test_json_is_the_api_data(log, capsys):
    assert main(["report", *RANGE, "--json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert set(everything) == {"summary", "queries", "gaps", "articles"}
    assert everything["summary"]["totals"]["answers"] == 10
    assert main(["report", *RANGE, "--json", "--report", "articles", "--language", "id"]) == 0
    articles = json.loads(capsys.readouterr().out)
    assert articles["filters"]["language"] == "id" and articles["articles"][0]["shown"] == 2


def test_csv_one_report(log, capsys):
    assert main(["report", *RANGE, "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][0] == "period" and len(rows) == 15
    assert main(["report", *RANGE, "--csv", "--report", "queries", "--limit", "1"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["query"], r["count"], r["top_article_id"]) for r in rows] == [("outlook password", "3", A)]


def test_bad_input_exits_2_with_a_message(log, capsys):
    assert main(["report", "--since", "2026-03-32"]) == 2
    assert "since must be a date as YYYY-MM-DD" in capsys.readouterr().err
    assert main(["report", *RANGE, "--limit", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["report", "--json", "--csv"])


def test_a_gap_about_a_product_no_article_mentions_is_named(tmp_path, monkeypatch, index_dir, capsys):
    from tests.report_log import SYNTHETIC, LogWriter

    log = LogWriter(tmp_path / "webex.sqlite", vector=lambda text: SYNTHETIC["vpn drops"])
    for name in ("w1", "w2"):
        log.answer(name, 1, "search", "page", "en", "webex screen share greyed out", 0, 10, [A])
    log.close()
    monkeypatch.setenv("KB_ANALYTICS_DB", str(tmp_path / "webex.sqlite"))
    monkeypatch.setenv("KB_INDEX_DIR", str(index_dir))
    monkeypatch.setenv("KB_MODEL", "all-MiniLM-L6-v2")
    assert main(["report", *RANGE]) == 0
    assert "; no article mentions webex\n" in capsys.readouterr().out
