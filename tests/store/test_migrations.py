"""Schema revisions: migrations match the models; old schemas are upgraded explicitly."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from broker.store import database
from broker.store.schema import metadata
from tests.helpers import ROOT, Broker, python_env


def _diff(connection: sa.Connection) -> list[Any]:
    """Differences between the migrated database and schema.py.

    Alembic cannot reflect an index on an expression (`priority DESC`) and
    reports it as removed and added again; such a same-named pair is no
    difference. Anything else is.
    """
    context = MigrationContext.configure(connection)
    diffs = list(compare_metadata(context, metadata))
    added = {d[1].name for d in diffs if d[0] == "add_index"}
    removed = {d[1].name for d in diffs if d[0] == "remove_index"}
    both = added & removed
    return [d for d in diffs if not (d[0] in ("add_index", "remove_index") and d[1].name in both)]


async def _fresh(db_url: str, backend: str) -> database.Database:
    db = database.open_database(db_url)
    if backend == "postgresql":
        # The test database is a copy of a migrated template: start from empty.
        async with db.writer.begin() as conn:
            await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA public"))
    return db


async def test_migrating_from_empty_gives_exactly_the_models(db_url: str, backend: str) -> None:
    db = await _fresh(db_url, backend)
    try:
        await database.ensure_schema(db, auto_migrate=False)
        async with db.writer.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.dispose()


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", *args, env=python_env(), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_an_older_schema_is_refused_until_db_upgrade_runs(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    db = await _fresh(db_url, backend)
    try:
        assert await database.upgrade(db, "0002") == (None, "0002")
    finally:
        await db.dispose()
    broker = Broker(db_url=db_url, workdir=tmp_path)
    with pytest.raises(RuntimeError, match="exited"):
        await broker.start()
    assert "taskyard db upgrade" in (tmp_path / "broker.log").read_text()

    code, out = await _cli("db", "upgrade", "--db", db_url)
    assert code == 0 and f"schema: 0002 -> {database.head_revision()}" in out
    await broker.start()
    await broker.stop()


async def test_auto_migrate_upgrades_an_older_schema_on_start(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    db = await _fresh(db_url, backend)
    try:
        await database.upgrade(db, "0001")
    finally:
        await db.dispose()
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=["--auto-migrate"])
    await broker.start()
    await broker.stop()
    db = database.open_database(db_url)
    try:
        assert await database.current_revision(db) == database.head_revision()
    finally:
        await db.dispose()
