"""Who sees which events, over gRPC and HTTP; and a dropped HTTP stream ends on the broker.

A broker with a tokens file: two submitters (alice, bob), an operator limited
to queue q1 (oscar) and an admin (root).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.helpers import Broker
from tests.http_client import Http, error_reason
from tests.security.support import TokensFile
from worker_sdk import Client

DEADLINE_S = 30.0


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    tokens.add("oscar", "operator", queues=["q1"])
    tokens.add("root", "admin")
    return tokens


@pytest.fixture
def broker_args(tokens: TokensFile) -> list[str]:
    return [
        "--tokens", str(tokens.path),
        "--http-listen", "127.0.0.1:0",
        "--max-streams-per-identity", "1",
    ]  # fmt: skip


async def _task_ids_until(stream: object, last: str) -> list[str]:
    """Task ids of the task events read until `last` shows up."""
    seen: list[str] = []
    async with asyncio.timeout(DEADLINE_S):
        while last not in seen:
            message = await stream.read()  # type: ignore[attr-defined]
            assert message is not None, getattr(stream, "end", None)
            for event in message.get("events", []):
                kind = event.get("taskState") or event.get("taskProgress")
                assert kind is not None, event  # no schedule, worker or gap events here
                seen.append(kind["taskId"])
    return seen


async def test_a_submitter_sees_only_its_own_tasks_events(
    broker: Broker, tokens: TokensFile
) -> None:
    alice = Http(broker.http_port, token=tokens.tokens["alice"])
    async with alice.stream("EventService/WatchEvents", {}) as stream:
        assert await stream.read() is not None
        async with (
            Client(broker.target, token=tokens.tokens["bob"]) as bob,
            Client(broker.target, token=tokens.tokens["alice"]) as mine,
        ):
            theirs = await bob.submit("echo")
            own = await mine.submit("echo")
            await bob.cancel(theirs.id)
            await mine.cancel(own.id)
            last = await mine.submit("echo")
        seen = await _task_ids_until(stream, last.id)
    assert theirs.id not in seen
    assert seen == [own.id, own.id, last.id]  # created, cancelled; created


async def test_a_queue_limited_operator_names_its_queues_and_sees_only_them(
    broker: Broker, tokens: TokensFile
) -> None:
    oscar = Http(broker.http_port, token=tokens.tokens["oscar"])
    async with oscar.stream("EventService/WatchEvents", {}) as refused:
        assert await refused.read() is None
    assert refused.end is not None
    assert refused.end["error"]["code"] == "permission_denied"
    assert error_reason(refused.end["error"]) == "QUEUE_NOT_ALLOWED"
    async with oscar.stream("EventService/WatchEvents", {"queues": ["q1"]}) as stream:
        assert await stream.read() is not None
        async with Client(broker.target, token=tokens.tokens["alice"]) as alice:
            other = await alice.submit("echo", queue="q2")
            last = await alice.submit("echo", queue="q1")
        seen = await _task_ids_until(stream, last.id)
    assert seen == [last.id] and other.id not in seen


async def test_no_token_no_events(broker: Broker) -> None:
    async with Http(broker.http_port).stream("EventService/WatchEvents", {}) as stream:
        assert await stream.read() is None
    assert stream.end is not None
    assert stream.end["error"]["code"] == "unauthenticated"
    assert error_reason(stream.end["error"]) == "TOKEN_REQUIRED"


async def test_a_dropped_http_stream_is_closed_on_the_broker(
    broker: Broker, tokens: TokensFile
) -> None:
    """root may hold one stream: a second is refused until the first one's client goes away."""
    root = Http(broker.http_port, token=tokens.tokens["root"])
    async with root.stream("EventService/WatchEvents", {}) as first:
        assert await first.read() is not None
        async with root.stream("EventService/WatchEvents", {}) as second:
            assert await second.read() is None
        assert second.end is not None
        assert error_reason(second.end["error"]) == "TOO_MANY_STREAMS"
    # The connection is gone; the broker notices and ends the stream (it cannot
    # be awaited from here, so poll with a deadline).
    deadline = time.monotonic() + DEADLINE_S
    while True:
        async with root.stream("EventService/WatchEvents", {}) as third:
            if await third.read() is not None:
                break
        assert time.monotonic() < deadline, third.end
        await asyncio.sleep(0.1)
