"""Databases for tests: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL comes from TASKYARD_TEST_PG (default postgresql://127.0.0.1:5432/test).
Each test gets its own database, copied from a template that is migrated once
per run (CREATE DATABASE … TEMPLATE). Without a reachable server the
PostgreSQL cases skip with instructions — except under CI=true, where that is
a failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys

import asyncpg
import pytest

from tests.helpers import ROOT, python_env

ADMIN_URL = os.environ.get("TASKYARD_TEST_PG", "postgresql://127.0.0.1:5432/test")
TEMPLATE = f"taskyard_tpl_{os.getpid()}"


def _dsn(database: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{database}"


class PostgresDatabases:
    def __init__(self) -> None:
        self._ready: bool | None = None
        self._error = ""
        self._created: list[str] = []

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(ADMIN_URL, timeout=5)

    async def _ensure_template(self) -> None:
        if self._ready is not None:
            if not self._ready:
                _unavailable(self._error)
            return
        try:
            conn = await self._admin()
        except (OSError, asyncpg.PostgresError) as exc:
            self._ready, self._error = False, f"{type(exc).__name__}: {exc}"
            _unavailable(self._error)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        # Migrate the template with the real command, once.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broker", "db", "upgrade", "--db", _dsn(TEMPLATE),
            env=python_env(), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        self._ready = True

    async def create(self) -> str:
        await self._ensure_template()
        name = f"taskyard_t_{secrets.token_hex(6)}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        finally:
            await conn.close()
        self._created.append(name)
        return _dsn(name)

    async def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def close(self) -> None:
        if not self._ready:
            return
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        finally:
            await conn.close()


def _unavailable(reason: str) -> None:
    message = (
        f"PostgreSQL is not reachable at {ADMIN_URL} ({reason}). Start one (trust auth) or "
        "point TASKYARD_TEST_PG at a server where the test user may CREATE DATABASE."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
