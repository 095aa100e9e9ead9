"""Idempotency keys are per owner: another tenant's key returns nothing of its task, blocks
nothing and cannot be probed; without tokens a key is broker-wide as before. The migration
(`*_request_scope`) keeps existing keys under their owner."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from broker.store import database
from taskyard.v1 import task_pb2
from taskyard.v1 import task_service_pb2 as ts
from tests.helpers import Broker, stubs
from tests.security.support import TokensFile
from worker_sdk import Client, TaskSpec


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    tokens.add("billing", "submitter", queues=["billing"])
    return tokens


@pytest.fixture
def broker_args(tokens: TokensFile) -> list[str]:
    return ["--tokens", str(tokens.path)]


def as_(broker: Broker, tokens: TokensFile, name: str) -> Client:
    return Client(broker.target, token=tokens.tokens[name])


async def test_another_tenants_key_gives_the_caller_its_own_new_task(
    broker: Broker, tokens: TokensFile
) -> None:
    async with (
        as_(broker, tokens, "alice") as alice,
        as_(broker, tokens, "bob") as bob,
        as_(broker, tokens, "billing") as billing,
    ):
        secret = await billing.submit("charge", {"card": "4111"}, queue="billing", request_id="k")
        # Neither the payload nor the task of the key's first user comes back.
        mine = await alice.submit("echo", {"alice": 1}, request_id="k")
        assert mine.id != secret.id and mine.payload == {"alice": 1} and mine.queue == "default"
        assert (await alice.get(mine.id)).payload == {"alice": 1}
        # Within one owner the key still deduplicates, in each namespace.
        assert (await alice.submit("echo", {"other": 2}, request_id="k")).id == mine.id
        again = await billing.submit("charge", {"x": 0}, queue="billing", request_id="k")
        assert again.id == secret.id and again.payload == {"card": "4111"}
        # Batches: each item in its caller's namespace, repeats within the batch folded.
        bobs = await bob.submit_many(
            [TaskSpec("echo", {"bob": 1}, request_id="k"), TaskSpec("echo", request_id="k")]
        )
        assert bobs[0].id == bobs[1].id and bobs[0].id not in {mine.id, secret.id}
        assert (await bob.get(bobs[0].id)).payload == {"bob": 1}
        assert {t.id async for t in bob.list()} == {bobs[0].id}


async def test_a_key_used_first_by_another_tenant_does_not_block_or_leak(
    broker: Broker, tokens: TokensFile
) -> None:
    """Before: Alice's submit returned Bob's task, which she then could not read."""
    async with as_(broker, tokens, "alice") as alice, as_(broker, tokens, "bob") as bob:
        await bob.submit("echo", request_id="order-42")
        created = await alice.submit("echo", {"mine": True}, request_id="order-42")
        fetched = await alice.get(created.id)  # NOT_TASK_OWNER before the fix
        assert fetched.payload == {"mine": True} and fetched.request_id == "order-42"


async def test_without_tokens_a_key_is_broker_wide_as_before(db_url: str, tmp_path: Path) -> None:
    broker = Broker(db_url=db_url, workdir=tmp_path)
    await broker.start()
    try:
        async with Client(broker.target) as one, Client(broker.target) as two:
            first = await one.submit("echo", {"n": 1}, request_id="same")
            assert (await two.submit("echo", {"n": 2}, request_id="same")).id == first.id
            async with stubs(broker) as s:
                item = ts.CreateTaskRequest(task=task_pb2.Task(type="echo"), request_id="same")
                batch = await s.tasks.BatchCreateTasks(ts.BatchCreateTasksRequest(requests=[item]))
            assert batch.results[0].task.id == first.id
    finally:
        await broker.stop()


# --- The migration ------------------------------------------------------------------------


def _revisions() -> tuple[str, str]:
    """(the request-scope revision, the one before it): found by name, so renumbering at a
    merge changes nothing here."""
    scripts = ScriptDirectory.from_config(database._alembic_config())
    (ours,) = [r for r in scripts.walk_revisions() if r.path.endswith("_request_scope.py")]
    assert isinstance(ours.down_revision, str)
    return ours.revision, ours.down_revision


SCOPE, BEFORE = _revisions()


def _task_row(task_id: str, owner: str | None, key: str, state: int = 2) -> dict[str, Any]:
    running = state == 3
    now = int(time.time() * 1_000_000)  # recent: retention keeps keys for a day
    return {
        "id": task_id, "queue": "default", "type": "echo", "priority": 0, "state": state,
        "attempt": 1 if running else 0, "max_attempts": 3, "lost_count": 0, "run_at": now,
        "created_at": now, "updated_at": now, "cancel_requested": False, "request_id": key,
        "owner": owner, "lease_id": 77 if running else None,
        "lease_expires_at": 2**60 if running else None, "worker_id": "w" if running else None,
        "started_at": 1 if running else None,
    }  # fmt: skip


_IDS = {
    "alice": "01ARZ3NDEKTSV4RRFFQ69G5FA1",
    "anonymous": "01ARZ3NDEKTSV4RRFFQ69G5FA2",
    "running": "01ARZ3NDEKTSV4RRFFQ69G5FA3",
}


async def _before_with_data(db_url: str, backend: str) -> None:
    db = database.open_database(db_url)
    try:
        if backend == "postgresql":
            async with db.writer.begin() as conn:  # the test database is a migrated copy
                await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                await conn.execute(sa.text("CREATE SCHEMA public"))
        await database.upgrade(db, BEFORE)
        rows = [
            _task_row(_IDS["alice"], "alice", "old-key"),
            _task_row(_IDS["anonymous"], None, "anon-key"),
            _task_row(_IDS["running"], "alice", "run-key", state=3),
        ]
        columns = ", ".join(rows[0])
        values = ", ".join(f":{c}" for c in rows[0])
        async with db.writer.begin() as conn:
            await conn.execute(sa.text(f"INSERT INTO task ({columns}) VALUES ({values})"), rows)
            await conn.execute(
                sa.text("INSERT INTO task_payload (task_id, data) VALUES (:id, :data)"),
                {"id": _IDS["alice"], "data": task_pb2.Task().SerializeToString()},
            )
        assert await database.upgrade(db) == (BEFORE, database.head_revision())
    finally:
        await db.dispose()


async def test_the_migration_keeps_existing_keys_under_their_owner(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    await _before_with_data(db_url, backend)
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=["--tokens", str(tokens.path)])
    await broker.start()
    try:
        async with as_(broker, tokens, "alice") as alice, as_(broker, tokens, "bob") as bob:
            assert (await alice.submit("echo", request_id="old-key")).id == _IDS["alice"]
            assert (await alice.submit("echo", request_id="run-key")).id == _IDS["running"]
            assert (await bob.submit("echo", request_id="old-key")).id not in _IDS.values()
            assert (await alice.submit("echo", request_id="anon-key")).id not in _IDS.values()
    finally:
        await broker.stop()
    # Without tokens, the ownerless key still holds broker-wide.
    broker = Broker(db_url=db_url, workdir=tmp_path / "open")
    (tmp_path / "open").mkdir()
    await broker.start()
    try:
        async with Client(broker.target) as anyone:
            assert (await anyone.submit("echo", request_id="anon-key")).id == _IDS["anonymous"]
    finally:
        await broker.stop()


async def test_the_migration_downgrades_to_one_namespace(db_url: str, backend: str) -> None:
    await _before_with_data(db_url, backend)
    db = database.open_database(db_url)
    try:
        async with db.writer.begin() as conn:
            # A second owner reuses a key, as only the request-scope revision allows.
            row = _task_row("01ARZ3NDEKTSV4RRFFQ69G5FA9", "bob", "old-key")
            columns, values = ", ".join(row), ", ".join(f":{c}" for c in row)
            await conn.execute(sa.text(f"INSERT INTO task ({columns}) VALUES ({values})"), row)
        async with db.writer.connect() as conn:
            await conn.run_sync(
                lambda sync: command.downgrade(database._alembic_config(sync), BEFORE)
            )
            await conn.commit()
        assert await database.current_revision(db) == BEFORE
        async with db.writer.connect() as conn:
            rows = await conn.execute(sa.text("SELECT id, request_id FROM task ORDER BY id"))
            keys: dict[str, str | None] = {r[0]: r[1] for r in rows}
        assert keys["01ARZ3NDEKTSV4RRFFQ69G5FA9"] is None  # the older task kept the key
        assert keys[_IDS["alice"]] == "old-key"
    finally:
        await db.dispose()
