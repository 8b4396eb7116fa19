"""Alembic environment: one versions directory, a branch per component (relay, indexer)."""

from alembic import context
from sqlalchemy import pool

from kempelen.db import Base, make_engine

# Import every module that defines tables so autogenerate sees them.
import kempelen.relay.models  # noqa: F401,E402  (created by the relay)
import kempelen.indexer.models  # noqa: F401,E402  (created by the indexer)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
