"""The one SQL-database adapter: engines on ``CHURNOPS_DATABASE_URL``, transactions, table writes and reads.

Batch scoring (the scores table) and the analytics marts (:mod:`churnops.analytics`) write through here, in
one transaction per run, so a reader sees all of a run or none of it. SQLite by default (a file under the
project home), PostgreSQL in tests and production (any SQLAlchemy URL works).

- :func:`engine_for` / :func:`create_engine`: an engine (a SQLite file's folder is created; PostgreSQL
  connections are pinged before use).
- :func:`transaction`: ``with transaction(engine, what=...) as conn:`` commits on success, rolls back on any
  error and raises :class:`DatabaseError` naming the database (password hidden) and saying the tables
  were left as they were.
- :func:`insert_frame`: a DataFrame into a table: PostgreSQL ``COPY`` (the fast path for millions of
  rows), other databases batched ``INSERT``; :func:`delete_where_in` removes rows by key.
- :func:`read_frame` / :func:`reader`: queries for the fronts (dashboard, CLI), with errors turned into
  :class:`DatabaseError` ("database down" reads as a sentence, not a traceback).
- :func:`query_over_frames`: a query over DataFrames copied into temporary tables of one transaction (the
  transactional source's feature SQL on PostgreSQL).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops.logs import get_logger

if TYPE_CHECKING:
    import sqlalchemy as sa

    from churnops.settings import Settings

log = get_logger(__name__)


class DatabaseError(RuntimeError):
    """The database could not be reached or refused a statement; the message names it (no password)."""


def create_engine(url: str) -> sa.Engine:
    """An engine on `url`; a SQLite file's folder is created and writers wait for each other."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(f"CHURNOPS_DATABASE_URL is not a database URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(parsed, connect_args={"timeout": 60})  # wait for a concurrent writer
    connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def engine_for(settings: Settings) -> sa.Engine:
    """An engine on ``settings.database_url``."""
    return create_engine(settings.database_url)


def describe(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def transaction(engine: sa.Engine, *, what: str) -> Iterator[sa.Connection]:
    """One transaction: committed when the block ends, rolled back on any error (re-raised as
    :class:`DatabaseError` when it came from the database)."""
    import sqlalchemy as sa

    try:
        with engine.begin() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"{what} in {describe(engine)} failed; the tables were left as they were: "
            f"{_short(exc)}"
        ) from exc


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def create_tables(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """Create the tables of `metadata` that do not exist; an existing table missing a column is an error
    (it was made by another version of the schema), named with what to do."""
    import sqlalchemy as sa

    metadata.create_all(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise DatabaseError(
                f"table {table.name} in {describe(conn.engine)} lacks columns {missing}: it was created by "
                f"an older churnops; rename or drop it (its rows are not migrated) and run again"
            )


def insert_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, chunk_size: int = 10_000) -> int:
    """Insert every row of `frame` (columns named as the table's) inside the caller's transaction.

    PostgreSQL (psycopg2): ``COPY ... FROM STDIN`` in CSV. Other databases: the driver's ``executemany``
    on plain tuples, each column's values passed through the column type's own SQLAlchemy bind processor
    (booleans, times), `chunk_size` rows at a time. NaN/NA/None become NULL."""
    if frame.empty:
        return 0
    columns = list(frame.columns)
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        _copy_postgresql(conn, table, frame, columns)
        return len(frame)
    placeholder = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
    if placeholder is None:  # named parameter styles: SQLAlchemy's own executemany on dicts
        records = frame.astype(object).where(frame.notna(), None)
        for start in range(0, len(records), chunk_size):
            conn.execute(table.insert(), records.iloc[start : start + chunk_size].to_dict("records"))
        return len(frame)
    prep = conn.dialect.identifier_preparer
    statement = (f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(c) for c in columns)}) "
                 f"VALUES ({', '.join([placeholder] * len(columns))})")
    for start in range(0, len(frame), chunk_size):
        part = frame.iloc[start : start + chunk_size]
        values = []
        for name in columns:
            column = part[name]
            plain = column.astype(object).where(column.notna(), None).tolist()
            process = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
            values.append([None if v is None else process(v) for v in plain] if process else plain)
        conn.exec_driver_sql(statement, list(zip(*values, strict=True)))
    return len(frame)


def _copy_postgresql(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str]) -> None:
    import sqlalchemy as sa

    from churnops.io import write_csv

    quoted = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in columns)
    name = conn.dialect.identifier_preparer.format_table(table)
    statement = f"COPY {name} ({quoted}) FROM STDIN WITH (FORMAT csv)"
    cursor = conn.connection.driver_connection.cursor()
    try:
        for start in range(0, len(frame), 200_000):  # bounded memory for the CSV text
            buffer = io.BytesIO()
            write_csv(frame.iloc[start : start + 200_000], buffer, header=False)
            buffer.seek(0)
            try:
                cursor.copy_expert(statement, buffer)
            except conn.dialect.loaded_dbapi.Error as exc:  # raw cursor: wrap as SQLAlchemy would
                raise sa.exc.DBAPIError(statement, None, exc) from exc
    finally:
        cursor.close()


def delete_where_in(conn: sa.Connection, table: sa.Table, column: str, values: list[Any]) -> None:
    """Delete the rows whose `column` is one of `values` (in the caller's transaction)."""
    if values:
        conn.execute(table.delete().where(table.c[column].in_(values)))


def has_table(engine: sa.Engine, name: str) -> bool:
    import sqlalchemy as sa

    try:
        return sa.inspect(engine).has_table(name)
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"cannot reach the database {describe(engine)}: {_short(exc)}") from exc


@contextmanager
def reader(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reads; a database that is down or refuses a query raises :class:`DatabaseError`."""
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"reading {describe(engine)} failed: {_short(exc)}") from exc


def read_frame(engine: sa.Engine, query: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """A query's rows as a DataFrame (a SQLAlchemy selectable or text)."""
    with reader(engine) as conn:
        result = conn.execute(query, params or {})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


_COLUMN_TYPES = {"TEXT": "Text", "DOUBLE PRECISION": "Float", "BOOLEAN": "Boolean", "INTEGER": "Integer",
                 "BIGINT": "BigInteger", "TIMESTAMP": "DateTime"}


def query_over_frames(url: str, frames: dict[str, tuple[pd.DataFrame, dict[str, str]]], sql: str, *,
                      what: str) -> pd.DataFrame:
    """Run `sql` over DataFrames: each ``name: (frame, {column: SQL type})`` is copied into a temporary
    table of that name (``COPY`` on PostgreSQL) in one transaction, which drops them when it ends; nothing
    stays in the database. Types: TEXT, DOUBLE PRECISION, BOOLEAN, INTEGER, BIGINT, TIMESTAMP."""
    import sqlalchemy as sa

    engine = create_engine(url)
    meta = sa.MetaData()
    tables = {}
    for name, (_, types) in frames.items():
        columns = [sa.Column(c, sa.Float(53) if t == "DOUBLE PRECISION" else getattr(sa, _COLUMN_TYPES[t])())
                   for c, t in types.items()]
        tables[name] = sa.Table(name, meta, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
    try:
        with transaction(engine, what=what) as conn:
            meta.create_all(conn)
            for name, (frame, types) in frames.items():
                insert_frame(conn, tables[name], frame[list(types)])
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"ANALYZE {name}")
            result = conn.exec_driver_sql(sql)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    finally:
        engine.dispose()
