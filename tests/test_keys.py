"""KeyStore: secrets shown once and stored only as salted hashes; scopes, expiry, revocation, rate windows.

The contract runs on both engines (the `side_db` fixture: a SQLite file, then a real PostgreSQL database), and so do
the faults each engine has (a read-only file or database, a database out of reach).
"""
import logging
import time

import pytest

from kb.database import Database
from kb.errors import BadRequest, Conflict, KeyInvalid, NotFound, RateLimited, StoreUnavailable
from kb.keys import KeyStore, parse_rate, parse_scopes


@pytest.fixture
def store(side_db):
    s = KeyStore(side_db("keys"))
    yield s
    s.close()


def test_secret_is_stored_only_as_a_salted_hash(store):
    key, secret = store.create("zendesk", ["suggest", "search"])
    assert secret.startswith(f"kb_{key.id}_") and len(secret) > 50
    assert key.scopes == ("search", "suggest") and key.expires is None and key.requests == 0
    if store.database.engine == "sqlite":
        path = store.database.path  # the file and its WAL
        raw = b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))
        assert secret.encode() not in raw and secret.split("_", 2)[2].encode() not in raw
    _, other = store.create("freshdesk", ["suggest"])
    db = store.database.connect()
    rows = [dict(r) for r in db.execute("SELECT * FROM api_keys").fetchall()]
    db.close()
    stored = repr(rows).encode() + b"".join(v for r in rows for v in r.values() if isinstance(v, bytes))
    for one in (secret, other):
        # the random part whole: it may itself hold "_", and a one-letter tail after it is found anywhere by chance
        assert one.encode() not in stored and one.split("_", 2)[2].encode() not in stored
    salts = [bytes(r["salt"]) for r in rows]
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


def test_service_secret_is_created_once_and_shared(side_db):
    first, second = KeyStore(side_db("keys")), KeyStore(side_db("keys"))
    assert first.service_secret("session") == second.service_secret("session")
    assert len(first.service_secret("session")) == 32
    first.close()
    second.close()


def test_two_stores_on_one_database_share_keys_rates_and_revocation(side_db):
    """Two worker processes, or two replicas on one PostgreSQL: each has its own store object and connection."""
    one, other = KeyStore(side_db("keys")), KeyStore(side_db("keys"))
    _, secret = one.create("bot", ["search"], rate="3/min")
    start = 1_800_000_000.0  # a window boundary
    assert other.verify(secret, now=start).name == "bot"  # created through one, accepted through the other
    one.verify(secret, now=start + 1)
    other.verify(secret, now=start + 2)
    with pytest.raises(RateLimited):
        one.verify(secret, now=start + 3)  # the rate window is counted in the shared database
    assert other.get("bot").requests == 4
    with pytest.raises(Conflict):
        other.create("bot", ["search"])
    other.revoke("bot")
    with pytest.raises(KeyInvalid) as info:
        one.verify(secret, now=start + 61)
    assert info.value.code == "key_revoked"
    one.close()
    other.close()


# ---- a file that cannot be written (tests/faults.py): keys still verify, rates hold, one log line each way ------

def test_a_read_only_file_still_verifies_keys_and_keeps_their_rates_in_memory(tmp_path, caplog):
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
    (tmp_path / "auth.sqlite").write_bytes(b"not a database at all" * 200)
    store = KeyStore(tmp_path / "auth.sqlite")
    with pytest.raises(StoreUnavailable) as info:
        store.verify("kb_abcdefghijkl_" + "x" * 43)
    assert info.value.status == 503 and "no key can be checked" in info.value.message
    store.close()


# ---- PostgreSQL faults: a read-only database (a failover to a standby) and one out of reach --------------------------

def test_a_read_only_database_still_verifies_keys_and_keeps_their_rates_in_memory(postgres_server, caplog):
    from tests.postgres import ReadOnly

    url = postgres_server.create_database()
    first = KeyStore(Database.postgres(url))
    _, secret = first.create("bot", ["search"], rate="3/min")
    session = first.service_secret("session")
    start = 1_800_000_000.0
    with caplog.at_level(logging.INFO, logger="kb.keys"):
        fault = ReadOnly(postgres_server, url)  # also ends `first`'s session: its next statement meets that
        assert [first.verify(secret, now=start + n).name for n in range(3)] == ["bot"] * 3
        with pytest.raises(RateLimited):
            first.verify(secret, now=start + 45)
        assert first.service_secret("session") == session
        with pytest.raises(StoreUnavailable) as refused:
            first.create("new", ["search"])
        assert refused.value.status == 503 and "KB_DATABASE_URL" in refused.value.message
        assert "read-only" in refused.value.message and first.health.failing and first.health.errors == 5
        fault.release()
        first.verify(secret, now=start + 61)
        assert not first.health.failing and first.get("bot").requests == 1
    first.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.keys"]
    assert len(lines) == 2 and "keys store cannot be written: KB_DATABASE_URL=postgresql://" in lines[0], lines
    assert "written again" in lines[1]


def test_a_database_out_of_reach_is_a_503_at_once_not_a_hang(tmp_path):
    store = KeyStore(Database.postgres(f"postgresql://kb:pw@/kb?host={tmp_path / 'gone'}", timeout=2))
    started = time.monotonic()
    for _ in range(10):
        with pytest.raises(StoreUnavailable) as info:
            store.verify("kb_abcdefghijkl_" + "x" * 43)
        assert info.value.status == 503 and "KB_DATABASE_URL" in info.value.message and "pw" not in info.value.message
    assert time.monotonic() - started < 1.0
    store.close()
