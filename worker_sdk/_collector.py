"""Pace Python's cyclic garbage collector for a long-running server process.

CPython collects its youngest generation after every 700 net container
allocations, and each collection of an older one walks every object that
survived there — in a broker or a worker, the hundreds of thousands that
importing gRPC, protobuf and SQLAlchemy leaves behind. Under load that cost
~19 µs of broker CPU and ~10 µs of worker CPU per task (gc.callbacks timings,
`python -m bench --scenario throughput`, 40,000 tasks: 9 full collections of
~65 ms each in the broker), about a tenth of all they did.

`settle()` moves everything alive after start-up into the permanent generation
(`gc.freeze()`: the collector never walks it again; it holds modules, classes
and configuration, which live as long as the process) and collects the young
generation after 10,000 allocations rather than 700. Reference counting still
frees all acyclic garbage at once; cycles wait a little longer, and the young
generation they wait in stays a few megabytes at most. With both, the same run
spent ~1 µs per task in the collector.

Called where a process starts serving: the broker once it is up, a worker's
`run_forever` (which owns its process). `Worker.run` — a worker embedded in an
application's own event loop — leaves the application's collector alone.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations between collections of generation 0 (CPython: 700)


def settle() -> None:
    """Freeze what start-up left alive and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
