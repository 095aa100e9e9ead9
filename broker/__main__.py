"""`python -m broker` is `taskyard`."""

from __future__ import annotations

from broker.cli import main

main()
