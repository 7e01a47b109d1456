"""Database engine for the registry: SQLite tuned for concurrent writers, PostgreSQL, migrations."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from llama_mapper.domain.errors import Unavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works: it only has to be the same for every registry process on one database.
_PG_MIGRATION_LOCK = 0x6C6D_7265_6769  # "lmregi"
_RETRIES = 8
T = TypeVar("T")


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """An engine whose `write=True` connections take the write lock up front on SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's implicit BEGIN is deferred,
        # which turns two concurrent read-then-write transactions into a deadlock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never wait for the writer; busy_timeout: writers queue instead of failing.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


def is_retryable(exc: DBAPIError) -> bool:
    """Lock contention that a fresh transaction resolves: SQLite busy, PostgreSQL serialization/deadlock."""
    message = str(exc.orig).lower()
    if "database is locked" in message or "database is busy" in message:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate in ("40001", "40P01")


def with_retry(operation: Callable[[], T]) -> T:
    """Run a whole transaction again when it lost a lock race; Unavailable when the DB is gone."""
    for attempt in range(_RETRIES):
        try:
            return operation()
        except DBAPIError as exc:
            if is_retryable(exc) and attempt + 1 < _RETRIES:
                time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))  # noqa: S311
                continue
            if isinstance(exc, OperationalError) and not is_retryable(exc):
                raise Unavailable(f"registry database unavailable: {exc.orig}") from exc
            raise
    raise AssertionError("unreachable")


def alembic_config() -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to head; safe when several registry processes start at once."""
    config = alembic_config()
    with engine.execution_options(write=True).connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                connection.commit()
