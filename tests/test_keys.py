"""KeyStore: secrets shown once and stored only as salted hashes; scopes, expiry, revocation, rate windows."""
import sqlite3

import pytest

from kb.errors import BadRequest, Conflict, KeyInvalid, NotFound, RateLimited
from kb.keys import KeyStore, parse_rate, parse_scopes


@pytest.fixture
def store(tmp_path):
    s = KeyStore(tmp_path / "auth.sqlite")
    yield s
    s.close()


def test_secret_is_stored_only_as_a_salted_hash(store, tmp_path):
    key, secret = store.create("zendesk", ["suggest", "search"])
    assert secret.startswith(f"kb_{key.id}_") and len(secret) > 50
    assert key.scopes == ("search", "suggest") and key.expires is None and key.requests == 0
    raw = (tmp_path / "auth.sqlite").read_bytes() + (tmp_path / "auth.sqlite-wal").read_bytes()
    assert secret.encode() not in raw and secret.split("_")[-1].encode() not in raw
    _, other = store.create("freshdesk", ["suggest"])
    with sqlite3.connect(tmp_path / "auth.sqlite") as db:
        salts = [r[0] for r in db.execute("SELECT salt FROM api_keys")]
    assert len(set(salts)) == 2 and all(len(s) == 16 for s in salts)


def test_verify_counts_use_and_refuses_wrong_secrets(store):
    key, secret = store.create("zendesk", ["suggest"])
    assert store.verify(secret).name == "zendesk"
    assert store.verify(secret).name == "zendesk"
    listed = store.list()[0]
    assert listed.requests == 2 and listed.last_used is not None
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad in (tampered, "", "kb_nope", secret + "x", f"kb_{key.id}_" + "x" * 43, "Bearer " + secret):
        with pytest.raises(KeyInvalid) as info:
            store.verify(bad)
        assert info.value.status == 401 and info.value.code == "unauthorized"


def test_revoked_and_expired_keys_say_which(store):
    _, revoked = store.create("old", ["search"])
    store.revoke("old")
    with pytest.raises(KeyInvalid) as info:
        store.verify(revoked)
    assert info.value.code == "key_revoked" and "revoked" in info.value.message
    assert 'error="invalid_token"' in info.value.headers["WWW-Authenticate"]
    key, expiring = store.create("temp", ["search"], expires_days=1)
    store.verify(expiring)
    with pytest.raises(KeyInvalid) as info:
        store.verify(expiring, now=__import__("time").time() + 2 * 86400)
    assert info.value.code == "key_expired" and key.expires in info.value.message


def test_names_are_unique_among_active_keys(store):
    store.create("zendesk", ["search"])
    with pytest.raises(Conflict):
        store.create("zendesk", ["suggest"])
    store.revoke("zendesk")
    assert store.create("zendesk", ["suggest"])[0].scopes == ("suggest",)  # a rotated key may keep the name
    assert [k.name for k in store.list(include_revoked=True)] == ["zendesk", "zendesk"]
    with pytest.raises(NotFound):
        store.revoke("missing")


def test_rate_is_a_per_minute_window_with_retry_after(store):
    _, secret = store.create("bot", ["search"], rate="3/min")
    start = 1_800_000_000.0  # a window boundary (divisible by 60)
    for offset in (0, 10, 20):
        store.verify(secret, now=start + offset)
    with pytest.raises(RateLimited) as info:
        store.verify(secret, now=start + 45)
    assert info.value.status == 429 and info.value.headers == {"Retry-After": "15"}
    store.verify(secret, now=start + 61)  # the next minute starts a new window


@pytest.mark.parametrize("scopes", [[], ["everything"], ["search", "root"]])
def test_unknown_or_missing_scopes_are_refused(scopes):
    with pytest.raises(BadRequest):
        parse_scopes(scopes)


@pytest.mark.parametrize("value,expected", [("120/min", 120), ("5", 5), (None, None), (" 7 / min ", 7)])
def test_rate_values(value, expected):
    assert parse_rate(value) == expected


@pytest.mark.parametrize("value", ["0/min", "-1", "fast", "10/hour"])
def test_bad_rates_are_refused(value):
    with pytest.raises(BadRequest):
        parse_rate(value)


@pytest.mark.parametrize("name", ["", "with space", "a" * 65, "../x", "-lead"])
def test_bad_names_are_refused(store, name):
    with pytest.raises(BadRequest):
        store.create(name, ["search"])


def test_service_secret_is_created_once_and_shared(tmp_path):
    first = KeyStore(tmp_path / "auth.sqlite").service_secret("session")
    assert KeyStore(tmp_path / "auth.sqlite").service_secret("session") == first and len(first) == 32


# ---- a file that cannot be written (tests/faults.py): keys still verify, rates hold, one log line each way ------

def test_a_read_only_file_still_verifies_keys_and_keeps_their_rates_in_memory(tmp_path, caplog):
    import logging

    from kb.errors import StoreUnavailable
    from tests.faults import read_only

    path = tmp_path / "auth.sqlite"
    first = KeyStore(path)
    _, secret = first.create("bot", ["search"], rate="3/min")
    _, revoked = first.create("old", ["search"])
    first.revoke("old")
    session = first.service_secret("session")
    first.close()
    start = 1_800_000_000.0  # a window boundary
    with read_only(path) as fault, caplog.at_level(logging.INFO, logger="kb.keys"):
        store = KeyStore(path)
        assert [store.verify(secret, now=start + n).name for n in range(3)] == ["bot"] * 3  # read, not counted
        with pytest.raises(RateLimited) as info:
            store.verify(secret, now=start + 45)
        assert info.value.headers == {"Retry-After": "15"}
        with pytest.raises(KeyInvalid):
            store.verify(revoked)  # revocation is a read: still enforced
        assert store.service_secret("session") == session  # signed-in sessions stay valid
        with pytest.raises(StoreUnavailable) as refused:
            store.create("new", ["search"])
        assert refused.value.status == 503 and "KB_AUTH_DB" in refused.value.message
        assert store.health.failing and store.health.errors == 5
        fault.release()
        store.verify(secret, now=start + 61)
        assert not store.health.failing and store.list()[0].requests == 1
        store.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.keys"]
    assert len(lines) == 2 and "keys store cannot be written" in lines[0] and "written again" in lines[1], lines


def test_a_file_that_cannot_be_read_is_a_503_not_a_crash(tmp_path):
    from kb.errors import StoreUnavailable

    (tmp_path / "auth.sqlite").write_bytes(b"not a database at all" * 200)
    store = KeyStore(tmp_path / "auth.sqlite")
    with pytest.raises(StoreUnavailable) as info:
        store.verify("kb_abcdefghijkl_" + "x" * 43)
    assert info.value.status == 503 and "no key can be checked" in info.value.message
    store.close()
