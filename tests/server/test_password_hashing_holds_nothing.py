"""Password hashing holds no database lock, transaction or connection (scrypt is slow on purpose).

Every scrypt call the server makes is instrumented: at that moment SQLite's
write lock must be free (another connection takes it at once) and the request
must hold no pooled connection, so a flood of failed logins cannot stall
other requests behind its hashing.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from sqlalchemy.engine import make_url

from protocol.schemas import Role
from tests.server.conftest import PASSWORD


@pytest.fixture
def hashing(helpline, monkeypatch):
    """The state of the database at each scrypt call: (write lock free, connections checked out)."""
    url = make_url(helpline.runtime.settings.resolved_database_url)
    seen: list[tuple[bool, int]] = []
    scrypt = hashlib.scrypt

    def write_lock_free() -> bool:
        if url.get_backend_name() != "sqlite":
            return True  # PostgreSQL has no database-wide write lock; the connection count says it all
        probe = sqlite3.connect(url.database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()

    def watched(*args, **kwargs):
        seen.append((write_lock_free(), helpline.runtime.engine.pool.checkedout()))
        return scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", watched)
    return seen


def test_logins_right_wrong_and_unknown_hash_holding_nothing(helpline, hashing):
    username = helpline.account(Role.ENGINEER)
    hashing.clear()  # creating the account above went through the test's own session
    assert helpline.call("POST", "auth/login", json={"username": username, "password": "wrong-password"}).status_code == 401
    assert helpline.call("POST", "auth/login", json={"username": "nobody-here", "password": "wrong-password"}).status_code == 401
    assert helpline.call("POST", "auth/login", json={"username": username, "password": PASSWORD}).status_code == 200
    assert len(hashing) == 3
    assert hashing == [(True, 0)] * 3


def test_creating_an_account_and_setting_a_password_hash_holding_nothing(helpline, hashing):
    admin = helpline.admin()
    hashing.clear()
    helpline.ok("POST", "accounts", admin, json={"username": "new-engineer", "password": "a-long-password-1", "role": "engineer"})
    helpline.ok("PATCH", "accounts/new-engineer", admin, json={"password": "a-long-password-2", "display_name": "New"})
    assert len(hashing) == 2
    assert hashing == [(True, 0)] * 2
    assert helpline.ok("POST", "auth/login", json={"username": "new-engineer", "password": "a-long-password-2"})["token"]
