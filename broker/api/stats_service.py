"""StatsService: live queue figures and ranged task statistics, from counters and rollups."""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2

from broker.api import convert
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.core import stats, validation
from broker.core.task_state import TaskState
from broker.errors import InvalidArgument
from broker.store import stats as store
from taskyard.v1 import stats_service_pb2 as ss
from taskyard.v1 import stats_service_pb2_grpc

Context = Any
HOUR_US = 60 * stats.MINUTE_US
MAX_RANGE_US = 31 * 24 * HOUR_US


def _duration(us: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMicroseconds(round(us))
    return out


class StatsService(stats_service_pb2_grpc.StatsServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _unwritten(self) -> store.Unwritten:
        return self._rt.committer.ledger.unwritten()

    @maps_errors
    async def GetQueueStats(
        self, request: ss.GetQueueStatsRequest, context: Context
    ) -> ss.GetQueueStatsResponse:
        now = self._rt.clock.now_us()
        if request.queue:
            validation.name(
                "queue", request.queue, self._rt.settings.limits, reason="INVALID_QUEUE"
            )
            names = [request.queue]
        else:
            names = [q.name for q in self._rt.queues.all()]
        async with self._rt.db.reader.connect() as conn:
            live = await store.live(conn, names, now=now, unwritten=self._unwritten())
        response = ss.GetQueueStatsResponse()
        for item in live:
            out = response.queues.add(
                queue=item.name,
                running=item.counts.get(TaskState.RUNNING, 0),
                finished_last_minute=stats.recent(item.per_minute, now, stats.MINUTE_US),
                finished_last_hour=stats.recent(item.per_minute, now, HOUR_US),
                paused=self._rt.queues.paused(item.name),
            )
            for state in sorted(item.counts):
                out.counts.add(state=int(state), count=item.counts[state])
            if item.oldest_pending_at is not None:
                out.oldest_pending_age.CopyFrom(_duration(max(now - item.oldest_pending_at, 0)))
        return response

    @maps_errors
    async def GetTaskStats(
        self, request: ss.GetTaskStatsRequest, context: Context
    ) -> ss.GetTaskStatsResponse:
        now = self._rt.clock.now_us()
        limits = self._rt.settings.limits
        end = convert.micros("end_time", request.end_time) if request.HasField("end_time") else now
        start = (
            convert.micros("start_time", request.start_time)
            if request.HasField("start_time")
            else end - 24 * HOUR_US
        )
        if not 0 < end - start <= MAX_RANGE_US:
            raise InvalidArgument(
                "the range must be non-empty and at most 31 days; check start_time and end_time",
                reason="INVALID_RANGE",
            )
        if request.by_minute and end - start > 24 * HOUR_US:
            raise InvalidArgument(
                "by_minute is allowed for ranges of at most 24 hours; shorten the range",
                reason="INVALID_RANGE",
            )
        async with self._rt.db.reader.connect() as conn:
            groups, minutes = await store.ranged(
                conn,
                start=start,
                end=end,
                queue=validation.name("queue", request.queue, limits, reason="INVALID_QUEUE")
                if request.queue
                else None,
                type_=validation.name("type", request.type, limits, reason="INVALID_TYPE")
                if request.type
                else None,
                unwritten=self._unwritten(),
            )
        response = ss.GetTaskStatsResponse(
            groups=[_task_stats(g, start, end) for g in groups],
            total=_task_stats(stats.merge(groups), start, end),
        )
        if request.by_minute:
            response.total.minutes.extend(
                _minute(bucket, minutes.get(bucket)) for bucket in stats.minute_starts(start, end)
            )
        return response


def _task_stats(g: stats.Group, start: int, end: int) -> ss.TaskStats:
    c = g.counters
    out = ss.TaskStats(
        queue=g.queue,
        type=g.type,
        submitted=c["submitted"],
        started=c["started"],
        succeeded=c["succeeded"],
        failed=c["failed"],
        cancelled=c["cancelled"],
        expired=c["expired"],
        retried=c["retried"],
        lease_losses=c["lost"],
        success_rate=g.success_rate,
        finished_per_minute=stats.series(g.per_minute, start, end, stats.MINUTE_US),
        finished_per_hour=stats.series(g.per_minute, start, end, HOUR_US),
    )
    _set_distribution(out.run_time, stats.distribution(c["run_sum_us"], g.run))
    _set_distribution(out.wait_time, stats.distribution(c["wait_sum_us"], g.wait))
    return out


def _minute(bucket: int, g: stats.Group | None) -> ss.MinuteStats:
    out = ss.MinuteStats()
    convert.set_timestamp(out.start_time, bucket)
    if g is None:
        return out
    c = g.counters
    out.submitted, out.started = c["submitted"], c["started"]
    out.succeeded, out.failed = c["succeeded"], c["failed"]
    out.finished = sum(c[name] for name in stats.FINISHED)
    _set_distribution(out.run_time, stats.distribution(c["run_sum_us"], g.run))
    _set_distribution(out.wait_time, stats.distribution(c["wait_sum_us"], g.wait))
    return out


def _set_distribution(out: ss.Distribution, d: stats.Distribution) -> None:
    out.count = d.count
    out.mean.CopyFrom(_duration(d.mean_us))
    out.p50.CopyFrom(_duration(d.p50_us))
    out.p95.CopyFrom(_duration(d.p95_us))
    out.p99.CopyFrom(_duration(d.p99_us))
