"""The dashboard's vendored libraries are exactly the files VENDOR.md records.

A changed byte (a hand edit, a bad copy, an upgrade without updating the
record) or a file nobody recorded fails here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import broker.http

VENDOR = Path(broker.http.__file__).parent / "static" / "vendor"
ROW = re.compile(r"^\| `([^`]+)` \| [^|]+ \| [^|]+ \| [^|]+ \| [^|]+ \| `([0-9a-f]{64})` \|$", re.M)


def _recorded() -> dict[str, str]:
    return dict(ROW.findall((VENDOR / "VENDOR.md").read_text()))


def test_every_vendored_file_matches_its_recorded_checksum() -> None:
    recorded = _recorded()
    assert len(recorded) >= 5, "VENDOR.md's table did not parse"
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_nothing_unrecorded_is_vendored() -> None:
    files = [p for p in VENDOR.rglob("*") if p.is_file() and p.name != "VENDOR.md"]
    present = {str(p.relative_to(VENDOR)) for p in files}
    assert present == set(_recorded())
