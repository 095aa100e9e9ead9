"""Find the Worker a `module:attribute` path names, as `taskyard worker` needs."""

from __future__ import annotations

import importlib
import os
import sys

from worker_sdk._worker import Worker


def load_worker(path: str) -> Worker:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ImportError(f"{path!r} is not MODULE:ATTRIBUTE, e.g. myapp.tasks:worker")
    # Like `python -m`, let modules in the current directory be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    worker = getattr(module, attribute)
    if not isinstance(worker, Worker):
        raise TypeError(f"{path} is a {type(worker).__name__}, not a worker_sdk.Worker")
    return worker
