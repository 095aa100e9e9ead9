"""Leases belong to the identity whose stream holds them: another worker identity that learns
a lease id can neither heartbeat, complete nor re-adopt it, even one allowed the same queue."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from broker.core.models import Claimed, LeaseRef
from broker.engine import dispatcher
from tests.helpers import Broker
from tests.security.support import LeaseStream, TokensFile
from worker_sdk import Client


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("root", "admin")
    tokens.add("cpu", "worker", queues=["default"], types=["echo"])
    tokens.add("cpu-2", "worker", queues=["default"], types=["echo"])
    tokens.add("gpu", "worker", queues=["gpu"], types=["render"])
    return tokens


@pytest.fixture
def broker_args(tokens: TokensFile) -> list[str]:
    return ["--tokens", str(tokens.path)]


async def _leased(
    broker: Broker, tokens: TokensFile, channel: grpc.aio.Channel
) -> tuple[Client, LeaseStream, str, str]:
    """A default-queue task leased to `cpu`: (admin client, cpu's stream, task id, lease id)."""
    root = Client(broker.target, token=tokens.tokens["root"])
    task = await root.submit("echo", {"n": 1})
    holder = LeaseStream(channel, tokens.metadata("cpu"))
    await holder.hello(task_types=["echo"], credits=1)
    (assigned,) = await holder.assignments()
    assert assigned.task_id == task.id
    return root, holder, task.id, assigned.lease_id


@pytest.mark.parametrize("intruder", ["gpu", "cpu-2"])
async def test_another_identity_cannot_complete_or_heartbeat_a_lease(
    broker: Broker, tokens: TokensFile, intruder: str
) -> None:
    async with broker.channel() as channel:
        root, holder, task_id, lease_id = await _leased(broker, tokens, channel)
        async with root:
            other = LeaseStream(channel, tokens.metadata(intruder))
            types = ["render"] if intruder == "gpu" else ["echo"]
            queues = ["gpu"] if intruder == "gpu" else []
            await other.hello(task_types=types, queues=queues)
            (beat,) = await other.heartbeat((task_id, lease_id))
            assert beat.error.reason == "LEASE_LOST"
            forged = await other.complete(task_id, lease_id, b"forged")
            assert forged.error.reason == "LEASE_LOST"
            assert (await root.get(task_id)).state.value == "running"

            # The holder's own lease is untouched and ends as it reports.
            (own_beat,) = await holder.heartbeat((task_id, lease_id))
            assert not own_beat.HasField("error")
            done = await holder.complete(task_id, lease_id, b"genuine")
            assert not done.HasField("error")
            task = await root.get(task_id)
            assert task.state.value == "succeeded" and task.result == b"genuine"
            other.close()
            holder.close()


async def test_after_a_restart_only_the_holder_re_adopts_its_lease(
    broker: Broker, tokens: TokensFile
) -> None:
    """The holder is recorded with the lease, so it survives a restart of the broker."""
    async with broker.channel() as channel:
        root, holder, task_id, lease_id = await _leased(broker, tokens, channel)
        await root.close()
        await broker.stop()  # with the stream open: leases stay with their workers
        holder.close()
    await broker.start()
    held = [{"task_id": task_id, "lease_id": lease_id}]
    async with (
        broker.channel() as channel,
        Client(broker.target, token=tokens.tokens["root"]) as root,
    ):
        thief = LeaseStream(channel, tokens.metadata("cpu-2"))
        welcome = await thief.hello(task_types=["echo"], held_leases=held)
        assert [(r.task_id, r.lease_id) for r in welcome.lost_leases] == [(task_id, lease_id)]
        assert (await thief.complete(task_id, lease_id, b"forged")).error.reason == "LEASE_LOST"

        again = LeaseStream(channel, tokens.metadata("cpu"))
        welcome = await again.hello(task_types=["echo"], held_leases=held)
        assert list(welcome.lost_leases) == []
        assert not (await again.complete(task_id, lease_id, b"genuine")).HasField("error")
        task = await root.get(task_id)
        assert task.state.value == "succeeded" and task.result == b"genuine"
        thief.close()
        again.close()


class _Holder:
    key = "session"
    worker_id = "w"
    identity: str | None = "cpu"
    types: tuple[str, ...] = ("echo",)
    queues: tuple[str, ...] = ("default",)

    @property
    def open(self) -> bool:
        return True

    def held_leases(self) -> list[LeaseRef]:
        return []

    def deliver(self, claimed: list[Claimed]) -> int:
        return 0

    def stop_lease(self, ref: LeaseRef, reason: dispatcher.StopReason) -> None:
        return None

    def room(self) -> int:
        return 1 << 20


def test_lease_ids_come_from_the_cryptographic_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []

    def randbits(k: int) -> int:
        drawn.append(k)
        return 12345

    monkeypatch.setattr("secrets.randbits", randbits)
    plans = dispatcher.Dispatcher(wake=lambda: None)
    holder = _Holder()
    plans.attach(holder)
    plans.grant(holder, 5)
    plans.mark_ready(["default"])
    (plan,) = plans.plan()
    assert plan.lease_id == 12345 and drawn == [63]


async def test_a_task_id_repeated_in_one_heartbeat_batch_is_reported(
    broker: Broker, tokens: TokensFile
) -> None:
    """Before: both heartbeats were acknowledged as if each had extended the lease."""
    async with broker.channel() as channel:
        root, holder, task_id, lease_id = await _leased(broker, tokens, channel)
        async with root:
            first, again = await holder.heartbeat((task_id, lease_id), (task_id, lease_id))
            assert not first.HasField("error") and first.lease_expire_time.seconds > 0
            assert again.error.reason == "DUPLICATE_TASK_ID" and again.error.code == 3
            holder.close()
