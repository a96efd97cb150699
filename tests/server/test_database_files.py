"""The SQLite database and its WAL files are private to the server's account, whatever the umask."""

from __future__ import annotations

import os
import stat

from sqlalchemy import text

from server.db import create_db_engine


def test_database_files_are_created_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        engine = create_db_engine(f"sqlite:///{tmp_path / 'data' / 'helpline.db'}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            files = sorted(p for p in (tmp_path / "data").iterdir())
            assert {p.name for p in files} >= {"helpline.db", "helpline.db-wal", "helpline.db-shm"}
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        engine.dispose()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
