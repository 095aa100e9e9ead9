"""Bearer tokens and the tokens file: identities, their roles, and only hashes of secrets.

A token is `tyk_<id>_<secret>`: the id (12 hex digits) is public and picks the
file's entry, the secret (random, 256 bits) is checked against the entry's
salted hash with a constant-time compare. The secrets are high-entropy, so a
fast keyed hash (HMAC-SHA256 under a per-token salt) is the right tool; slow
password hashes exist for secrets people choose. The file (TOML):

    [[token]]
    id = "3f9a0c1d2e4b"
    name = "billing-api"          # the identity: owner of the tasks it creates
    roles = ["submitter"]         # submitter | worker | operator | admin
    queues = ["billing"]          # optional: only these queues
    hash = "hmac-sha256$<salt hex>$<digest hex>"

    [[certificate]]               # mutual TLS: a client certificate's identity
    subject = "ops-laptop"        # its common name or a subject alternative name
    roles = ["operator"]

`taskyard token create` writes entries; the broker reads the file at start
and again on SIGHUP.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.errors import ConfigError
from broker.security.roles import Principal, Role

PREFIX = "tyk"
SCHEME = "hmac-sha256"
_ID = re.compile(r"^[0-9a-f]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-/]{0,199}$")
_TOKEN_KEYS = {"id", "name", "roles", "queues", "types", "hash"}
_CERT_KEYS = {"subject", "name", "roles", "queues", "types"}


def new_token() -> tuple[str, str]:
    """A fresh token and its id: (`tyk_<id>_<secret>`, id)."""
    key_id = secrets.token_hex(6)
    return f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}", key_id


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not _ID.match(parts[1]) or len(parts[2]) < 16:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME}${salt.hex()}${digest}"


def _verify(secret: str, stored: str) -> bool:
    _, salt_hex, digest = stored.split("$")
    computed = hmac.new(bytes.fromhex(salt_hex), secret.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(computed, digest)


def entry_toml(
    *,
    key_id: str,
    hashed: str,
    name: str,
    roles: Sequence[str],
    queues: Sequence[str] = (),
    types: Sequence[str] = (),
) -> str:
    """One `[[token]]` table, ready to append to the tokens file."""
    lines = [
        "[[token]]",
        f'id = "{key_id}"',
        f'name = "{name}"',
        f"roles = {_toml_list(roles)}",
    ]
    if queues:
        lines.append(f"queues = {_toml_list(queues)}")
    if types:
        lines.append(f"types = {_toml_list(types)}")
    lines.append(f'hash = "{hashed}"')
    return "\n".join(lines) + "\n"


def _toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


@dataclass(frozen=True, slots=True)
class _TokenEntry:
    principal: Principal
    hashed: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """The identities of one reading of the tokens file."""

    tokens: dict[str, _TokenEntry] = field(default_factory=dict)
    certificates: dict[str, Principal] = field(default_factory=dict)

    def by_token(self, token: str) -> Principal | None:
        parts = split(token)
        if parts is None:
            return None
        entry = self.tokens.get(parts[0])
        if entry is None or not _verify(parts[1], entry.hashed):
            return None
        return entry.principal

    def by_certificate(self, subjects: Sequence[str]) -> Principal | None:
        """The first entry naming the common name or a subject alternative name."""
        for subject in subjects:
            principal = self.certificates.get(subject)
            if principal is not None:
                return principal
        return None

    def still_valid(self, principal: Principal) -> bool:
        """Whether a caller authenticated earlier is unchanged in this reading."""
        kind, _, key = principal.credential.partition(":")
        if kind == "token":
            entry = self.tokens.get(key)
            return entry is not None and entry.principal == principal
        if kind == "certificate":
            return self.certificates.get(key) == principal
        return True

    @property
    def size(self) -> int:
        return len(self.tokens) + len(self.certificates)


def exposed_mode(path: str | Path) -> int | None:
    """The file's permission bits if group or others may read or write it, else None."""
    try:
        mode = Path(path).stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o066 else None


def load(path: str | Path) -> Credentials:
    """Read and check the whole file; any mistake is a ConfigError naming entry and key."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    return parse(text, str(path))


def parse(text: str, where: str) -> Credentials:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - {"token", "certificate"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown tables {sorted(unknown)}; use [[token]] and [[certificate]]"
        )
    tokens: dict[str, _TokenEntry] = {}
    for index, raw in enumerate(_tables(data, "token", where)):
        at = f"{where}: [[token]] #{index + 1}"
        key_id = _string(raw, "id", at)
        if not _ID.match(key_id):
            raise ConfigError(f"{at}: id {key_id!r} must be 12 lowercase hex digits")
        if key_id in tokens:
            raise ConfigError(f"{at}: id {key_id} appears twice")
        hashed = _string(raw, "hash", at)
        if not re.fullmatch(rf"{SCHEME}\$[0-9a-f]{{32}}\$[0-9a-f]{{64}}", hashed):
            raise ConfigError(
                f"{at}: hash must be {SCHEME}$<salt>$<digest> (taskyard token create)"
            )
        principal = _principal(raw, at, _TOKEN_KEYS, name=_string(raw, "name", at))
        tokens[key_id] = _TokenEntry(replace(principal, credential=f"token:{key_id}"), hashed)
    certificates: dict[str, Principal] = {}
    for index, raw in enumerate(_tables(data, "certificate", where)):
        at = f"{where}: [[certificate]] #{index + 1}"
        subject = _string(raw, "subject", at)
        if subject in certificates:
            raise ConfigError(f"{at}: subject {subject!r} appears twice")
        name = raw.get("name", subject)
        principal = _principal(raw, at, _CERT_KEYS, name=name)
        certificates[subject] = replace(principal, credential=f"certificate:{subject}")
    return Credentials(tokens, certificates)


def _tables(data: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where}: {key} must be an array of tables: [[{key}]]")
    return tables


def _string(raw: dict[str, Any], key: str, at: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{at}: {key} is required and must be a string")
    return value


def _strings(raw: dict[str, Any], key: str, at: str) -> frozenset[str] | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{at}: {key} must be a non-empty list of strings")
    return frozenset(value)


def _principal(raw: dict[str, Any], at: str, keys: set[str], *, name: object) -> Principal:
    unknown = set(raw) - keys
    if unknown:
        raise ConfigError(f"{at}: unknown keys {sorted(unknown)}; allowed: {sorted(keys)}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{at}: name {name!r} must be 1 to 200 letters, digits and _ . : @ - / "
            "(it is recorded as the owner of the tasks it creates)"
        )
    role_names = _strings(raw, "roles", at)
    if role_names is None:
        raise ConfigError(f'{at}: roles is required, e.g. roles = ["submitter"]')
    bad = sorted(role_names - {r.value for r in Role})
    if bad:
        raise ConfigError(f"{at}: unknown roles {bad}; use {', '.join(r.value for r in Role)}")
    roles = frozenset(Role(r) for r in role_names)
    queues, types = _strings(raw, "queues", at), _strings(raw, "types", at)
    if Role.ADMIN in roles and (queues is not None or types is not None):
        raise ConfigError(f"{at}: an admin may do everything; drop queues and types")
    if types is not None and Role.WORKER not in roles:
        raise ConfigError(f"{at}: types limits the Lease stream; it needs the worker role")
    return Principal(name=name, roles=roles, queues=queues, types=types)
