"""The machine's own ceiling: items per second through a grpc.aio bidirectional stream.

`python -m bench.ceiling` echoes messages through a stream between two processes, one item
per message (and 10 and 100 with `--batches 1,10,100`), as the workplace's
`tools/limits/grpc_batch.py` does: the same message shape (an id of 32 hex characters, a
type, a 7-byte payload), the same counts (30,000 items one per message, 200,000 batched),
protobuf parsing on both sides. Its messages are declared here at run time, so it needs
only grpcio and protobuf — it runs from any Taskyard virtualenv.

Benchmark figures of a shared machine are read against this number measured the same day:
a task's life costs a few such messages, so the one-item figure bounds what any gRPC
broker can do per core-pair that day, and its drift from day to day is the machine's.

`--unary RATE` also times a unary call that does nothing (one Item echoed by a grpc.aio
server in its own process), 500 calls at RATE per second and 2,000 back to back: p50 and
p99, and the CPU each side spends per call. It is the floor under any one-call-at-a-time
latency of a grpc.aio broker that day, CreateTask's included (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bench.percentile import rank
from bench.proc import cpu_seconds

_METHOD = "/limb.B/Stream"
_UNARY = "/limb.B/Ping"


def _classes() -> tuple[Any, Any]:
    """`Item {string id; string type; bytes payload; int64 ts}` and `Batch {repeated Item}`."""
    proto = descriptor_pb2.FileDescriptorProto(name="bench_ceiling.proto", package="limb")
    proto.syntax = "proto3"
    item = proto.message_type.add(name="Item")
    field = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(
        [("id", field.TYPE_STRING), ("type", field.TYPE_STRING),
         ("payload", field.TYPE_BYTES), ("ts", field.TYPE_INT64)],
        start=1,
    ):  # fmt: skip
        item.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    batch = proto.message_type.add(name="Batch")
    batch.field.add(
        name="items", number=1, type=field.TYPE_MESSAGE, type_name=".limb.Item",
        label=field.LABEL_REPEATED,
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("limb.Item")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("limb.Batch")),
    )


async def _serve(ready: Connection) -> None:
    _, batch_class = _classes()

    async def echo(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for batch in requests:
            yield batch

    handler = grpc.stream_stream_rpc_method_handler(
        echo, request_deserializer=batch_class.FromString,
        response_serializer=batch_class.SerializeToString,
    )  # fmt: skip
    item_class, _ = _classes()

    async def ping(request: Any, context: Any) -> Any:
        return request

    unary = grpc.unary_unary_rpc_method_handler(
        ping, request_deserializer=item_class.FromString,
        response_serializer=item_class.SerializeToString,
    )  # fmt: skip
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("limb.B", {"Stream": handler, "Ping": unary})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ready.send(port)
    await server.wait_for_termination()


def _server_main(ready: Connection) -> None:
    asyncio.run(_serve(ready))


async def _measure(port: int, items: int, batch_size: int) -> float:
    item_class, batch_class = _classes()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = channel.stream_stream(
            _METHOD, request_serializer=batch_class.SerializeToString,
            response_deserializer=batch_class.FromString,
        )  # fmt: skip
        batch = batch_class(
            items=[
                item_class(id=f"{i:032x}", type="noop", payload=b'{"a":1}')
                for i in range(batch_size)
            ]
        )

        async def outgoing() -> AsyncIterator[Any]:
            for _ in range(items // batch_size):
                yield batch

        start, seen = time.perf_counter(), 0
        async for reply in stream(outgoing()):
            seen += len(reply.items)
        return seen / (time.perf_counter() - start)


async def _unary(port: int, server_pid: int, rate: float) -> dict[str, float]:
    """A no-op unary call: latency at `rate` per second, and CPU per call back to back."""
    item_class, _ = _classes()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            _UNARY, request_serializer=item_class.SerializeToString,
            response_deserializer=item_class.FromString,
        )  # fmt: skip
        item = item_class(id="0" * 32, type="noop", payload=b'{"a":1}')
        for _ in range(50):  # connect, warm up
            await call(item)
        times: list[float] = []
        next_at = time.perf_counter()
        for _ in range(500):
            next_at += 1 / rate
            sent = time.perf_counter()
            await call(item)
            times.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        times.sort()
        calls = 2_000
        server_cpu, client_cpu, start = (
            cpu_seconds(server_pid),
            time.process_time(),
            time.perf_counter(),
        )
        for _ in range(calls):
            await call(item)
        return {
            "unary_p50_ms": rank(times, 0.5),
            "unary_p99_ms": rank(times, 0.99),
            "unary_back_to_back_ms": (time.perf_counter() - start) * 1000 / calls,
            "unary_server_cpu_us": (cpu_seconds(server_pid) - server_cpu) * 1e6 / calls,
            "unary_client_cpu_us": (time.process_time() - client_cpu) * 1e6 / calls,
        }


def ceiling(batches: tuple[int, ...] = (1,), unary_rate: float | None = None) -> dict[str, float]:
    """Items per second each way, by items per message: {"1": ..., "10": ..., ...}; with
    `unary_rate`, also the unary floor (`unary_*`, see the module docstring)."""
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_server_main, args=(theirs,), daemon=True)
    server.start()
    try:
        port = ours.recv()
        result = {
            str(size): asyncio.run(_measure(port, 30_000 if size == 1 else 200_000, size))
            for size in batches
        }
        if unary_rate is not None:
            assert server.pid is not None
            result |= asyncio.run(_unary(port, server.pid, unary_rate))
        return result
    finally:
        server.terminate()
        server.join()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--batches", default="1", help="Items per message, comma-separated.")
    parser.add_argument(
        "--unary", type=float, metavar="RATE", help="Also time a no-op unary call at RATE/s."
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    ns = parser.parse_args()
    result = ceiling(tuple(int(b) for b in ns.batches.split(",")), ns.unary)
    if ns.json:
        print(json.dumps(result))
        return
    for size, rate in result.items():
        if size.isdigit():
            print(f"batch={int(size):>4}: {rate:>10,.0f} items/s each way")
    if ns.unary is not None:
        print(
            f"unary no-op call at {ns.unary:g}/s: p50 {result['unary_p50_ms']:.2f} ms, "
            f"p99 {result['unary_p99_ms']:.2f} ms; back to back "
            f"{result['unary_back_to_back_ms']:.2f} ms a call, CPU per call: server "
            f"{result['unary_server_cpu_us']:.0f} µs, client {result['unary_client_cpu_us']:.0f} µs"
        )


if __name__ == "__main__":
    main()
