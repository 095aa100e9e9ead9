"""SyncClient against a real broker: Client's answers and errors, threads, closing, Ctrl-C.

The blocking calls run in `asyncio.to_thread`, as a script's would on its own thread, so the
test's event loop stays free.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.helpers import ROOT, Broker, python_env
from worker_sdk import SyncClient, TaskSpec, TaskState, TaskyardError


async def test_sync_calls_return_and_raise_what_client_does(broker: Broker) -> None:
    def script() -> None:
        with SyncClient(broker.target) as client:
            task = client.submit("mail.send", {"to": "a"}, queue="mail", priority=3)
            assert client.get(task.id).priority == 3
            assert [t.id for t in client.list(queue="mail")] == [task.id]
            assert client.cancel(task.id).state is TaskState.CANCELLED
            with pytest.raises(TaskyardError) as info:
                client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV")
            assert (info.value.code, info.value.reason) == (
                grpc.StatusCode.NOT_FOUND,
                "TASK_NOT_FOUND",
            )
            client.create_schedule("nightly", TaskSpec(type="report"), cron="0 3 * * *")
            assert [s.name for s in client.list_schedules()] == ["nightly"]
            assert len(client.preview_schedule("nightly", count=3)) == 3
            assert client.create_queue("bulk", max_concurrency=2).max_concurrency == 2

    await asyncio.to_thread(script)


async def test_sync_waits_and_watches_end_at_their_timeout(broker: Broker) -> None:
    def script() -> None:
        with SyncClient(broker.target) as client:
            task = client.submit("nobody.handles.this")
            with pytest.raises(TimeoutError):
                client.wait(task.id, timeout=0.5)
            states = []
            with pytest.raises(TimeoutError):
                # long enough for the first message (the snapshot) on a loaded machine
                for update in client.watch(task.id, timeout=3):
                    states.append(update.state)
            assert states == [TaskState.PENDING]  # the first message is the snapshot
            assert client.get(task.id).state is TaskState.PENDING  # still usable

    await asyncio.to_thread(script)


async def test_leaving_an_iterator_early_closes_it_and_the_client_goes_on(broker: Broker) -> None:
    def script() -> None:
        with SyncClient(broker.target) as client:
            client.submit_many([TaskSpec(type="t") for _ in range(5)])
            for n, _ in enumerate(client.list(page_size=2)):
                if n == 2:
                    break
            assert len(list(client.list(page_size=2))) == 5

    await asyncio.to_thread(script)


async def test_one_sync_client_serves_many_threads_at_once(broker: Broker) -> None:
    def submit_and_get(client: SyncClient, n: int) -> list[int]:
        tasks = [client.submit("t", {"n": n, "i": i}) for i in range(10)]
        return [client.get(t.id).payload["i"] for t in tasks]

    def script() -> None:
        with SyncClient(broker.target) as client, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(submit_and_get, [client] * 8, range(8)))
            assert results == [list(range(10))] * 8
            assert len(list(client.list(page_size=1000))) == 80

    await asyncio.to_thread(script)


async def test_closing_stops_the_thread_and_ends_calls_then_and_later(broker: Broker) -> None:
    def script() -> None:
        client = SyncClient(broker.target)
        task = client.submit("nobody.handles.this")
        loop_thread = client._portal._thread
        assert loop_thread.is_alive()
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.wait, task.id)  # blocks: no worker handles it
            client.close()
            with pytest.raises(RuntimeError):
                waiting.result(timeout=30)
        assert not loop_thread.is_alive()
        with pytest.raises(RuntimeError):
            client.get(task.id)
        client.close()  # closing twice is harmless

        dropped = SyncClient(broker.target)
        dropped.get(task.id)
        loop_thread = dropped._portal._thread
        del dropped  # never closed: the finalizer stops its thread
        gc.collect()
        assert not loop_thread.is_alive()

    await asyncio.to_thread(script)


_CTRL_C = """
import faulthandler, signal, sys
from worker_sdk import SyncClient

faulthandler.register(signal.SIGUSR1)  # the test asks for every thread's stack if it hangs
# As in a terminal: a suite started in the background (`make test &`, nohup) passes SIGINT
# on ignored, and a Python started so never turns Ctrl-C into KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)

with SyncClient(sys.argv[1]) as client:
    task = client.submit("nobody.handles.this")
    if sys.argv[2] == "wait":
        print("blocking", flush=True)
        client.wait(task.id)
    for update in client.watch(task.id):
        print(update.state.value, flush=True)  # the snapshot; then it blocks
"""


@pytest.mark.parametrize("call", ["wait", "watch"])
async def test_ctrl_c_during_a_blocking_call_ends_the_script_at_once(
    broker: Broker, call: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "dev", "-W", "error", "-c", _CTRL_C, broker.target, call,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=python_env(),
        cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) in (b"blocking\n", b"pending\n")
    proc.send_signal(signal.SIGINT)
    ended = asyncio.ensure_future(proc.communicate())
    done, _ = await asyncio.wait([ended], timeout=60)
    if not done:
        proc.send_signal(signal.SIGUSR1)  # where it hangs, then end it
        await asyncio.wait([ended], timeout=5)
        proc.kill()
        _, err = await ended
        raise AssertionError("the script did not end after Ctrl-C:\n" + err.decode())
    _, err = ended.result()
    # Interrupted like any blocking call: one traceback, KeyboardInterrupt, nothing after it
    # (no exception from the loop's thread, no warning about an unclosed loop or task).
    assert proc.returncode == -signal.SIGINT
    lines = err.decode().strip().splitlines()
    assert lines[-1] == "KeyboardInterrupt" and err.count(b"Traceback") == 1, err.decode()
