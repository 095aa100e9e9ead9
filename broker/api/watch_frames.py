"""WatchTask's messages, built once per version of a task and shared by all its watchers.

A FULL snapshot carries the payload (up to --max-payload-bytes) and, at the
end, the result. Built per watcher, 500 watchers of one 1 MiB task held 500
copies of it and read it again on every poll (the broker reached 2.7 GB).
Here watchers poll without blobs; the blobs are read once per version of the
task, serialized once, and every watcher of that version yields the same
bytes (the interceptor passes bytes through as a serialized response).

Progress is the one field that changes on its own (heartbeats, in memory and
in the database), so a version's Task is kept serialized without it, and a
watcher's progress is appended to it as one more field (fields may come in
any order on the wire) inside a fresh WatchTaskResponse envelope. Every
field appears once, so every protobuf runtime reads the same message
(protobufjs, unlike the C++ and Go runtimes, replaces rather than merges a
sub-message that appears twice).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace

from broker.api import convert
from broker.core.models import Progress, TaskRecord
from broker.core.task_state import TaskState
from taskyard.v1 import task_pb2, task_service_pb2

# Reads a task's blobs: (task id, payload?, result?) -> (payload, result).
ReadBlobs = Callable[[str, bool, bool], Awaitable[tuple[bytes | None, bytes | None]]]
ToProto = Callable[[TaskRecord, bool], task_pb2.Task]


class Frame:
    """A serialized WatchTaskResponse: gRPC sends `wire` as it is (the interceptor's
    serializer), the HTTP gateway decodes it for JSON."""

    __slots__ = ("wire",)

    def __init__(self, wire: bytes) -> None:
        self.wire = wire

    def message(self) -> task_service_pb2.WatchTaskResponse:
        return task_service_pb2.WatchTaskResponse.FromString(self.wire)


class Snapshot:
    """One version of a task, serialized without its progress."""

    def __init__(self, task: bytes) -> None:
        self._task = task  # a serialized Task with no progress field
        self.base = _envelope(task)
        self._last: tuple[Progress | None, Frame] = (None, self.base)

    def frame(self, progress: Progress | None) -> Frame:
        """The serialized WatchTaskResponse of this version with `progress`."""
        if progress is None:
            return self.base
        last_progress, last = self._last
        if progress == last_progress:
            return last
        only_progress = task_pb2.Task()
        convert.set_progress(only_progress.progress, progress)
        framed = _envelope(self._task + only_progress.SerializeToString())
        self._last = (progress, framed)
        return framed


class Frames:
    """The snapshots watchers hold, each built once; gone when no watcher holds it."""

    def __init__(self, *, read_blobs: ReadBlobs, to_proto: ToProto) -> None:
        self._read_blobs = read_blobs
        self._to_proto = to_proto
        self._shared: weakref.WeakValueDictionary[tuple[bytes, bool], Snapshot] = (
            weakref.WeakValueDictionary()
        )
        self._building: dict[tuple[bytes, bool], asyncio.Future[Snapshot]] = {}

    @property
    def held(self) -> int:
        """Snapshots alive (held by at least one watcher)."""
        return len(self._shared)

    async def snapshot(self, record: TaskRecord, *, full: bool) -> Snapshot:
        """The shared snapshot of `record` (read without blobs) in the view asked for."""
        basic = self._to_proto(replace(record, progress=None), False)
        blobs = full or record.state.is_terminal  # the last message carries the result
        if not blobs:
            return Snapshot(basic.SerializeToString())
        key = (basic.SerializeToString(deterministic=True), full)
        shared = self._shared.get(key)
        if shared is not None:
            return shared
        building = self._building.get(key)
        if building is not None:
            return await asyncio.shield(building)
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            snapshot = Snapshot(await self._with_blobs(record, full))
            self._shared[key] = snapshot
            future.set_result(snapshot)
            return snapshot
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._building[key]

    async def _with_blobs(self, record: TaskRecord, full: bool) -> bytes:
        # Only a SUCCEEDED task has a result, and it never changes after; the
        # payload never changes. So the blobs fit the version read without them.
        succeeded = record.state is TaskState.SUCCEEDED
        payload, result = await self._read_blobs(record.id, full, succeeded)
        with_blobs = replace(record, progress=None, payload=payload, result=result)
        return self._to_proto(with_blobs, True).SerializeToString()


_TASK_FIELD = bytes([(task_service_pb2.WatchTaskResponse.TASK_FIELD_NUMBER << 3) | 2])


def _envelope(task: bytes) -> Frame:
    """WatchTaskResponse{task} on the wire: the field's tag, its length (varint), the Task."""
    length = bytearray()
    n = len(task)
    while n >= 0x80:
        length.append((n & 0x7F) | 0x80)
        n >>= 7
    length.append(n)
    return Frame(b"".join((_TASK_FIELD, length, task)))
