"""Schedules are capped per identity, and what they fire is submitted by their owner: it
draws from the owner's submission rate like CreateTask."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.helpers import Broker
from tests.security.support import TokensFile
from worker_sdk import Client, TaskSpec, TaskyardError


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("ops", "operator", "submitter")
    tokens.add("ops-2", "operator", "submitter")
    return tokens


def as_(broker: Broker, tokens: TokensFile, name: str) -> Client:
    return Client(broker.target, token=tokens.tokens[name])


async def _start(db_url: str, tmp_path: Path, tokens: TokensFile, *args: str) -> Broker:
    broker = Broker(
        db_url=db_url, workdir=tmp_path, extra_args=["--tokens", str(tokens.path), *args]
    )
    await broker.start()
    return broker


async def test_each_identity_may_own_a_limited_number_of_schedules(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    broker = await _start(db_url, tmp_path, tokens, "--max-schedules-per-identity", "2")
    task = TaskSpec("echo", queue="nobody")
    try:
        async with as_(broker, tokens, "ops") as ops, as_(broker, tokens, "ops-2") as other:
            for name in ("a", "b"):
                await ops.create_schedule(name, task, every=3600)
            with pytest.raises(TaskyardError) as info:
                await ops.create_schedule("c", task, every=3600)
            assert (info.value.code, info.value.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_SCHEDULES",
            )
            await other.create_schedule("c", task, every=3600)  # another identity's count
            await ops.delete_schedule("a")
            await ops.create_schedule("d", task, every=3600)
            assert {s.name async for s in ops.list_schedules()} == {"b", "c", "d"}
    finally:
        await broker.stop()


async def test_fires_draw_from_their_owners_submission_rate(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    """Before: a schedule submitted without limit, whatever its owner's rate."""
    limits = ["--max-batch", "2", "--submit-burst", "2", "--submit-rate", "0.001"]
    broker = await _start(db_url, tmp_path, tokens, *limits)
    try:
        async with as_(broker, tokens, "ops") as ops, as_(broker, tokens, "ops-2") as other:
            every_second = TaskSpec("echo", queue="nobody")
            await ops.create_schedule("tick", every_second, cron="* * * * * *", overlap="allow_all")
            # Fire times pass on the broker's clock: poll the schedule (no event to await).
            async with asyncio.timeout(30):
                while (schedule := await ops.get_schedule("tick")).failed_count < 1:
                    assert schedule.started_count <= 2
                    await asyncio.sleep(0.2)
            assert schedule.started_count == 2  # the burst, then the rate refuses
            with pytest.raises(TaskyardError) as info:
                await ops.submit("echo", queue="nobody")  # the owner's own bucket is empty
            assert info.value.reason == "RATE_LIMITED"
            assert (await other.submit("echo", queue="nobody")).id  # not another identity's
            with pytest.raises(TaskyardError) as run:
                await ops.run_schedule("tick")
            assert run.value.reason == "RATE_LIMITED"
    finally:
        await broker.stop()
