"""Tokens: reloaded on SIGHUP (revocation ends open streams), never logged; tasks belong to
their creator; identities limited to queues and task types; the no-auth warning."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.helpers import Broker
from tests.security.support import TokensFile, call, outcome_of
from worker_sdk import Client, TaskSpec, TaskyardError


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    tokens.add("billing", "submitter", queues=["billing"])
    tokens.add("ops", "operator")
    tokens.add("ops-billing", "operator", queues=["billing"])
    tokens.add("gpu", "worker", queues=["gpu"], types=["render"])
    tokens.add("root", "admin")
    return tokens


@pytest.fixture
def broker_args(tokens: TokensFile) -> list[str]:
    return ["--tokens", str(tokens.path)]


def as_(broker: Broker, tokens: TokensFile, name: str) -> Client:
    return Client(broker.target, token=tokens.tokens[name])


async def refused(coro: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(TaskyardError) as info:
        await coro  # type: ignore[misc]
    return info.value.code, info.value.reason


DENIED = grpc.StatusCode.PERMISSION_DENIED


async def reload(broker: Broker) -> None:
    assert broker.process is not None
    after = broker.process.line_count
    await broker.process.signal(signal.SIGHUP)
    await broker.process.wait_for_line("tokens file (reloaded|NOT reloaded)", after=after)


async def test_a_submitter_acts_only_on_its_own_tasks(broker: Broker, tokens: TokensFile) -> None:
    async with (
        as_(broker, tokens, "alice") as alice,
        as_(broker, tokens, "bob") as bob,
        as_(broker, tokens, "ops") as ops,
    ):
        mine = await alice.submit("echo", {"secret": 1})
        theirs = await bob.submit("echo")
        assert (await alice.get(mine.id)).payload == {"secret": 1}
        for attempt in (
            bob.get(mine.id),
            bob.cancel(mine.id),
            bob.attempts(mine.id),
            _first(bob.watch(mine.id)),
            # An unknown id looks the same as someone else's task (AIP-211).
            bob.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ):
            assert await refused(attempt) == (DENIED, "NOT_TASK_OWNER")
        assert [t.id async for t in alice.list()] == [mine.id]
        assert [t.id async for t in bob.list()] == [theirs.id]
        assert {t.id async for t in ops.list()} == {mine.id, theirs.id}
        assert (await alice.get(mine.id)).state.value == "pending"
        assert (await alice.cancel(mine.id)).state.value == "cancelled"


async def _first(stream: object) -> object:
    async for item in stream:  # type: ignore[attr-defined]
        return item
    return None


async def test_an_identity_limited_to_queues_stays_in_them(
    broker: Broker, tokens: TokensFile
) -> None:
    async with (
        as_(broker, tokens, "billing") as billing,
        as_(broker, tokens, "ops-billing") as ops_billing,
        as_(broker, tokens, "root") as root,
    ):
        assert (await billing.submit("invoice", queue="billing")).id
        assert await refused(billing.submit("invoice")) == (DENIED, "QUEUE_NOT_ALLOWED")
        mixed = [TaskSpec("invoice", queue="billing"), TaskSpec("invoice", queue="default")]
        assert await refused(billing.submit_many(mixed)) == (DENIED, "QUEUE_NOT_ALLOWED")
        other = await root.submit("echo", queue="default")
        assert await ops_billing.retry_all("billing") == 0
        assert await refused(ops_billing.retry_all("default")) == (DENIED, "QUEUE_NOT_ALLOWED")
        assert await refused(ops_billing.purge()) == (DENIED, "QUEUE_NOT_ALLOWED")
        assert await refused(ops_billing.get(other.id)) == (DENIED, "QUEUE_NOT_ALLOWED")
        assert len([t async for t in root.list()]) == 2  # the refused batch stored nothing


async def test_a_worker_leases_only_its_queues_and_types(
    broker: Broker, tokens: TokensFile
) -> None:
    metadata = tokens.metadata("gpu")
    path = "/taskyard.v1.WorkerService/Lease"
    cases = [
        (pb.Hello(worker_id="g", task_types=["render"], queues=["gpu"]), "OK"),
        (pb.Hello(worker_id="g", task_types=["render"]), "QUEUE_NOT_ALLOWED"),
        (
            pb.Hello(worker_id="g", task_types=["render", "mine"], queues=["gpu"]),
            "TYPE_NOT_ALLOWED",
        ),
    ]
    async with broker.channel() as channel:
        for hello, reason in cases:
            request = pb.LeaseRequest(hello=hello)
            outcome = await call(channel, path, request, metadata=metadata, streaming="bidi")
            assert (outcome.reason or "OK") == reason, hello


async def test_sighup_reloads_the_tokens_file_and_revokes_streams(
    broker: Broker, tokens: TokensFile
) -> None:
    carol = tokens.add("carol", "submitter")
    async with Client(broker.target, token=carol) as client:
        assert await refused(client.submit("echo")) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_TOKEN",
        )
        await reload(broker)
        assert (await client.submit("echo")).id

    # An open Lease stream of a token removed from the file ends at the reload.
    async with broker.channel() as channel:
        lease: Any = channel.stream_stream("/taskyard.v1.WorkerService/Lease")(
            metadata=tokens.metadata("gpu")
        )
        hello = pb.Hello(worker_id="g", task_types=["render"], queues=["gpu"])
        await lease.write(pb.LeaseRequest(hello=hello).SerializeToString())
        assert pb.LeaseResponse.FromString(await lease.read()).HasField("welcome")
        tokens.remove("gpu")
        await reload(broker)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await lease.read()
        assert (outcome_of(ended.value).code, outcome_of(ended.value).reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "REVOKED",
        )


async def test_a_broken_tokens_file_keeps_the_previous_identities(
    broker: Broker, tokens: TokensFile
) -> None:
    good = tokens.path.read_text()
    tokens.path.write_text(good + "\n[[token]]\nid = 'oops'\n")
    await reload(broker)
    async with as_(broker, tokens, "alice") as alice:
        assert (await alice.submit("echo")).id
    assert broker.process is not None
    await broker.process.wait_for_line("tokens file NOT reloaded")


async def test_tokens_never_reach_the_log(broker: Broker, tokens: TokensFile) -> None:
    wrong = "tyk_0123456789ab_this-is-not-a-valid-secret-at-all"
    async with Client(broker.target, token=wrong) as stranger:
        await refused(stranger.submit("echo"))
    async with as_(broker, tokens, "alice") as alice:
        await alice.submit("echo")
        await refused(alice.purge())
    await reload(broker)
    await broker.stop()
    log = (broker.workdir / "broker.log").read_text()
    assert "refused /taskyard.v1.TaskService/CreateTask" in log  # refusals are logged ...
    for secret in [*tokens.tokens.values(), wrong]:
        assert secret.split("_", 2)[2] not in log  # ... but never a secret


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        ([], "WITHOUT AUTHENTICATION"),
        (["--tokens", "TOKENS"], "without TLS"),
    ],
)
async def test_listening_beyond_loopback_without_protection_warns_loudly(
    db_url: str, tmp_path: Path, tokens: TokensFile, args: list[str], warning: str
) -> None:
    args = [str(tokens.path) if a == "TOKENS" else a for a in args]
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=args)
    # The helper listens on 127.0.0.1:PORT; a later --listen wins.
    broker.extra_args = [*args, "--listen", "0.0.0.0:0"]
    await broker.start()
    assert broker.process is not None
    await broker.process.wait_for_line(f"SECURITY WARNING: .*{warning}")
    await broker.stop()


async def test_loopback_without_auth_is_quiet_development(db_url: str, tmp_path: Path) -> None:
    plain = Broker(db_url=db_url, workdir=tmp_path)
    await plain.start()
    assert plain.process is not None
    await plain.process.wait_for_line("authentication: OFF")
    await plain.stop()
    assert "SECURITY WARNING" not in (tmp_path / "broker.log").read_text()
