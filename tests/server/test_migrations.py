"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server import models  # noqa: F401 - registers the tables
from server.db import Base, create_db_engine
from server.migrate import is_current, upgrade


def test_migrations_match_models(new_database, tmp_path):
    url = new_database() or f"sqlite:///{tmp_path / 'm.db'}"
    engine = create_db_engine(url)
    try:
        assert not is_current(engine)
        upgrade(engine)
        upgrade(engine)  # a second run is a no-op
        assert is_current(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
