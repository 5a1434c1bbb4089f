"""A backup and its restore, as an operator makes them, for the restore-check tests: the database
(the SQLite file through SQLite's online backup, or a PostgreSQL copy made with CREATE DATABASE
... TEMPLATE) and the artifact store, both put back as they were."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Backup:
    database_url: str
    database_copy: str  # a file (SQLite) or a database name (PostgreSQL)
    artifacts: Path
    artifacts_copy: Path


def _admin(url):
    return create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")


def _copy_postgres(url, source: str, target: str) -> None:
    engine = _admin(url)
    try:
        with engine.connect() as connection:
            # A template must have no other connection: the API's pools are closed for it.
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": source})
            connection.execute(text(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{target}" TEMPLATE "{source}"'))
    finally:
        engine.dispose()


def _copy_sqlite(source: str, target: str) -> None:
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)


def back_up(database_url: str, artifacts: Path, into: Path) -> Backup:
    from app.db import dispose_engine

    dispose_engine()
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        copy = str(into / "backup.db")
        _copy_sqlite(url.database, copy)
    else:
        copy = f"{url.database}_backup_{uuid.uuid4().hex[:8]}"
        _copy_postgres(url, url.database, copy)
    shutil.copytree(artifacts, into / "artifacts-backup")
    return Backup(database_url, copy, artifacts, into / "artifacts-backup")


def restore(backup: Backup) -> None:
    from app.db import dispose_engine

    dispose_engine()
    url = make_url(backup.database_url)
    if url.get_backend_name() == "sqlite":
        _copy_sqlite(backup.database_copy, url.database)
    else:
        _copy_postgres(url, backup.database_copy, url.database)
        engine = _admin(url)
        try:
            with engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{backup.database_copy}" WITH (FORCE)'))
        finally:
            engine.dispose()
    shutil.rmtree(backup.artifacts)
    shutil.copytree(backup.artifacts_copy, backup.artifacts)
