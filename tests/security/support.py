"""Test certificates (made here with `cryptography`), tokens files and raw gRPC calls."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

from broker.security import tokens
from taskyard.v1 import payload_pb2
from taskyard.v1 import worker_service_pb2 as ws
from worker_sdk._errors import TaskyardError as SdkError

# --- Certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CertificateAuthority:
    """A throwaway CA that issues server and client certificates into a directory."""

    def __init__(self, directory: Path, name: str = "taskyard-test-ca") -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = self._sign(_name(name), self._key.public_key(), ca=True)
        self.cert_path = directory / f"{name}.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        *,
        ca: bool = False,
        sans: Sequence[x509.GeneralName] = (),
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name(self.name))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue(
        self, common_name: str, *, dns: Sequence[str] = (), ips: Sequence[str] = ()
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = self._sign(_name(common_name), key.public_key(), sans=sans)
        cert_path = self.directory / f"{common_name}.crt"
        key_path = self.directory / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(cert_path, key_path)

    def server(self) -> Issued:
        return self.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])


# --- Tokens ---------------------------------------------------------------------------------


@dataclass
class TokensFile:
    """A tokens file written by the same code as `taskyard token create`."""

    path: Path
    tokens: dict[str, str] = field(default_factory=dict)  # identity name → token
    _entries: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        *roles: str,
        queues: Sequence[str] = (),
        types: Sequence[str] = (),
    ) -> str:
        token, key_id = tokens.new_token()
        self._entries.append(
            tokens.entry_toml(
                key_id=key_id,
                hashed=tokens.hash_secret(token.split("_", 2)[2]),
                name=name,
                roles=roles,
                queues=queues,
                types=types,
            )
        )
        self.tokens[name] = token
        self.write()
        return token

    def add_certificate(self, subject: str, *roles: str, queues: Sequence[str] = ()) -> None:
        lines = ["[[certificate]]", f'subject = "{subject}"']
        lines.append("roles = [" + ", ".join(f'"{r}"' for r in roles) + "]")
        if queues:
            lines.append("queues = [" + ", ".join(f'"{q}"' for q in queues) + "]")
        self._entries.append("\n".join(lines) + "\n")
        self.write()

    def remove(self, name: str) -> None:
        token = self.tokens.pop(name)
        key_id = token.split("_")[1]
        self._entries = [e for e in self._entries if f'id = "{key_id}"' not in e]
        self.write()

    def write(self) -> None:
        self.path.write_text("\n".join(self._entries))
        self.path.chmod(0o600)  # as `taskyard token create` makes it

    def metadata(self, name: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[name]}"),)


# --- Raw calls ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    reason: str
    retry_after: float | None = None
    first: bytes | None = None  # the first response message, if any
    # The status message, for a failing assertion to show (not compared: equality of
    # outcomes is code, reason and what was answered).
    message: str = field(default="", compare=False)


def outcome_of(error: grpc.aio.AioRpcError) -> Outcome:
    sdk = SdkError.from_rpc_error(error)
    return Outcome(sdk.code, sdk.reason, sdk.retry_after, message=error.details() or "")


async def call(
    channel: grpc.aio.Channel,
    path: str,
    request: Message | bytes,
    *,
    metadata: Sequence[tuple[str, str]] = (),
    streaming: str = "unary",
    timeout: float = 10.0,
) -> Outcome:
    """One call by method path with raw bytes: the status, and the first response if any.

    `streaming`: "unary", "server" (read the first message, then cancel) or
    "bidi" (send the request, read the first answer, then close).
    """
    data = request if isinstance(request, bytes) else request.SerializeToString()
    try:
        if streaming == "unary":
            unary: Any = channel.unary_unary(path)
            response = await unary(data, metadata=metadata, timeout=timeout)
            return Outcome(grpc.StatusCode.OK, "", first=response)
        if streaming == "server":
            server: Any = channel.unary_stream(path)
            stream = server(data, metadata=metadata, timeout=timeout)
        else:
            bidi: Any = channel.stream_stream(path)
            stream = bidi(iter([data]), metadata=metadata, timeout=timeout)
        first = await stream.read()
        stream.cancel()
        if first is grpc.aio.EOF:
            code = await stream.code()
            return Outcome(code, "" if code is grpc.StatusCode.OK else code.name)
        return Outcome(grpc.StatusCode.OK, "", first=first)
    except grpc.aio.AioRpcError as error:
        return outcome_of(error)


# --- A worker's Lease stream, by hand ------------------------------------------------------


class LeaseStream:
    """A raw Lease stream: hello, then whatever a test wants to send and read."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = ()) -> None:
        bidi: Any = channel.stream_stream("/taskyard.v1.WorkerService/Lease")
        self._call = bidi(metadata=metadata)

    async def hello(self, **fields: Any) -> ws.Welcome:
        """Send a hello; return the welcome (raises AioRpcError if the stream is refused)."""
        fields.setdefault("worker_id", "w")
        await self.send(ws.LeaseRequest(hello=ws.Hello(**fields)))
        return (await self.read_kind("welcome")).welcome

    async def send(self, message: ws.LeaseRequest) -> None:
        await self._call.write(message.SerializeToString())

    async def read(self) -> ws.LeaseResponse:
        raw = await self._call.read()
        assert raw is not grpc.aio.EOF, "the broker ended the stream"
        return ws.LeaseResponse.FromString(raw)

    async def read_kind(self, kind: str) -> ws.LeaseResponse:
        """The next message of this kind, skipping others (drain notices, cancellations)."""
        while (message := await self.read()).WhichOneof("kind") != kind:
            pass
        return message

    async def assignments(self) -> list[ws.Assignment]:
        return list((await self.read_kind("assignments")).assignments.assignments)

    async def complete(self, task_id: str, lease_id: str, result: bytes) -> ws.CompletionAck:
        completion = ws.Completion(
            task_id=task_id, lease_id=lease_id, result=payload_pb2.Payload(binary=result)
        )
        await self.send(ws.LeaseRequest(completions=ws.Completions(completions=[completion])))
        return (await self.read_kind("completion_acks")).completion_acks.acks[0]

    async def heartbeat(self, *beats: tuple[str, str]) -> list[ws.HeartbeatAck]:
        items = [ws.Heartbeat(task_id=task, lease_id=lease) for task, lease in beats]
        message = ws.Heartbeats(heartbeats=items)
        await self.send(ws.LeaseRequest(heartbeats=message))
        return list((await self.read_kind("heartbeat_acks")).heartbeat_acks.acks)

    def close(self) -> None:
        self._call.cancel()
