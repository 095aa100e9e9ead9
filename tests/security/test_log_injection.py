"""What a client sends cannot forge, hide or flood the broker's log: its strings are escaped in
the text and JSON formats, and refusals are logged at most once per peer per interval."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import grpc
import pytest

from broker.logs import escape
from broker.security.refusals import RefusalLog, peer_host
from taskyard.v1 import task_pb2
from taskyard.v1 import task_service_pb2 as ts
from tests.helpers import Broker
from tests.security.support import LeaseStream, TokensFile, call

FORGED = "<forged line>"
# A newline to start a line, ANSI (clear screen, red), a right-to-left override.
HOSTILE = f"py\n{FORGED} \x1b[2J\x1b[31mred\u202eesrever"


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("w", "worker")
    return tokens


def _log(broker: Broker) -> str:
    return (broker.workdir / "broker.log").read_text()


def _assert_clean(text: str) -> None:
    for line in text.splitlines():
        assert not line.startswith(FORGED), line
    for raw in ("\x1b", "\u202e"):
        assert raw not in text, f"{raw!r} reached the log"


async def _start(db_url: str, tmp_path: Path, *args: str) -> Broker:
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=list(args))
    await broker.start()
    return broker


async def test_a_method_path_with_a_newline_cannot_start_a_line(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    broker = await _start(db_url, tmp_path, "--tokens", str(tokens.path))
    try:
        assert broker.process is not None
        async with broker.channel() as channel:
            outcome = await call(channel, f"/x\n{FORGED}", b"")
        assert (outcome.code, outcome.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REQUIRED")
        await broker.process.wait_for_line(re.escape(f"refused /x\\n{FORGED} from"))
    finally:
        await broker.stop()
    _assert_clean(_log(broker))


@pytest.mark.parametrize("json_logs", [False, True], ids=["text", "json"])
async def test_hello_strings_are_escaped_in_the_worker_line(
    db_url: str, tmp_path: Path, tokens: TokensFile, json_logs: bool
) -> None:
    extra = ["--log-json"] if json_logs else []
    broker = await _start(db_url, tmp_path, "--tokens", str(tokens.path), *extra)
    accepted = False
    try:
        assert broker.process is not None
        async with broker.channel() as channel:
            lease = LeaseStream(channel, tokens.metadata("w"))
            try:
                await lease.hello(task_types=["echo"], sdk_language=HOSTILE, sdk_version=HOSTILE)
            except grpc.aio.AioRpcError as refused:
                # The strict handshake refuses such strings outright (nothing is logged).
                assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "hello.sdk_language" in (refused.details() or "")
                lease.close()
            else:
                accepted = True
                await broker.process.wait_for_line("worker w connected")
                lease.close()
                await broker.process.wait_for_line("worker w disconnected")
    finally:
        await broker.stop()
    text = _log(broker)
    _assert_clean(text)
    if json_logs:
        for line in text.splitlines():
            json.loads(line)  # one object per line: nothing split it
    elif accepted:
        assert escape(HOSTILE) in text


async def test_refusals_are_logged_once_per_peer_per_interval_with_a_count(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    """Before: one line per refused call (an outsider wrote ~1,400 lines a second).

    With the default interval (10 s): the summary comes when it ends."""
    broker = await _start(db_url, tmp_path, "--tokens", str(tokens.path))
    request = ts.CreateTaskRequest(task=task_pb2.Task(type="echo"))
    try:
        assert broker.process is not None
        async with broker.channel() as channel:
            outcomes = await asyncio.gather(
                *(call(channel, "/taskyard.v1.TaskService/CreateTask", request) for _ in range(300))
            )
        assert {o.reason for o in outcomes} == {"TOKEN_REQUIRED"}
        # Every refusal is accounted for: one line, then summaries with counts.
        logged = 0
        after = 0
        while logged < 300:
            match = await broker.process.wait_for_line(
                r"refused (?:(\d+) more calls from ipv4:127\.0\.0\.1|/taskyard)", after=after
            )
            logged += int(match.group(1) or 1)
            after = 1 + next(
                i
                for i, line in enumerate(_log(broker).splitlines())
                if i >= after and match.group(0) in line
            )
        assert logged == 300
    finally:
        await broker.stop()
    lines = [line for line in _log(broker).splitlines() if "refused" in line]
    assert len(lines) <= 3, lines  # the first, then one per interval the burst lasted


def test_escape_leaves_plain_text_and_escapes_what_could_forge_or_hide() -> None:
    assert escape("worker-1 (python 3.12; types a,b)") == "worker-1 (python 3.12; types a,b)"
    assert escape("é 日本") == "é 日本"
    assert escape("a\nb\r\tc\\d") == "a\\nb\\r\\tc\\\\d"
    assert escape("\x1b[31m\x85\u2028\u202e\u2066") == "\\x1b[31m\\x85\\u2028\\u202e\\u2066"


async def test_the_refusal_log_keeps_peers_apart_and_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog(interval_s=60, max_peers=2)
    with caplog.at_level("INFO", logger="taskyard.security"):
        for peer in ("ipv4:10.0.0.1:1000", "ipv4:10.0.0.1:1001", "ipv4:10.0.0.2:5"):
            refusals.refused("/m", peer, "TOKEN_REQUIRED", "no token")
        for peer in ("ipv4:10.0.0.3:1", "ipv4:10.0.0.4:1"):  # past max_peers: one shared entry
            refusals.refused("/m", peer, "TOKEN_REQUIRED", "no token")
    assert [r.getMessage().split(" from ")[1].split(":")[1] for r in caplog.records] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]
    assert peer_host("ipv6:[::1]:443") == "ipv6:[::1]" and peer_host("unix:/s") == "unix:/s"
