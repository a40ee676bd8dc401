"""AuditLog: entries stored newest first; an entry that cannot be stored goes to the service log, never fails."""
import logging

import pytest

from kb.audit import AuditLog
from kb.errors import BadRequest
from tests.faults import read_only


def test_entries_are_stored_and_listed_newest_first(side_db):
    log = AuditLog(side_db("audit"))
    log.record("cli:root", "key.create", "zendesk", scopes=["suggest"])
    log.record("key:zendesk", "signin", "zendesk")
    entries = log.recent(10)
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [("key:zendesk", "signin", "zendesk"),
                                                                       ("cli:root", "key.create", "zendesk")]
    assert entries[1]["detail"] == {"scopes": ["suggest"]}
    with pytest.raises(BadRequest):
        log.recent(0)
    log.close()


def test_an_entry_that_cannot_be_stored_goes_to_the_log_and_never_fails(tmp_path, caplog):
    path = tmp_path / "auth.sqlite"
    AuditLog(path).record("cli:root", "key.create", "zendesk")
    with read_only(path) as fault, caplog.at_level(logging.INFO, logger="kb.audit"):
        log = AuditLog(path)
        for n in range(3):
            log.record("token:KB_ADMIN_TOKEN", "admin.reindex", f"job-{n}", trigger="api")  # never raises
        assert log.health.failing and log.health.errors == 3
        assert [e["action"] for e in log.recent(10)] == ["key.create"]  # reads go on
        fault.release()
        log.record("key:zendesk", "signin", "zendesk")
        assert not log.health.failing and len(log.recent(10)) == 2
        log.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.audit"]
    assert len([m for m in lines if "audit store cannot be written" in m]) == 1
    assert len([m for m in lines if "audit store is written again" in m]) == 1
    kept = [m for m in lines if m.startswith("audit entry not stored")]
    assert len(kept) == 3 and all("action=admin.reindex" in m and "job-" in m for m in kept)


def test_keys_and_audit_share_one_database(side_db):
    from kb.keys import KeyStore

    keys, log, other = KeyStore(side_db("keys")), AuditLog(side_db("audit")), AuditLog(side_db("audit"))
    keys.create("zendesk", ["search"])
    log.record("cli:root", "key.create", "zendesk")
    assert [e["target"] for e in other.recent(5)] == ["zendesk"] and keys.get("zendesk").name == "zendesk"
    for each in (keys, log, other):
        each.close()


def test_an_entry_that_cannot_be_stored_in_postgres_goes_to_the_log(postgres_server, caplog):
    from kb.database import Database
    from tests.postgres import ReadOnly

    url = postgres_server.create_database()
    log = AuditLog(Database.postgres(url))
    log.record("cli:root", "key.create", "zendesk")
    with caplog.at_level(logging.INFO, logger="kb.audit"):
        fault = ReadOnly(postgres_server, url)
        for n in range(3):
            log.record("token:KB_ADMIN_TOKEN", "admin.reindex", f"job-{n}")  # never raises
        assert log.health.failing and log.health.errors == 3
        assert [e["action"] for e in log.recent(10)] == ["key.create"]  # reads go on
        fault.release()
        log.record("key:zendesk", "signin", "zendesk")
        assert not log.health.failing and len(log.recent(10)) == 2
    log.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.audit"]
    assert len([m for m in lines if "audit store cannot be written: KB_DATABASE_URL=" in m]) == 1
    assert len([m for m in lines if m.startswith("audit entry not stored")]) == 3
