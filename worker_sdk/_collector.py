"""Keep Python's cyclic garbage collector off what start-up left alive.

Each collection of CPython's oldest generation walks every object that survived
there — in a broker or a worker, the hundreds of thousands that importing gRPC,
protobuf and SQLAlchemy leaves behind, which live as long as the process. Under
load that cost ~19 µs of broker CPU and ~10 µs of worker CPU per task
(gc.callbacks timings, `python -m bench --scenario throughput`, 40,000 tasks: 9
full collections of ~65 ms each in the broker), about a tenth of all they did.

`settle()` moves everything alive after start-up into the permanent generation
(`gc.freeze()`): the collector never walks it again. The same run then spent ~7
µs (broker) and ~4.5 µs (worker) per task in the collector.

The thresholds stay CPython's. Collecting the young generation after 10,000
allocations instead of 700 cut the collector to ~1 µs per task, but it counts
objects, not bytes: cycles holding task payloads lived long enough that a broker
fed 150 MB of 50 kB payloads grew by 100 MB more (tests/e2e/test_slow_consumer.py).

Called where a process starts serving: the broker once it is up, a worker's
`run_forever` (which owns its process). `Worker.run` — a worker embedded in an
application's own event loop — leaves the application's collector alone.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Freeze what start-up left alive; return how many objects that is."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
