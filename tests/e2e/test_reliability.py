"""Retries, timeouts, cancellation, idempotency and retention, with real processes."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.e2e.test_recovery import open_raw, read_kind, wait_for_state
from tests.helpers import Broker, read_record, start_worker, stubs
from worker_sdk import Client, RetryPolicy, TaskFailed, TaskSpec, TaskState, TaskyardError, Timeouts

FAST_RETRY = RetryPolicy(strategy="fixed", initial_backoff=0.2, jitter=0)


@pytest.fixture
def broker_args(tmp_path: Path) -> list[str]:
    config = tmp_path / "taskyard.toml"
    config.write_text(
        """
        [queues.fragile.retry]
        max_attempts = 2
        strategy = "fixed"
        initial_backoff = "100ms"
        jitter = 0.0
        [types.raise.retry]
        non_retryable_error_types = ["ValueError"]
        [queues.picky.retry]
        max_attempts = 3
        strategy = "fixed"
        initial_backoff = "100ms"
        retryable_error_types = ["RuntimeError"]
        [queues.shortlived.retention]
        succeeded = "1s"
        [defaults.retention]
        request_ids = "1s"
        """
    )
    return ["--config", str(config), "--sweep-interval", "0.1", "--retention-interval", "0.2"]


async def test_failures_back_off_until_dead_and_every_attempt_is_recorded(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    policy = RetryPolicy(max_attempts=3, strategy="fixed", initial_backoff=0.3, jitter=0)
    task = await client.submit("fail", retry_policy=policy)
    with pytest.raises(TaskFailed):
        await client.wait(task.id, timeout=30)

    attempts = await client.attempts(task.id)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["failed", "failed", "failed"]
    assert [a.error.message for a in attempts if a.error] == [
        f"failure on attempt {n}" for n in (1, 2, 3)
    ]
    for earlier, later in itertools.pairwise(attempts):
        assert earlier.end_time is not None and later.start_time is not None
        assert later.start_time - earlier.end_time >= timedelta(seconds=0.29)
    final = await client.get(task.id)
    assert final.state is TaskState.DEAD and final.retry_policy is not None
    assert final.retry_policy.max_attempts == 3 and final.retry_policy.strategy == "fixed"
    await worker.stop()


async def test_listed_error_types_are_not_retried(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    policy = RetryPolicy(max_attempts=5, non_retryable_error_types=("KeyError",), jitter=0)
    task = await client.submit("raise", {"error": "KeyError"}, retry_policy=policy)
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=20)
    assert info.value.task.state is TaskState.FAILED and info.value.task.attempt == 1
    await worker.stop()


async def test_an_allowlist_from_the_config_file_retries_only_the_types_it_names(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", queues="picky")
    # The worker raises RuntimeError for any name it does not know.
    listed = await client.submit("raise", {"error": "Listed"}, queue="picky")
    other = await client.submit("raise", {"error": "KeyError"}, queue="picky")
    for task_id, state, attempts in ((listed.id, "dead", 3), (other.id, "failed", 1)):
        with pytest.raises(TaskFailed) as info:
            await client.wait(task_id, timeout=30)
        assert (info.value.task.state.value, info.value.task.attempt) == (state, attempts)
    done = await client.get(other.id)
    assert done.retry_policy is not None
    assert done.retry_policy.retryable_error_types == ("RuntimeError",)
    await worker.stop()


async def test_a_negative_retry_delay_is_refused_and_the_lease_kept(
    broker: Broker, client: Client
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=3600, max_backoff=7200)
    task = await client.submit("record", retry_policy=policy)
    async with stubs(broker) as stub:
        call, _ = await open_raw(stub, "raw", credits=1)
        (assigned,) = (await read_kind(call, "assignments")).assignments.assignments
        failure = pb.Failure(type="RateLimited", message="slow down")
        failure.retry_delay.FromMicroseconds(-1)
        bad = pb.Completion(task_id=task.id, lease_id=assigned.lease_id, failure=failure)
        await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[bad])))
        (ack,) = (await read_kind(call, "completion_acks")).completion_acks.acks
        assert (ack.error.code, ack.error.reason) == (3, "INVALID_RETRY_DELAY")
        assert (await client.get(task.id)).state is TaskState.RUNNING
        # The same failure asking for 2 s: retried after 2 s, not after the policy's hour.
        failure.retry_delay.FromSeconds(2)
        good = pb.Completion(task_id=task.id, lease_id=assigned.lease_id, failure=failure)
        before = time.time()
        await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[good])))
        (ack,) = (await read_kind(call, "completion_acks")).completion_acks.acks
        after = time.time()
        assert not ack.HasField("error")
        call.cancel()
    retrying = await client.get(task.id)
    assert retrying.state is TaskState.RETRYING and retrying.run_time is not None
    due = retrying.run_time.timestamp()
    assert before + 2 <= due <= after + 2


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(retryable_error_types=("E",), non_retryable_error_types=("E",)),
        RetryPolicy(retryable_error_types=("not a name",)),
        RetryPolicy(initial_backoff=-1),
        RetryPolicy(backoff_coefficient=0.5),
        RetryPolicy(jitter=2.0),
        RetryPolicy(max_attempts=-1),
        RetryPolicy(initial_backoff=10, max_backoff=1),
    ],
)
async def test_out_of_range_retry_values_are_refused_and_nothing_is_stored(
    client: Client, policy: RetryPolicy
) -> None:
    with pytest.raises(TaskyardError) as info:
        await client.submit("echo", retry_policy=policy)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.reason == "INVALID_RETRY_POLICY"
    assert [t async for t in client.list()] == []


async def test_queue_and_type_defaults_come_from_the_config_file(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", queues="default,fragile")
    # [queues.fragile.retry] max_attempts = 2
    fragile = await client.submit("fail", queue="fragile")
    assert fragile.retry_policy is not None and fragile.retry_policy.max_attempts == 2
    with pytest.raises(TaskFailed) as info:
        await client.wait(fragile.id, timeout=20)
    assert info.value.task.state is TaskState.DEAD and info.value.task.attempt == 2
    # [types.raise.retry] non_retryable_error_types = ["ValueError"]
    typed = await client.submit("raise", {"error": "ValueError"}, max_attempts=4)
    with pytest.raises(TaskFailed) as info:
        await client.wait(typed.id, timeout=20)
    assert info.value.task.state is TaskState.FAILED and info.value.task.attempt == 1
    await worker.stop()


async def test_an_attempt_past_its_execution_timeout_is_stopped_and_retried(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit(
        "slow",
        {"seconds": 30},
        timeouts=Timeouts(execution=0.5),
        retry_policy=RetryPolicy(max_attempts=2, strategy="fixed", initial_backoff=0.1, jitter=0),
    )
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=30)
    dead = info.value.task
    assert dead.state is TaskState.DEAD and dead.error is not None
    assert dead.error.type == "ExecutionTimeout"
    assert [a.outcome for a in await client.attempts(task.id)] == ["timed_out", "timed_out"]
    # The worker was told to stop each attempt.
    cancelled = [line[2] for line in read_record(tmp_path) if line[0] == "cancelled"]
    assert cancelled == ["1", "2"]
    await worker.stop()


async def test_a_silent_worker_loses_its_lease_within_the_heartbeat_timeout(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    async with stubs(broker) as s:
        silent, _ = await open_raw(s, "silent", credits=1)
        task = await client.submit(
            "record", timeouts=Timeouts(heartbeat=1.0), retry_policy=RetryPolicy(max_attempts=1)
        )
        await read_kind(silent, "assignments")
        started = time.monotonic()
        worker = await start_worker(broker, tmp_path, name="w1")
        await client.wait(task.id, timeout=20)
        detected = time.monotonic() - started
        silent.cancel()
    final = await client.get(task.id)
    # A lost lease is not a handler failure: max_attempts=1 still got its run.
    assert final.state is TaskState.SUCCEEDED and final.attempt == 2
    assert final.lease_losses == 1 and final.worker_id == "w1"
    first = (await client.attempts(task.id))[0]
    assert first.outcome == "lease_lost" and first.worker_id == "silent"
    assert detected < 1.0 + 2.0, f"took {detected:.1f}s to notice a silent worker"
    await worker.stop()


async def test_the_soft_timeout_warns_the_handler_before_the_hard_one(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("soft", timeouts=Timeouts(execution=5, soft=0.3))
    result = await client.wait(task.id, timeout=20)
    assert result["wrapped_up"] is True
    assert (await client.get(task.id)).attempt == 1
    await worker.stop()


async def test_a_task_not_started_before_its_expiry_never_runs(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    task = await client.submit("record", timeouts=Timeouts(expiry=0.3))
    assert task.expire_time is not None
    await wait_for_state(client, task.id, TaskState.EXPIRED)
    worker = await start_worker(broker, tmp_path, name="w1")
    marker = await client.submit("record")
    await client.wait(marker.id, timeout=20)
    assert [line[1] for line in read_record(tmp_path)] == [marker.id]
    await worker.stop()


@pytest.mark.parametrize("kind", ["slow", "slow.sync"])
async def test_cancelling_a_running_task_stops_its_handler(
    broker: Broker, client: Client, tmp_path: Path, kind: str
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit(kind, {"seconds": 30})
    await wait_for_state(client, task.id, TaskState.RUNNING)
    asked = time.time()
    requested = await client.cancel(task.id, reason="user pressed stop")
    assert requested.state in (TaskState.RUNNING, TaskState.CANCELLED)
    await wait_for_state(client, task.id, TaskState.CANCELLED)

    stopped = [float(line[4]) for line in read_record(tmp_path) if line[0] == "cancelled"]
    assert len(stopped) == 1 and stopped[0] - asked < 1.0
    again = await client.cancel(task.id)
    assert again.state is TaskState.CANCELLED
    marker = await client.submit("record")
    await client.wait(marker.id, timeout=20)
    starts = [line for line in read_record(tmp_path) if line[1] == task.id and line[0] == "start"]
    assert len(starts) == 1, "a cancelled task must never run again"
    await worker.stop()


async def test_a_missed_cancel_push_is_repeated_in_heartbeat_acks(
    broker: Broker, client: Client
) -> None:
    async with stubs(broker) as s:
        call, _ = await open_raw(s, "deaf", credits=1)
        task = await client.submit("record")
        lease = (await read_kind(call, "assignments")).assignments.assignments[0]
        await client.cancel(task.id)
        # The worker ignores the Cancellations push, but its next heartbeat learns.
        beat = pb.Heartbeat(task_id=task.id, lease_id=lease.lease_id)
        await call.write(pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=[beat])))
        ack = (await read_kind(call, "heartbeat_acks")).heartbeat_acks.acks[0]
        assert ack.cancel_requested and not ack.HasField("error")
        done = pb.Completion(task_id=task.id, lease_id=lease.lease_id, cancelled=pb.Cancelled())
        await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
        await read_kind(call, "completion_acks")
        call.cancel()
    assert (await client.get(task.id)).state is TaskState.CANCELLED


async def test_retry_runs_a_dead_task_again_with_a_fresh_budget(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("fail", max_attempts=1)
    with pytest.raises(TaskFailed):
        await client.wait(task.id, timeout=20)
    retried = await client.retry(task.id)
    # Waiting again — or already leased: the idle worker may take it in the same commit.
    assert retried.state in (TaskState.PENDING, TaskState.RUNNING)
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=20)
    assert info.value.task.attempt == 2 and info.value.task.state is TaskState.DEAD
    assert [a.attempt for a in await client.attempts(task.id)] == [1, 2]

    ok = await client.submit("echo", 1)
    await client.wait(ok.id, timeout=20)
    with pytest.raises(TaskyardError) as error:
        await client.retry(ok.id)
    assert (error.value.code, error.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TASK_NOT_RETRYABLE",
    )
    await worker.stop()


async def test_retry_all_requeues_the_dead_tasks_of_one_queue(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", queues="a,b")
    doomed = [await client.submit("fail", queue=q, max_attempts=1) for q in ("a", "a", "a", "b")]
    for t in doomed:
        with pytest.raises(TaskFailed):
            await client.wait(t.id, timeout=20)
    await worker.stop()
    assert await client.retry_all("a") == 3
    states = {t.id: (await client.get(t.id)).state for t in doomed}
    assert list(states.values()) == [TaskState.PENDING] * 3 + [TaskState.DEAD]


async def test_purge_deletes_only_finished_tasks(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    done = [await client.submit("echo", i) for i in range(3)]
    for t in done:
        await client.wait(t.id, timeout=20)
    await worker.stop()
    waiting = await client.submit("echo", "later")
    assert await client.purge() == 3
    assert [t.id async for t in client.list()] == [waiting.id]
    with pytest.raises(TaskyardError) as info:
        await client.purge(states=["pending"])
    assert info.value.reason == "INVALID_STATE"


async def test_batches_with_request_ids_dedupe_within_and_across_calls(client: Client) -> None:
    first = await client.submit_many(
        [TaskSpec("echo", 1, request_id="k1"), TaskSpec("echo", 2, request_id="k1")]
    )
    assert first[0].id == first[1].id
    again = await client.submit_many([TaskSpec("echo", 3, request_id="k1"), TaskSpec("echo", 4)])
    assert again[0].id == first[0].id and again[0].payload == 1
    assert len([t async for t in client.list()]) == 2


async def test_retention_deletes_finished_tasks_and_forgets_old_request_ids(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", queues="shortlived")
    # [queues.shortlived.retention] succeeded = "1s"; request_ids = "1s"
    task = await client.submit("echo", 1, queue="shortlived", request_id="once")
    await client.wait(task.id, timeout=20)
    keeper = await client.submit("echo", 2, request_id="kept-key")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # retention runs on its own timer: poll it
        try:
            await client.get(task.id)
        except TaskyardError as error:
            assert error.reason == "TASK_NOT_FOUND"
            break
        await _pause()
    else:
        raise AssertionError("the finished task was not purged")
    assert (await client.get(keeper.id)).state is TaskState.PENDING
    while time.monotonic() < deadline:
        if (await client.submit("echo", 3, request_id="kept-key")).id != keeper.id:
            break
        await _pause()
    else:
        raise AssertionError("the old request id was never forgotten")
    await worker.stop()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.2)
