"""Ctrl-C reaches a script blocked in a sync call whichever thread the kernel gave it to.

A process-wide SIGINT goes to any thread that does not block it. When it lands on the
portal's thread (or one of grpc's), CPython only marks it pending for the main thread; a
main thread that waits on a lock with no timeout never runs the handler, and the script
would ignore Ctrl-C until the call ended. Here the signal is aimed at the portal's thread on
purpose (`pthread_kill`), so the case happens every time rather than by chance.
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
    portal.call(forever())
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
