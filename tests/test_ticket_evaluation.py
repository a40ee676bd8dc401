"""Ticket-set evaluation: article metrics, and a run over a tiny ticket set against the fixture index."""
import json

import pytest

from search.ticket_evaluation import article_metrics, evaluate_confidence, evaluate_tickets, format_ticket_table


def test_article_metrics_use_the_best_article():
    relevant = {"a": 2, "b": 1}
    m = article_metrics(["b", "x", "a"], relevant)
    assert (m["R@1"], m["R@3"], m["MRR@10"]) == (0.0, 1.0, pytest.approx(1 / 3))
    assert article_metrics(["a"], relevant)["nDCG@10"] == pytest.approx(3 / (3 + 1 / 1.5849625))
    assert article_metrics(["x"], relevant)["R@10"] == 0.0


@pytest.mark.model
def test_evaluate_tickets_on_the_fixture_index(searcher, tmp_path):
    queries = [
        {"id": "t1", "subject": "Send/receive error", "text": "Hi, Outlook shows 0x8004010F when syncing. Thanks, Ann",
         "lang": "en", "kind": "ticket"},
        {"id": "t2", "subject": "", "text": "kamera tidak berfungsi di rapat Teams", "lang": "id", "kind": "query"},
        {"id": "u1", "subject": "Printer", "text": "The printer on floor 3 jams on labels", "lang": "en",
         "kind": "unanswerable"},
    ]
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (tmp_path / "qrels.tsv").write_text("t1\tOutlook/send-receive-error-0x8004010f\t2\n"
                                        "t2\tid/teams-kamera-tidak-berfungsi\t2\n")
    results = evaluate_tickets(tmp_path, searcher, [0.1])
    assert results["queries"] == 2 and results["groups"]["id"] == 1
    assert results["variants"]["fused w=0.1 | all"]["R@3"] == 1.0
    assert "| fused w=0.1 | en ticket |" in format_ticket_table(results)
    variants = {key.split(" | ")[0] for key in results["variants"]}  # each signal's contribution (ablations)
    assert {"service (all signals)", "without dense", "without lexical", "without codes", "dense alone",
            "lexical alone", "dense, raw ticket text", "service, untranslated"} <= variants
    assert results["variants"]["service (all signals) | en ticket"]["R@1"] == 1.0
    confidence = evaluate_confidence(tmp_path, searcher)
    assert confidence["current | all | all"]["n"] == 3 and confidence["current | all | en"]["AUC"] == 1.0
    assert confidence["current | short | all"]["n"] == 3 and confidence["current | ticket | all"]["n"] == 0
    bins = confidence["reliability | all"]  # predicted probability against the observed share answerable
    assert sum(b["n"] for b in bins) == 3 and len(bins) == 5
    assert all(b["answerable share"] is None or 0 <= b["answerable share"] <= 1 for b in bins)
