"""Secrets stay off the command line (environment or file, and a warning when typed there), and
the tokens file warns about itself: open to others, or empty after a reload."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.cli import taskyard
from tests.helpers import Broker
from tests.security.support import TokensFile
from worker_sdk import Client

ARGV_WARNING = re.compile(r"WARNING: .*visible to every user of this machine \(ps\)")


@pytest.fixture
def tokens(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    return tokens


async def _start(db_url: str, tmp_path: Path, *args: str) -> Broker:
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=list(args))
    await broker.start()
    return broker


async def test_the_database_url_can_come_from_a_file(db_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text(db_url + "\n")
    run = await taskyard("db", "upgrade", "--db-file", str(secret))
    assert run.code == 0 and "schema:" in run.out, run.err
    assert not ARGV_WARNING.search(run.err)
    run = await taskyard("db", "upgrade", env={"TASKYARD_DB_FILE": str(secret)})
    assert run.code == 0, run.err


async def test_a_password_on_the_command_line_is_warned_about(db_url: str) -> None:
    # Port 1 is closed: the command fails after warning, nothing depends on a server.
    run = await taskyard("db", "upgrade", "--db", "postgresql://app:hunter2@127.0.0.1:1/x")
    assert ARGV_WARNING.search(run.err), run.err
    assert "hunter2" not in run.err
    run = await taskyard("db", "upgrade", env={"TASKYARD_DB": "postgresql://a:b@127.0.0.1:1/x"})
    assert not ARGV_WARNING.search(run.err), run.err


async def test_help_says_where_else_secrets_can_come_from() -> None:
    broker_help = (await taskyard("broker", "--help")).out
    assert "TASKYARD_DB" in broker_help and "--db-file" in broker_help
    assert "--metrics-token-file" in broker_help
    list_help = (await taskyard("list", "--help")).out
    assert "TASKYARD_TOKEN" in list_help and "--token-file" in list_help


async def test_the_token_can_come_from_a_file_and_typing_it_warns(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    broker = await _start(db_url, tmp_path, "--tokens", str(tokens.path))
    try:
        async with Client(broker.target, token=tokens.tokens["alice"]) as alice:
            await alice.submit("echo")
        token_file = tmp_path / "token"
        token_file.write_text(tokens.tokens["alice"] + "\n")
        run = await taskyard("list", "--token-file", str(token_file), target=broker.target)
        assert run.code == 0 and "echo" in run.out, run.err
        assert not ARGV_WARNING.search(run.err)
        run = await taskyard("list", "--token", tokens.tokens["alice"], target=broker.target)
        assert run.code == 0 and ARGV_WARNING.search(run.err), run.err
        assert tokens.tokens["alice"] not in run.err
    finally:
        await broker.stop()


async def test_a_tokens_file_others_may_read_is_warned_about(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    tokens.path.chmod(0o644)
    broker = await _start(db_url, tmp_path, "--tokens", str(tokens.path))
    try:
        assert broker.process is not None
        await broker.process.wait_for_line(
            r"WARNING .*tokens file .* readable or writable by group or others \(mode 0644\)"
        )
    finally:
        await broker.stop()


async def test_a_reload_that_finds_no_tokens_is_a_warning_with_the_count(
    db_url: str, tmp_path: Path, tokens: TokensFile
) -> None:
    broker = await _start(db_url, tmp_path, "--tokens", str(tokens.path))
    try:
        assert broker.process is not None
        after = broker.process.line_count
        tokens.remove("alice")  # an empty file: valid TOML, no identities
        await broker.process.signal(signal.SIGHUP)
        await broker.process.wait_for_line(
            r"WARNING .*tokens file reloaded: 0 tokens, 0 certificates", after=after
        )
    finally:
        await broker.stop()
