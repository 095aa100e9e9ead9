"""TLS and mutual TLS handshakes with certificates made in the test; the SDK, worker and CLI
connect with a CA file, a client certificate and a token."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

import grpc
import pytest

from tests.helpers import ROOT, Broker, python_env, start_worker
from tests.http_client import Http
from tests.security.support import CertificateAuthority, TokensFile
from worker_sdk import Client, TaskyardError


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


def tls_args(ca: CertificateAuthority, *, mutual: bool = False) -> list[str]:
    server = ca.server()
    args = ["--tls-cert", str(server.cert), "--tls-key", str(server.key)]
    return args + (["--tls-client-ca", str(ca.cert_path)] if mutual else [])


async def _unreachable(client: Client) -> TaskyardError:
    """The error of a read that cannot succeed: unknown task, or no way in."""
    with pytest.raises(TaskyardError) as info:
        await client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    return info.value


async def test_tls_serves_a_client_that_trusts_the_ca(
    db_url: str, tmp_path: Path, ca: CertificateAuthority
) -> None:
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=tls_args(ca))
    await broker.start()
    try:
        async with Client(broker.target, ca_file=str(ca.cert_path)) as client:
            task = await client.submit("echo", {"over": "tls"})
            assert (await client.get(task.id)).payload == {"over": "tls"}
        # Plaintext against a TLS port: the handshake fails, nothing is served.
        async with Client(broker.target, timeout=3) as plain:
            error = await _unreachable(plain)
        assert error.code is grpc.StatusCode.UNAVAILABLE
        # A CA that did not sign the broker's certificate is refused.
        other = CertificateAuthority(tmp_path, name="someone-else")
        async with Client(broker.target, ca_file=str(other.cert_path), timeout=3) as wrong:
            error = await _unreachable(wrong)
        assert error.code is grpc.StatusCode.UNAVAILABLE
    finally:
        await broker.stop()


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    db_url: str, tmp_path: Path, ca: CertificateAuthority
) -> None:
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=tls_args(ca, mutual=True))
    await broker.start()
    mine = ca.issue("app-1")
    stranger = CertificateAuthority(tmp_path, name="stranger-ca").issue("intruder")
    try:
        async with Client(
            broker.target,
            ca_file=str(ca.cert_path),
            cert_file=str(mine.cert),
            key_file=str(mine.key),
        ) as client:
            task = await client.submit("echo", 1)
            assert task.id
        async with Client(broker.target, ca_file=str(ca.cert_path), timeout=3) as anonymous:
            assert (await _unreachable(anonymous)).code is grpc.StatusCode.UNAVAILABLE
        async with Client(
            broker.target,
            ca_file=str(ca.cert_path),
            cert_file=str(stranger.cert),
            key_file=str(stranger.key),
            timeout=3,
        ) as intruder:
            assert (await _unreachable(intruder)).code is grpc.StatusCode.UNAVAILABLE
    finally:
        await broker.stop()


async def test_a_client_certificate_named_in_the_tokens_file_gets_its_roles(
    db_url: str, tmp_path: Path, ca: CertificateAuthority
) -> None:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add_certificate("ops-laptop", "operator")
    args = [*tls_args(ca, mutual=True), "--tokens", str(tokens.path)]
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=args)
    await broker.start()
    ops = ca.issue("ops-laptop")
    unlisted = ca.issue("unlisted")
    ca_file = str(ca.cert_path)
    try:
        async with Client(
            broker.target, cert_file=str(ops.cert), key_file=str(ops.key), ca_file=ca_file
        ) as operator:
            assert [t async for t in operator.list()] == []
            with pytest.raises(TaskyardError) as denied:
                await operator.submit("echo")
            assert (denied.value.code, denied.value.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_ALLOWED",
            )
        # A token wins over the certificate it travels with.
        async with Client(
            broker.target,
            cert_file=str(ops.cert),
            key_file=str(ops.key),
            token=tokens.tokens["alice"],
            ca_file=ca_file,
        ) as alice:
            created = await alice.submit("echo")
            assert created.id
        async with Client(
            broker.target, cert_file=str(unlisted.cert), key_file=str(unlisted.key), ca_file=ca_file
        ) as stranger:
            error = await _unreachable(stranger)
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "UNKNOWN_CERTIFICATE",
        )
    finally:
        await broker.stop()


async def test_worker_and_cli_connect_with_tls_and_a_token(
    db_url: str, tmp_path: Path, ca: CertificateAuthority
) -> None:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("cli-user", "submitter")
    tokens.add("worker-1", "worker")
    tokens.add("ops", "operator")
    args = [*tls_args(ca), "--tokens", str(tokens.path)]
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=args)
    await broker.start()
    try:
        env = {"TASKYARD_TOKEN": tokens.tokens["worker-1"], "TASKYARD_CA": str(ca.cert_path)}
        worker = await start_worker(broker, tmp_path, name="secure-worker", env=env)
        code, out = await _cli(
            "submit", "echo", "--payload", '{"via": "cli"}', "--wait",
            "--target", broker.target,
            env={"TASKYARD_TOKEN": tokens.tokens["cli-user"], "TASKYARD_CA": str(ca.cert_path)},
        )  # fmt: skip
        assert code == 0, out
        assert '"via": "cli"' in out
        code, out = await _cli("list", "--target", broker.target, "--ca", str(ca.cert_path), env={})
        assert code == 1
        assert "TOKEN_REQUIRED" in out
        # The operator commands take the same flags.
        operator = {"TASKYARD_TOKEN": tokens.tokens["ops"], "TASKYARD_CA": str(ca.cert_path)}
        for command in (["queue", "list"], ["schedule", "list"]):
            code, out = await _cli(*command, "--target", broker.target, env=operator)
            assert code == 0, out
        await worker.stop()
    finally:
        await broker.stop()


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    clean = {k: v for k, v in python_env(env).items() if not k.startswith("TASKYARD_")}
    clean.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", *args, env=clean, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def test_a_token_is_not_sent_in_clear_to_a_remote_broker() -> None:
    with pytest.raises(ValueError, match="clear text"):
        Client("broker.example:50051", token="tyk_000000000000_secretsecretsecret")


async def test_the_http_api_serves_https_with_the_broker_s_certificate(
    db_url: str, tmp_path: Path, ca: CertificateAuthority
) -> None:
    args = [*tls_args(ca), "--http-listen", "127.0.0.1:0"]
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=args)
    await broker.start()
    try:
        trusting = ssl.create_default_context(cafile=str(ca.cert_path))
        reply = await Http(broker.http_port, tls=trusting).call("SystemService/GetSystemInfo")
        assert reply.status == 200 and reply.body["version"]
        assert not await _served_in_plain_text(broker.http_port)
        stranger = ssl.create_default_context()  # does not trust the test CA
        with pytest.raises(ssl.SSLError):
            await Http(broker.http_port, tls=stranger).call("SystemService/GetSystemInfo")
    finally:
        await broker.stop()


async def _served_in_plain_text(port: int) -> bool:
    try:
        reply = await Http(port).call("SystemService/GetSystemInfo")
    except Exception:  # the TLS server drops or garbles a plain-text request
        return False
    return reply.status == 200
