"""Opening the facility's own databases (the accounting ledger, the policies): SQLite by default, PostgreSQL by
URL, each brought to its newest Alembic migration when opened."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError


class DatabaseError(RuntimeError):
    """A database cannot be opened (bad URL, unreachable server); the message says which and why."""


def open_database(url: str, what: str, migrations: Path) -> Engine:
    """An engine on `url`, its schema upgraded. `what` names the database in messages ("the ledger")."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"{url!r} is not a database URL (e.g. sqlite:///usage.sqlite or "
                            "postgresql+psycopg://user@host/db)") from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we ship
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(f"{what} runs on SQLite or PostgreSQL, not {parsed.get_backend_name()!r}")
    try:
        engine = create_engine(parsed)
        upgrade(engine, migrations)
    except OperationalError as exc:
        raise DatabaseError(f"cannot open {what} at {parsed.render_as_string(hide_password=True)}: "
                            f"{str(exc.orig).strip().splitlines()[0]}") from None
    return engine


def upgrade(engine: Engine, migrations: Path) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
