"""Ctrl-C ends a sync call cleanly, whichever thread the kernel gives it to and wherever
the main thread is when it comes.

A process-wide SIGINT goes to any thread that does not block it. When it lands on the
portal's thread (or one of grpc's), CPython only marks it pending for the main thread; a
main thread that waits on a lock with no timeout never runs the handler, and the script
would ignore Ctrl-C until the call ended. Here the signal is aimed at the portal's thread on
purpose (`pthread_kill`), so the case happens every time rather than by chance.

Where the main thread is matters too: the second test interrupts a call at every place
CPython could run the handler, by tracing, rather than at one place by luck.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, python_env

_SCRIPT = """
import asyncio, signal, threading
from worker_sdk._portal import Portal

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even when the
# suite runs in the background, where SIGINT is passed on ignored
portal = Portal("test portal")

async def forever():
    await asyncio.sleep(0.2)  # the main thread is in its wait by now (were it not, it
    # would see the signal at once and the test would pass for the wrong reason)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this, the portal's thread
    await asyncio.sleep(3600)

try:
    portal.call(forever)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_delivered_to_the_portals_thread_ends_the_main_threads_call() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        timeout=30,  # without the fix the call waits its hour: this fails it
        env=python_env(),
        cwd=ROOT,
        check=False,
    )
    assert done.stdout == b"interrupted\n", done.stderr.decode()


_EVERY_INSTRUCTION = """
import asyncio, dis, faulthandler, os, sys
from worker_sdk import _portal

faulthandler.dump_traceback_later(60, exit=True)  # a hang fails with every thread's stack

PORTAL, ASYNCIO = _portal.__file__, os.path.dirname(asyncio.__file__)
CALLS = {dis.opmap["CALL"], dis.opmap["CALL_FUNCTION_EX"]}


class InterruptAt:
    # Raises KeyboardInterrupt at the `at`-th place in `Portal.call` (asyncio's frames under
    # it included) where CPython runs signal handlers: a function's first instruction and
    # the one after a call. If there are fewer, where the caller starts to wait.

    def __init__(self, at):
        self.at, self.seen, self.inside, self.past_the_end = at, 0, False, False
        self.after_call = set()

    def count(self):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt

    def __call__(self, frame, event, arg):  # a new frame
        code = frame.f_code
        if code is _portal.Portal.call.__code__:
            self.inside = True
        elif not self.inside:
            return None
        elif code.co_name == "exception" and "concurrent" in code.co_filename:
            self.past_the_end = True  # the caller waits: an interruption here is Ctrl-C's
            raise KeyboardInterrupt  # usual case, and every place before was tried
        if code.co_filename == PORTAL or code.co_filename.startswith(ASYNCIO):
            self.count()
            frame.f_trace_opcodes = True
            return self.instruction
        return None

    def instruction(self, frame, event, arg):
        if event == "opcode":
            if frame in self.after_call:
                self.after_call.discard(frame)
                self.count()
            if frame.f_code.co_code[frame.f_lasti] in CALLS:
                self.after_call.add(frame)
        return self.instruction


portal = _portal.Portal("test portal")


async def endless(ended):
    try:
        yield "first"
        await asyncio.Event().wait()  # like a watch whose task never finishes
    finally:
        ended.set()


at = 0
while True:
    at += 1
    ended = portal.make(asyncio.Event)
    items = portal.iterate(endless(ended))
    assert next(items) == "first"
    interrupt = InterruptAt(at)
    sys.settrace(interrupt)
    try:
        next(items)  # the step the interruption cancels, then the closing that waits for it
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    # nothing runs on with nobody waiting for it: the iterator was closed and its generator
    # ended, and the portal still answers
    portal.call(asyncio.wait_for, ended.wait(), 10)
    if interrupt.past_the_end:
        break
portal.close()
print(at, "places interrupted", flush=True)
"""


def test_ctrl_c_at_any_instruction_of_a_call_leaves_nothing_running() -> None:
    """Interrupted after the loop took the coroutine but before the caller began to wait, a
    call used to leave the coroutine running unowned: a sync `watch` then waited forever for
    its own cancelled step, and Ctrl-C hung the script (seen once in CI)."""
    done = subprocess.run(
        [sys.executable, "-c", _EVERY_INSTRUCTION],
        capture_output=True,
        timeout=120,
        env=python_env(),
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    assert done.stdout.endswith(b"places interrupted\n")
    assert int(done.stdout.split()[0]) > 10  # the trace reached the call's places
