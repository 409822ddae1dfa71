"""The SQL database: one engine per URL and process, and its migrations (`python -m tenants.database`)."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@functools.lru_cache(maxsize=None)
def database_engine(url: str) -> Engine:
    """The engine for `url`, built once per process (it holds the connection pool)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=5)


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(connection, _record) -> None:
        # WAL: readers (key lookups) never wait for the usage writer; several processes share the file.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    return engine


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema (Alembic's `upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database_engine(url).begin() as connection:
        config.attributes["connection"] = connection  # the URL never passes through the ini parser
        command.upgrade(config, "head")


def main() -> None:
    from settings import get_settings

    url = get_settings().database()
    upgrade(url)
    print(f"database at the newest schema: {url.split('@')[-1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
