"""Alembic environment: runs migrations on the connection Helpline hands it."""

from alembic import context

from server.db import Base
from server import models  # noqa: F401  (registers the tables on Base.metadata)

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("Helpline runs migrations through server.migrate, which passes a connection.")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
