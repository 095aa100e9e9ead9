"""Two brokers on one PostgreSQL database finish a join's parents at the same moment.

The parents of each join are leased on different replicas, by workers that
speak the Lease protocol directly, and completed there at once: the two
commits count into the same gate concurrently. Every join must be released
exactly once: none stuck BLOCKED (each replica saw the other's parent still
running) and none handed out twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.conftest import _postgres
from tests.helpers import Broker, Stubs, stubs
from worker_sdk import Client, TaskState, Workflow

ROUNDS = 40
Call = grpc.aio.StreamStreamCall[pb.LeaseRequest, pb.LeaseResponse]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[list[Broker]]:
    url = await _postgres.create()
    brokers = []
    for i in range(2):
        workdir = tmp_path / f"replica{i}"
        workdir.mkdir()
        brokers.append(Broker(db_url=url, workdir=workdir, extra_args=["--lease-duration", "30"]))
    try:
        await asyncio.gather(*(b.start() for b in brokers))
        yield brokers
    finally:
        for b in brokers:
            if b.process is not None and b.process.proc.returncode is None:
                await b.stop()
        await _postgres.drop(url)


async def open_lease(stub: Stubs, worker_id: str, types: list[str], credits: int) -> Call:
    call: Call = stub.workers.Lease()
    hello = pb.Hello(worker_id=worker_id, task_types=types, credits=credits)
    await call.write(pb.LeaseRequest(hello=hello))
    await read_kind(call, "welcome")
    return call


async def read_kind(call: Call, kind: str) -> pb.LeaseResponse:
    while True:
        message = await call.read()
        assert isinstance(message, pb.LeaseResponse), "the stream ended"
        if message.WhichOneof("kind") == kind:
            return message


async def take(call: Call, n: int) -> list[pb.Assignment]:
    got: list[pb.Assignment] = []
    async with asyncio.timeout(60):
        while len(got) < n:
            got += (await read_kind(call, "assignments")).assignments.assignments
    return got


async def complete_each(call: Call, leases: list[pb.Assignment]) -> None:
    """One completion per message, written back to back (a stream takes one write at a
    time), then every ack: on the broker, many small commits."""
    for a in leases:
        c = pb.Completion(task_id=a.task_id, lease_id=a.lease_id)
        c.result.json.string_value = a.workflow_node
        await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[c])))
    acks: list[pb.CompletionAck] = []
    async with asyncio.timeout(60):
        while len(acks) < len(leases):
            acks += (await read_kind(call, "completion_acks")).completion_acks.acks
    assert [a.HasField("error") for a in acks] == [False] * len(leases)


def pairs(rounds: int) -> list[Workflow]:
    out = []
    for _ in range(rounds):
        wf = Workflow("pair")
        a = wf.node("a", "rep.a")
        b = wf.node("b", "rep.b")
        wf.node("j", "rep.j", after=[a, b])
        out.append(wf)
    return out


async def test_parents_finishing_at_once_on_two_replicas_release_each_join_once(
    pair: list[Broker],
) -> None:
    one, two = pair
    async with Client(one.target) as client, stubs(one) as s1, stubs(two) as s2:
        created = [await client.create_workflow(wf) for wf in pairs(ROUNDS)]
        on_one = await open_lease(s1, "w-a", ["rep.a"], ROUNDS)
        on_two = await open_lease(s2, "w-b", ["rep.b"], ROUNDS)
        leases_a, leases_b = await asyncio.gather(take(on_one, ROUNDS), take(on_two, ROUNDS))
        # Both replicas at once: their commits count into the same gates concurrently.
        await asyncio.gather(complete_each(on_one, leases_a), complete_each(on_two, leases_b))
        joins = await open_lease(s2, "w-j", ["rep.j"], 2 * ROUNDS)
        handed = await take(joins, ROUNDS)
        final = [await client.get_workflow(w.id) for w in created]
        extra = await _more(joins)  # last: its timeout cancels the stream
        for call in (on_one, on_two, joins):
            call.cancel()

    assert extra == [], "a join was handed out twice"
    assert Counter(a.workflow_node for a in handed) == {"j": ROUNDS}
    assert len({a.task_id for a in handed}) == ROUNDS
    assert {w.node("j").task_id for w in final} == {a.task_id for a in handed}
    assert {w.node("j").state for w in final} == {TaskState.RUNNING}
    for a in handed:
        assert {p.node: p.result.json.string_value for p in a.parents} == {"a": "a", "b": "b"}


async def _more(call: Call) -> list[pb.Assignment]:
    """Assignments beyond the expected ones, within a moment (there must be none).

    Cancelling the pending read at the timeout cancels the whole stream.
    """
    try:
        async with asyncio.timeout(1.5):
            return list((await read_kind(call, "assignments")).assignments.assignments)
    except TimeoutError:
        return []


async def test_a_node_added_while_its_parent_finishes_on_another_replica_is_released_once(
    pair: list[Broker],
) -> None:
    one, two = pair
    async with (
        Client(one.target) as on_one,
        Client(two.target) as on_two,
        stubs(one) as s1,
        stubs(two) as s2,
    ):
        created = []
        for _ in range(ROUNDS):
            wf = Workflow("grow")
            wf.node("p", "rep.a")
            wf.node("hold", "rep.none")  # nobody runs it: the workflow stays unfinished
            created.append(await on_one.create_workflow(wf))
        parents = await open_lease(s1, "w-a", ["rep.a"], ROUNDS)
        leases = await take(parents, ROUNDS)
        more = Workflow()
        more.node("c", "rep.j", after=["p"])
        # The parents finish on replica one while replica two adds their children.
        await asyncio.gather(
            complete_each(parents, leases),
            *(on_two.add_workflow_nodes(w.id, more) for w in created),
        )
        children = await open_lease(s2, "w-c", ["rep.j"], 2 * ROUNDS)
        handed = await take(children, ROUNDS)
        extra = await _more(children)
        for call in (parents, children):
            call.cancel()

    assert extra == []
    assert len({a.task_id for a in handed}) == ROUNDS
    assert all([p.node for p in a.parents] == ["p"] for a in handed)
